"""The page's job line: what a fuse or export is doing, Cancel, and where the result went."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from macfinetune.core.events import JobCancelled, JobFailed, JobFinished, Stage


def reveal_text() -> str:
    return "Reveal in Finder" if sys.platform == "darwin" else "Show in File Manager"


def result_folder(result) -> str | None:
    """Where a job's result lives: a fused model's folder, an export's location (a folder or a file)."""
    for name in ("out_dir", "location"):
        value = getattr(result, name, None)
        if value:
            return str(value)
    return None


class JobPanel(QWidget):
    """One job at a time: a busy bar and its latest stage while it runs, then the result and Reveal."""

    busyChanged = Signal()
    finished = Signal(object)  # the job's result

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.setObjectName("checkpointsJob")
        self.session = session
        self.job_id: int | None = None
        self.folder: str | None = None
        self.label = QLabel()
        self.label.setObjectName("checkpointsJobLabel")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setObjectName("checkpointsJobProgress")
        self.progress.setRange(0, 0)
        self.progress.setMaximumWidth(160)
        self.cancel = QPushButton("Cancel")
        self.cancel.setObjectName("checkpointsJobCancel")
        self.cancel.clicked.connect(self._on_cancel_clicked)
        self.reveal = QPushButton(reveal_text())
        self.reveal.setObjectName("checkpointsReveal")
        self.reveal.clicked.connect(self._on_reveal_clicked)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        for widget in (self.progress, self.cancel, self.reveal):
            layout.addWidget(widget)
        session.jobEvent.connect(self._on_session_job_event)
        self._set_running(False)
        self.setVisible(False)

    @property
    def busy(self) -> bool:
        return self.job_id is not None

    def start(self, title: str, name: str, fn: Callable, /, **args) -> None:
        handle = self.session.submit(name, fn, **args)
        self.job_id, self.folder, self.title = getattr(handle, "id", None), None, title
        self.label.setText(f"{title}…")
        self._set_running(True)
        self.setVisible(True)
        self.busyChanged.emit()

    def clear(self) -> None:
        """Forget the last job's result line (another run is shown); a job still running stays."""
        if self.job_id is None:
            self.folder = None
            self.label.clear()
            self.setVisible(False)

    def _set_running(self, running: bool) -> None:
        self.progress.setVisible(running)
        self.cancel.setVisible(running)
        self.reveal.setVisible(not running and self.folder is not None)

    def _on_session_job_event(self, job_event) -> None:
        if self.job_id is None or job_event.job_id != self.job_id:
            return
        event = job_event.event
        if isinstance(event, Stage):
            self.label.setText(f"{self.title}: {event.message}")
        elif isinstance(event, JobFinished):
            self._done(self._finished_text(event.result), event.result)
        elif isinstance(event, JobFailed):
            self._done(f"{self.title} failed: {event.message}")
        elif isinstance(event, JobCancelled):
            self._done(f"{self.title}: cancelled; nothing was written.")

    def _finished_text(self, result) -> str:
        self.folder = result_folder(result)
        command = getattr(result, "command", None)
        text = f"Done: {self.folder}" if self.folder else "Done."
        return f"{text}\nNext: {command}" if command else text

    def _done(self, text: str, result=None) -> None:
        self.job_id = None
        self.label.setText(text)
        self._set_running(False)
        self.busyChanged.emit()
        if result is not None:
            self.finished.emit(result)

    def _on_cancel_clicked(self) -> None:
        if self.job_id is not None:
            self.session.cancel(self.job_id)

    def _on_reveal_clicked(self) -> None:
        if self.folder:
            target = Path(self.folder)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(target if target.is_dir() else target.parent)))
