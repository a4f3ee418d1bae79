"""Samples side by side: one row per sample prompt, one column per checkpoint, the answers in the cells."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core.checkpoints import RunCheckpoints

EMPTY = ("No samples in this run. Turn on eval.samples in the recipe (Advanced settings in New run) and every "
         "checkpoint answers a few fixed prompts, so you can watch the style appear and over-fitting begin.")


class SamplesView(QWidget):
    """A read-only grid; ``select_iteration`` highlights a checkpoint's column and scrolls to it."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("checkpointSamples")
        self.table = QTableWidget(0, 0, self)
        self.table.setObjectName("samplesTable")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectColumns)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(True)
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setDefaultSectionSize(260)
        self.table.verticalHeader().setMaximumWidth(220)
        self.empty = QLabel(EMPTY, self)
        self.empty.setObjectName("samplesEmpty")
        self.empty.setWordWrap(True)
        self.empty.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.iterations: list[int] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty)

    def set_run(self, data: RunCheckpoints) -> None:
        rows = [r for r in data.rows if r.samples]
        self.iterations = [r.iteration for r in rows]
        prompts = list(data.prompts)
        self.table.clear()
        self.table.setRowCount(len(prompts))
        self.table.setColumnCount(len(rows))
        self.table.setHorizontalHeaderLabels([f"{r.iteration:,}" + (" ★" if r.is_best else "") for r in rows])
        self.table.setVerticalHeaderLabels([_short(p) for p in prompts])
        for column, row in enumerate(rows):
            answers = dict(row.samples)
            for i, prompt in enumerate(prompts):
                self._set_cell(i, column, answers.get(prompt, ""), prompt)
        self.table.resizeRowsToContents()
        self.table.setVisible(bool(rows))
        self.empty.setVisible(not rows)

    def _set_cell(self, row: int, column: int, text: str, prompt: str) -> None:
        item = QTableWidgetItem(text)
        item.setToolTip(f"{prompt}\n\n→ {text}")
        item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.table.setItem(row, column, item)

    def select_iteration(self, iteration: int | None) -> None:
        if iteration in self.iterations:
            column = self.iterations.index(iteration)
            self.table.selectColumn(column)
            self.table.scrollTo(self.table.model().index(0, column))
        else:
            self.table.clearSelection()

    def answers(self, iteration: int) -> list[str]:
        """The texts shown in a checkpoint's column (tests read the page through this)."""
        column = self.iterations.index(iteration)
        return [self.table.item(r, column).text() for r in range(self.table.rowCount())]


def _short(prompt: str, limit: int = 40) -> str:
    line = prompt.replace("\n", " ")
    return line if len(line) <= limit else line[: limit - 1] + "…"
