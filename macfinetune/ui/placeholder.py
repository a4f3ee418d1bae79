"""A page that is not built yet says what it will hold and where it lands."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


class PlaceholderPage(QWidget):
    def __init__(self, name: str, text: str, parent=None):
        super().__init__(parent)
        self.setObjectName(f"{name}Page")
        label = QLabel(text)
        label.setObjectName(f"{name}Placeholder")
        label.setWordWrap(True)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout = QVBoxLayout(self)
        layout.addWidget(label)


def new_run_page(session, settings, parent=None) -> QWidget:
    return PlaceholderPage("newRun", "New run: the wizard (model, data, method, memory estimate) arrives in the next "
                           "release. Until then start runs with `macfinetune train`; they appear in Runs.", parent)


def checkpoints_page(session, settings, parent=None) -> QWidget:
    return PlaceholderPage("checkpoints", "Checkpoints: browse, fuse and export a run's checkpoints (coming). "
                           "Until then: `macfinetune fuse RUN_DIR`.", parent)


def playground_page(session, settings, parent=None) -> QWidget:
    return PlaceholderPage("playground", "Playground: chat with the base and the tuned model side by side (coming). "
                           "Until then: `macfinetune generate --adapter RUN_DIR --compare`.", parent)
