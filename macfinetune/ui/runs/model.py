"""The Runs table model: one ``RunRow`` per line; sort keys are the raw values, text is formatted."""

from __future__ import annotations

import time

from PySide6.QtCore import QAbstractTableModel, Qt

from macfinetune.core.runs_table import RunRow

COLUMNS = ("Name", "Model", "Method", "Status", "Best val", "Iterations", "Started", "Duration", "Size")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
PATH_ROLE = Qt.ItemDataRole.UserRole + 2


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _cells(row: RunRow) -> tuple[tuple[str, object], ...]:
    """(text, sort key) per column."""
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.started)) if row.started else ""
    best = f"{row.best_val_loss:.3f}" if row.best_val_loss is not None else "–"
    return (
        (row.name, row.name.lower()), (row.model, row.model.lower()), (row.method, row.method),
        (row.status, row.status), (best, row.best_val_loss if row.best_val_loss is not None else float("inf")),
        (f"{row.iteration}/{row.total_iterations}", row.iteration), (started, row.started),
        (_duration(row.duration_s), row.duration_s), (_size(row.size_bytes), row.size_bytes),
    )


class RunsTableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[RunRow] = []
        self._cells: list[tuple] = []

    def set_rows(self, rows: list[RunRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self._cells = [_cells(r) for r in self._rows]
        self.endResetModel()

    def row_at(self, row: int) -> RunRow:
        return self._rows[row]

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        text, key = self._cells[index.row()][index.column()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return text
        if role == SORT_ROLE:
            return key
        if role == PATH_ROLE:
            return str(self._rows[index.row()].path)
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() >= 4:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None
