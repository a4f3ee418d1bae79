"""The models on this Mac as a table model (name, parameters, quantization, architecture, size, supported)."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, Qt

from macfinetune.core.models_catalog import ModelEntry

COLUMNS = ("Name", "Parameters", "Quantization", "Architecture", "Size", "Fine-tunable", "Source")


def _params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _supported(e: ModelEntry) -> str:
    if e.problems:
        return "no (see tooltip)"
    return "yes" if e.supported else "not checked" if e.supported is None else "no"


_CELLS = (
    lambda e: e.name,
    lambda e: _params(e.parameters),
    lambda e: e.quantization or "full precision",
    lambda e: e.architecture or e.model_type or "?",
    lambda e: _size(e.size_bytes),
    _supported,
    lambda e: e.source,
)


class ModelTableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: list[ModelEntry] = []

    def set_entries(self, entries: list[ModelEntry]) -> None:
        self.beginResetModel()
        self.entries = list(entries)
        self.endResetModel()

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.entries)

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        entry = self.entries[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _CELLS[index.column()](entry)
        if role == Qt.ItemDataRole.ToolTipRole:
            return "\n".join([str(entry.path), *(p.message for p in entry.problems)])
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None
