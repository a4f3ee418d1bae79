"""Crash reports in the app: an uncaught error is written to the data folder (core.crash: no tokens, no
dataset content) and said in a window; a report from an earlier run is offered at the next launch."""

from __future__ import annotations

import faulthandler
import sys
import threading

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

from macfinetune.core import crash


class CrashReporter:
    """Installs the hooks; ``parent`` is the window the messages belong to (set once it exists)."""

    def __init__(self, folder=None):
        self.folder = folder or crash.reports_home()
        self.parent: QWidget | None = None
        self.last_report = None
        self._fault_file = None

    def install(self) -> None:
        self._fault_file = open(crash.fault_log_path(self.folder), "w", encoding="utf-8")  # noqa: SIM115 (process-long)
        faulthandler.enable(self._fault_file)
        sys.excepthook = self._hook
        threading.excepthook = lambda args: self._hook(args.exc_type, args.exc_value, args.exc_traceback)

    def uninstall(self) -> None:
        """At a normal exit: the empty fault log goes, the default hooks come back."""
        sys.excepthook, threading.excepthook = sys.__excepthook__, threading.__excepthook__
        if self._fault_file is not None:
            faulthandler.disable()
            path = self._fault_file.name
            self._fault_file.close()
            from pathlib import Path

            if Path(path).stat().st_size == 0:
                Path(path).unlink(missing_ok=True)

    def _hook(self, exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        text = crash.format_report(exc_type, exc, tb, crash.versions())
        self.last_report = crash.write_report(text, self.folder)
        print(f"macfinetune: an unexpected error was reported to {self.last_report}", file=sys.stderr)
        if QGuiApplication.instance() is not None and threading.current_thread() is threading.main_thread():
            QMessageBox.warning(self.parent, "Something went wrong",
                                f"An unexpected error happened: {exc_type.__name__}. Your runs are safe.\n\n"
                                f"A report without your data or tokens was saved to {self.last_report}; "
                                "please attach it to a bug report.")

    def offer_pending(self, parent: QWidget) -> QMessageBox | None:
        """A crash report from an earlier session: show where it is; it is not offered again."""
        pending = crash.pending_reports(self.folder)
        if not pending:
            return None
        for report in pending[1:]:
            crash.mark_seen(report)
        seen = crash.mark_seen(pending[0])
        box = QMessageBox(QMessageBox.Icon.Information, "macfinetune quit unexpectedly last time",
                          "A crash report was saved (no dataset content, no tokens). Attaching it to a bug report "
                          f"helps fix it:\n{seen}", QMessageBox.StandardButton.Close, parent)
        box.setDetailedText(pending[0].text)
        show = box.addButton("Show the report", QMessageBox.ButtonRole.ActionRole)
        show.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(seen.parent))))
        box.setObjectName("crashOffer")
        box.open()
        return box
