"""Composition root: QApplication, QSettings (created once, injected), the engine, the main window."""

from __future__ import annotations

import sys

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication


def make_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName("macfinetune")
    app.setOrganizationName("macfinetune")
    app.setOrganizationDomain("macfinetune.app")
    return app


def run(argv: list[str] | None = None) -> int:
    """Open the main window; the engine thread starts now but imports MLX only when a job runs."""
    from macfinetune.engine import Engine
    from macfinetune.ui.crash_ui import CrashReporter

    app = make_application(argv)
    reporter = CrashReporter()
    reporter.install()
    settings = QSettings()
    engine = Engine()
    engine.start()
    from macfinetune.ui.main_window import create_main_window

    window = create_main_window(engine, settings)
    window.show()
    from macfinetune.ui.file_open import FileOpenForwarder

    opener = FileOpenForwarder(window.open_folder, app)  # Finder's "Open With" and the Dock icon
    app.installEventFilter(opener)
    reporter.parent = window
    _greet(window, settings, reporter)
    try:
        return app.exec()
    finally:
        app.removeEventFilter(opener)
        engine.shutdown()
        reporter.uninstall()


def _greet(window, settings, reporter) -> None:
    """After the first paint: a crash report from last time, or the first-launch screen (machine, demo)."""
    from PySide6.QtCore import QTimer

    from macfinetune.core import paths
    from macfinetune.ui.first_launch import offer_first_launch

    def greet():
        if reporter.offer_pending(window) is None:
            offer_first_launch(window, settings, paths.data_home())

    QTimer.singleShot(0, greet)


def screenshot(out: str, page: str, theme: str = "light") -> int:
    """Render one page with a recorded demo run, offscreen, at a fixed size, into ``out`` (PNG)."""
    from macfinetune.ui.screenshot import render

    app = make_application()
    return render(app, out, page, theme)
