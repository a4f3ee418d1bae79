"""Files Finder hands to the app (double-click a run folder, recipe or dataset; drop on the Dock icon).

On macOS these arrive as ``QFileOpenEvent`` on the application, not as command-line arguments (the bundle is
built with ``argv_emulation=False``); the Info.plist's document types make Finder offer the app for them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QObject


class FileOpenForwarder(QObject):
    """An application event filter that forwards each opened file to ``open_path`` (the main window's)."""

    def __init__(self, open_path: Callable[[Path], object], parent: QObject | None = None):
        super().__init__(parent)
        self._open_path = open_path
        self.opened: list[Path] = []

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.FileOpen:
            path = Path(event.file() or event.url().toLocalFile())
            self.opened.append(path)
            self._open_path(path)
            return True
        return super().eventFilter(watched, event)
