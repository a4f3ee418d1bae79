"""The first-launch screen and the crash reporter, driven as a user would."""

import sys

from PySide6.QtWidgets import QMessageBox

from macfinetune.core.events import JobStarted
from macfinetune.ui.crash_ui import CrashReporter
from macfinetune.ui.first_launch import FirstLaunchDialog, offer_first_launch


def test_first_launch_shows_the_machine_once_and_runs_the_demo_in_the_monitor(window, engine, settings, tmp_path,
                                                                              qtbot):
    dialog = offer_first_launch(window, settings, tmp_path)
    assert isinstance(dialog, FirstLaunchDialog)
    assert set(dialog.fact_labels) == {"Chip", "Memory", "GPU budget", "macOS" if sys.platform == "darwin"
                                       else "System", "MLX", "Free disk"}
    assert "unified memory" in dialog.fact_labels["Memory"].text()
    dialog.demo_button.click()
    name, fn, args = engine.calls[-1]
    assert (name, fn.__name__) == ("demo", "demo")
    assert args["out_dir"].parent.name == "demo"
    assert window.session.run_dir == str(args["out_dir"] / "demo-tiny-lora")
    assert window.session.state == "starting"
    assert window.current_page() == "monitor"
    engine.send(JobStarted())  # the demo's events drive the toolbar and the Monitor like a training run's
    assert window.session.state == "running"
    assert offer_first_launch(window, settings, tmp_path) is None  # once


def test_start_without_the_demo_starts_nothing(window, engine, settings, tmp_path):
    dialog = offer_first_launch(window, settings, tmp_path)
    dialog.close_button.click()
    assert engine.calls == []
    assert window.session.state == "idle"


def test_an_uncaught_error_is_reported_and_said_then_offered_next_launch(window, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: shown.append(text))
    reports = tmp_path / "reports"
    reporter = CrashReporter(reports)
    reporter.install()
    try:
        reporter.parent = window
        try:
            raise RuntimeError("boom with 'a private row text'")
        except RuntimeError as e:
            sys.excepthook(type(e), e, e.__traceback__)
    finally:
        reporter.uninstall()
    assert reporter.last_report.is_file()
    assert "RuntimeError: boom with '<18 chars>'" in reporter.last_report.read_text(encoding="utf-8")
    assert len(shown) == 1 and str(reporter.last_report) in shown[0]
    assert sys.excepthook is sys.__excepthook__
    assert list(reports.glob("fault-*.log")) == []  # no hard crash: the empty fault log is gone
    box = CrashReporter(reports).offer_pending(window)
    assert box is not None and "boom" in box.detailedText()
    box.close()
    assert CrashReporter(reports).offer_pending(window) is None  # offered once
    assert [p.name for p in reports.iterdir()] == [f"seen-{reporter.last_report.name}"]
