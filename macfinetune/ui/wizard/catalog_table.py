"""The recipe catalog judged on the chosen model and this Mac, as a table model."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, Qt

from macfinetune.core.wizard import CatalogRow

COLUMNS = ("Recipe", "Method", "On this Mac", "Estimate", "The seed's figures")
_CELLS = (
    lambda r: r.name,
    lambda r: r.method,
    lambda r: r.status,
    lambda r: f"{r.total_gb:.1f} GB",
    lambda r: r.seed or "—",
)


class CatalogTableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[CatalogRow] = []

    def set_rows(self, rows: list[CatalogRow]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _CELLS[index.column()](row)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.description}\n{row.seed}"
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None
