"""What every step has: a title, a short explanation, and three hooks the page calls."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


class Step(QWidget):
    def __init__(self, page, title: str, intro: str):
        super().__init__(page)
        self.page = page
        self.layout_ = QVBoxLayout(self)
        heading = QLabel(f"<h2>{title}</h2>", self)
        text = QLabel(intro, self)
        text.setWordWrap(True)
        self.layout_.addWidget(heading)
        self.layout_.addWidget(text)

    def show_state(self) -> None:
        """Cheap: show the current values and errors (called on every change)."""

    def refresh(self) -> None:
        """Costlier updates, only for the visible step."""

    def shutdown(self) -> None:
        """Stop worker threads."""
