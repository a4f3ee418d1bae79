"""One chat pane: a title (and the pickers the page puts beside it), the transcript, and a footer that says
how the model got ready and how fast it answered."""

from __future__ import annotations

from PySide6.QtGui import QFont, QPalette, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QTextBrowser,
    QVBoxLayout,
)

from macfinetune.core.chat import Conversation

SPEAKERS = {"system": "System", "user": "You", "assistant": "Model"}


class ChatPane(QFrame):
    def __init__(self, pane_id: str, title: str, parent=None):
        super().__init__(parent)
        self.pane_id = pane_id
        self.setObjectName(f"{pane_id}Pane")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(title)
        self.title.setObjectName(f"{pane_id}Title")
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.header = QHBoxLayout()
        self.header.addWidget(self.title)
        self.header.addStretch(1)
        self.transcript = QTextBrowser()
        self.transcript.setObjectName(f"{pane_id}Transcript")
        self.transcript.setOpenLinks(False)
        self.transcript.setFrameShape(QFrame.Shape.NoFrame)
        self.load = QLabel()
        self.load.setObjectName(f"{pane_id}Load")
        self.load.setWordWrap(True)  # a long refusal must not widen the window
        self.load.setMinimumWidth(self.load.fontMetrics().horizontalAdvance("model loaded in 00.0 s"))
        self.speed = QLabel()
        self.speed.setObjectName(f"{pane_id}Speed")
        footer = QHBoxLayout()
        footer.addWidget(self.load, 1)
        footer.addWidget(self.speed)
        layout = QVBoxLayout(self)
        layout.addLayout(self.header)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(footer)

    def set_title(self, text: str) -> None:
        self.title.setText(text)

    # --- the transcript ---------------------------------------------------------------

    def show_conversation(self, conversation: Conversation, system: str = "") -> None:
        """Redraw every turn (a new chat, a replayed one)."""
        self.transcript.clear()
        for role, text in conversation.messages(system):
            self._add_turn(role, text)

    def add_turn(self, role: str, text: str = "") -> None:
        self._add_turn(role, text)

    def append(self, text: str) -> None:
        """Streamed text of the answer being written."""
        cursor = self._end()
        cursor.insertText(text, QTextCharFormat())
        self._scroll_to_end()

    def text(self) -> str:
        return self.transcript.toPlainText()

    def _add_turn(self, role: str, text: str) -> None:
        cursor = self._end()
        if not self.transcript.document().isEmpty():
            cursor.insertBlock(self._label_block(), self._label_format())
        else:
            cursor.setBlockFormat(self._label_block())
        cursor.insertText(SPEAKERS.get(role, role), self._label_format())
        cursor.insertBlock(QTextBlockFormat(), QTextCharFormat())
        cursor.insertText(text, QTextCharFormat())
        self._scroll_to_end()

    def _end(self) -> QTextCursor:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        return cursor

    def _label_block(self) -> QTextBlockFormat:
        block = QTextBlockFormat()
        block.setTopMargin(10 if not self.transcript.document().isEmpty() else 0)
        return block

    def _label_format(self) -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setFontWeight(QFont.Weight.DemiBold)
        fmt.setForeground(self.palette().color(QPalette.ColorRole.PlaceholderText))
        return fmt

    def _scroll_to_end(self) -> None:
        bar = self.transcript.verticalScrollBar()
        bar.setValue(bar.maximum())

    # --- the footer -------------------------------------------------------------------

    def set_load(self, text: str) -> None:
        self.load.setText(text)

    def set_speed(self, text: str) -> None:
        self.speed.setText(text)
