"""The wizard as the main window's New-run page: registered, and Train starts the run through the session."""

from __future__ import annotations

from conftest import SAMPLE_DATA
from PySide6.QtCore import QSettings

from macfinetune.core.events import JobEvent, JobFinished
from macfinetune.ui.screenshot import IdleEngine
from macfinetune.ui.wizard import WizardPage

from .conftest import wait_data
from .test_wizard import choose_tiny, field, type_into


def test_new_run_is_the_wizard_and_train_goes_through_the_session(qtbot, hub_cache, tiny_model, tmp_path):
    from macfinetune.ui.main_window import create_main_window

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("prefs/data_folder", str(tmp_path / "data"))
    engine = IdleEngine()
    window = create_main_window(engine, settings)
    qtbot.addWidget(window)
    window.show_page("new")
    page = window.pages["new"]
    assert isinstance(page, WizardPage) and window.stack.currentWidget().widget() is page
    page.services.model_folders.append(tiny_model.parent)
    page.steps["model"].rescan()
    choose_tiny(qtbot, page, tiny_model)
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page)
    type_into(field(page, "training.iterations"), "5")
    page.go("review")
    run_dir = page.steps["review"].start()
    try:
        check_started(window, page, engine, run_dir, tmp_path)
    finally:  # the job "ends", so closing the window asks nothing
        engine.event.emit(JobEvent(0, "train", JobFinished()))
    assert window.session.state == "idle"
    page.shutdown()
    window.close()


def check_started(window, page, engine, run_dir, tmp_path):
    (name, (recipe, started_dir)), = engine.calls
    assert (name, started_dir, recipe.training.iterations) == ("train", run_dir, 5)
    assert run_dir.parent == tmp_path / "data" / "runs"
    assert window.current_page() == "monitor" and window.session.state == "starting"
    assert page.steps["review"].start() is None
    assert page.blockers.text().startswith("train: a run is training")
