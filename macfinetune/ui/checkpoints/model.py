"""The Checkpoints table model: one ``CheckpointRow`` per line, numbers formatted, the best marked."""

from __future__ import annotations

import time

from PySide6.QtCore import QAbstractTableModel, Qt
from PySide6.QtGui import QFont

from macfinetune.core.checkpoints import CheckpointRow
from macfinetune.ui.runs.model import _size

COLUMNS = ("Iteration", "Train loss", "Val loss", "Size", "Saved")
BEST_MARK = "★ best"
ITERATION_ROLE = Qt.ItemDataRole.UserRole + 1
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _saved(row: CheckpointRow) -> str:
    return time.strftime("%b %d, %H:%M", time.localtime(row.saved_at)) if row.saved_at else "–"


def cells(row: CheckpointRow) -> tuple[str, ...]:
    """The texts of one table line."""
    size = _size(row.size_bytes) if row.on_disk else "deleted"
    iteration = f"{row.iteration:,}  {BEST_MARK}" if row.is_best else f"{row.iteration:,}"
    return (iteration, _loss(row.train_loss), _loss(row.val_loss), size, _saved(row))


class CheckpointTableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[CheckpointRow] = []
        self._cells: list[tuple[str, ...]] = []

    def set_rows(self, rows) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self._cells = [cells(r) for r in self._rows]
        self.endResetModel()

    def row_at(self, row: int) -> CheckpointRow:
        return self._rows[row]

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self._cells[index.row()][index.column()]
        if role == ITERATION_ROLE:
            return row.iteration
        if role == Qt.ItemDataRole.TextAlignmentRole and 0 < index.column() < 4:
            return _RIGHT
        if role == Qt.ItemDataRole.FontRole and row.is_best:
            font = QFont()
            font.setBold(True)
            return font
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None
