"""Finder's "Open With macfinetune" (and a drop on the Dock icon) reaches the window as a QFileOpenEvent."""

from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication

from macfinetune.ui.file_open import FileOpenForwarder


def test_a_run_folder_opened_from_finder_shows_in_the_monitor(window, runs_dir):
    app = QApplication.instance()
    forwarder = FileOpenForwarder(window.open_folder)
    app.installEventFilter(forwarder)
    try:
        QApplication.sendEvent(app, QFileOpenEvent(str(runs_dir / "stopped-run")))
    finally:
        app.removeEventFilter(forwarder)
    assert forwarder.opened == [runs_dir / "stopped-run"]
    assert window.current_page() == "monitor"
    assert window.pages["monitor"].progress.text().startswith("Stopped 600/1000")


def test_a_dataset_opened_from_finder_goes_to_the_wizard(window, qtbot, monkeypatch):
    from conftest import SAMPLE_DATA
    from PySide6.QtWidgets import QMessageBox

    from .wizard.conftest import wait_data

    said = []
    monkeypatch.setattr(QMessageBox, "information", lambda *args: said.append(args[2]))  # fail, not hang
    app = QApplication.instance()
    forwarder = FileOpenForwarder(window.open_folder)
    app.installEventFilter(forwarder)
    try:
        QApplication.sendEvent(app, QFileOpenEvent(str(SAMPLE_DATA / "valid.jsonl")))
    finally:
        app.removeEventFilter(forwarder)
    page = window.pages["new"]
    assert said == [] and window.current_page() == "new" and page.state.values["data"]["path"] == str(SAMPLE_DATA / "valid.jsonl")
    wait_data(qtbot, page, tokens=False)
