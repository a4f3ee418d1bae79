"""'Same prompt on all checkpoints': one row per checkpoint of the chosen run, its answer streaming in."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ("Checkpoint", "Answer", "Speed")


class CheckpointAnswers(QTableWidget):
    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setObjectName("checkpointAnswers")
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().hide()
        self.setWordWrap(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self._rows: dict[str, int] = {}

    def start(self, rows: list[tuple[str, str]]) -> None:
        """(pane, label) per checkpoint, in order; their answers come in later."""
        self.setRowCount(0)
        self._rows = {}
        for pane, label in rows:
            row = self.rowCount()
            self.insertRow(row)
            self._rows[pane] = row
            for column, text in enumerate((label, "", "waiting")):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
                self.setItem(row, column, item)

    def has(self, pane: str) -> bool:
        return pane in self._rows

    def append(self, pane: str, text: str) -> None:
        item = self.item(self._rows[pane], 1)
        item.setText(item.text() + text)

    def set_state(self, pane: str, text: str) -> None:
        self.item(self._rows[pane], 2).setText(text)
        self.resizeRowToContents(self._rows[pane])

    def answer(self, pane: str) -> str:
        return self.item(self._rows[pane], 1).text()

    def labels(self) -> list[str]:
        return [self.item(row, 0).text() for row in range(self.rowCount())]
