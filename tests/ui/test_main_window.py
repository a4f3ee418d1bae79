"""The main window: sidebar from the registry, shortcuts, toolbar states, the close question,
persistence in an INI file, preferences, dropping a run folder."""

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QMessageBox

from macfinetune.core import events, sample_run
from macfinetune.core.events import JobFinished, JobStarted
from macfinetune.ui.main_window import create_main_window
from macfinetune.ui.pages import REGISTRY

from .conftest import finish_job, start_job


def test_sidebar_and_view_shortcuts_come_from_the_registry(window):
    titles = [window.sidebar.item(i).text() for i in range(window.sidebar.count())]
    assert titles == ["Runs", "New run", "Monitor", "Checkpoints", "Playground"]
    assert [a.shortcut().toString() for a in window.page_actions] == [f"Ctrl+{n}" for n in range(1, 6)]
    for action, spec in zip(window.page_actions, REGISTRY, strict=True):
        action.trigger()
        assert window.current_page() == spec.id
        assert window.stack.currentWidget().widget() is window.pages[spec.id]
    assert window.pages["new"].objectName() == "newRunPage"  # the wizard, registered in place of a placeholder


def test_a_640_by_480_window_holds_every_page(window, qtbot):
    """No page holds the window wider than a small screen: below a page's own minimum it scrolls."""
    window.show()
    for spec in REGISTRY:
        window.show_page(spec.id)
        assert window.minimumSizeHint().width() <= 640 and window.minimumSizeHint().height() <= 480, spec.id
    window.resize(640, 480)
    qtbot.waitUntil(lambda: window.width() == 640)
    window.show_page("new")
    assert window.stack.currentWidget().horizontalScrollBar().maximum() > 0  # the wizard scrolls sideways


def test_menus_follow_mac_conventions(window):
    assert window.prefs_action.menuRole() == window.prefs_action.MenuRole.PreferencesRole
    assert window.prefs_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Preferences)
    assert window.stop_action.shortcut().toString() == "Ctrl+."
    assert window.new_action.shortcut() == QKeySequence(QKeySequence.StandardKey.New)
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["macfinetune", "&File", "&Run", "&View", "&Window", "&Help"]


def test_toolbar_follows_the_run(window, engine):
    assert not any(a.isEnabled() for a in (window.start_action, window.pause_action, window.stop_action))
    start_job(engine, window.session)
    assert window.session.state == "running"
    assert [a.isEnabled() for a in (window.start_action, window.pause_action, window.resume_action,
                                    window.stop_action)] == [False, True, False, True]
    window.pause_action.trigger()
    assert engine.calls[-1] == ("pause",)
    engine.send(events.RunPaused(8, "you asked"))
    assert [window.pause_action.isEnabled(), window.resume_action.isEnabled()] == [False, True]
    window.resume_action.trigger()
    assert engine.calls[-1] == ("resume_current",)
    engine.send(events.RunResumed(8))
    assert window.pause_action.isEnabled()
    window.stop_action.trigger()
    assert engine.calls[-1] == ("stop",)
    finish_job(engine)
    assert not window.stop_action.isEnabled()


def _answer_close_question(button_text: str, seen: list) -> None:
    box = QApplication.activeModalWidget()
    if box is None:
        QTimer.singleShot(20, lambda: _answer_close_question(button_text, seen))
        return
    seen.append(box.text())
    next(b for b in box.buttons() if b.text() == button_text).click()


def test_closing_while_training_asks_and_keep_leaves_it_open(window, engine):
    start_job(engine, window.session)
    seen = []
    QTimer.singleShot(0, lambda: _answer_close_question("Keep Training", seen))
    window.close()
    assert "Stop the run and quit?" in seen[0]
    assert window.isVisible()
    assert ("stop",) not in engine.calls


def test_closing_while_training_can_stop_it_first(window, engine, qtbot):
    start_job(engine, window.session)
    seen = []
    QTimer.singleShot(0, lambda: _answer_close_question("Stop and Quit", seen))
    window.close()
    assert engine.calls[-1] == ("stop",)
    assert window.isVisible()  # not before the run has saved and ended
    engine.send(events.RunFinished("run", 8, True, None, None))
    finish_job(engine)
    qtbot.waitUntil(lambda: not window.isVisible())


def test_window_state_persists_in_the_settings_file(window, engine, settings, qtbot, tmp_path):
    width = max(900, window.minimumSizeHint().width()) + 50  # the wizard's steps need about 1000 px
    window.resize(width, 600)
    window.show_page("monitor")
    window.pages["monitor"].loss.set_smoothing(0.85)
    window.pages["monitor"].loss.log_box.setChecked(True)
    window.splitter.setSizes([200, 700])
    window.close()
    reread = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    again = create_main_window(engine, reread)
    qtbot.addWidget(again)
    again.show()
    assert again.current_page() == "monitor"
    # restoreGeometry fits the window on the screen (offscreen: 800 px wide) but never below its minimum width;
    # the offscreen platform restores the width less a frame margin; the default would be 1200x780
    screen = again.screen().availableGeometry().width()
    expected = width if width <= screen else max(screen, again.minimumSizeHint().width())
    assert again.height() == 600 and abs(again.width() - expected) <= 50
    assert again.pages["monitor"].loss.weight == 0.85
    assert again.pages["monitor"].loss.log_box.isChecked()
    # the sidebar keeps its width, less whatever the offscreen platform took off the window's width
    lost = abs(again.width() - width)
    assert abs(again.splitter.sizes()[0] - window.splitter.sizes()[0]) <= lost + 1
    again.pages["runs"].wait_for_scan()


def test_preferences_persist(window, settings, qtbot, tmp_path):
    from macfinetune.ui.preferences import PreferencesDialog

    dialog = PreferencesDialog(settings, window)
    dialog.folder.setText(str(tmp_path / "elsewhere"))
    dialog.keep_awake.setChecked(False)
    dialog.report_every.setValue(25)
    dialog.accept()
    assert settings.value("prefs/data_folder") == str(tmp_path / "elsewhere")
    assert settings.value("prefs/keep_awake", type=bool) is False
    assert int(settings.value("prefs/report_every")) == 25
    assert window.session.data_folder() == tmp_path / "elsewhere" / "runs"
    from macfinetune.core.recipe import Recipe

    window.session.prepare(Recipe(), tmp_path / "r")
    window.start_action.trigger()
    recipe = window.session.engine.calls[-1][1]
    assert recipe.eval.report_every == 25


def test_dropping_a_run_folder_opens_it(window, runs_dir):
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(runs_dir / "finished-run"))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    assert window.current_page() == "monitor"
    assert window.pages["monitor"].progress.text().startswith("Finished 1000/1000")


def test_dropping_something_else_says_what_it_expected(window, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *args: shown.append(args[2]))
    assert window.open_folder(tmp_path) is False
    assert "is a folder with no recipe.yaml, config.json or dataset files in it" in shown[0]
    (tmp_path / "setup.exe").write_bytes(b"MZ")
    drop(window, tmp_path / "setup.exe")
    assert "is a .exe file, not a recipe or a dataset. macfinetune opens run folders" in shown[1]
    assert window.current_page() == "runs"


@pytest.fixture
def said(monkeypatch) -> list[str]:
    """What the window said in a message box (recorded instead of shown, so a wrong turn fails, not hangs)."""
    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *args: shown.append(args[2]))
    return shown


def drop(window, path) -> None:
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(path))])
    window.dropEvent(QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier))


def test_dropping_a_dataset_opens_the_wizard_at_its_data_step(window, qtbot, said):
    from conftest import SAMPLE_DATA

    from .wizard.conftest import wait_data

    drop(window, SAMPLE_DATA / "train.jsonl")
    page = window.pages["new"]
    assert said == []
    assert window.current_page() == "new" and page.current_step() == "data"
    assert page.steps["data"].path_edit.text() == str(SAMPLE_DATA / "train.jsonl")
    wait_data(qtbot, page, tokens=False)
    assert page.state.data.train_rows > 0 and "chat" in page.steps["data"].summary.text()


def test_dropping_a_model_folder_opens_the_wizard_at_its_model_step(window, tiny_model, said):
    drop(window, tiny_model)
    page = window.pages["new"]
    assert said == []
    assert window.current_page() == "new" and page.current_step() == "model"
    assert page.steps["model"].path_edit.text() == str(tiny_model) and page.state.shape.layers == 2
    assert page.steps["model"].facts.text().startswith(f"<b>{tiny_model.name}</b>")


def test_open_fills_the_wizard_from_a_recipe_and_open_folder_takes_a_model(window, tiny_model, tmp_path, qtbot,
                                                                           monkeypatch, said):
    from conftest import fast_recipe
    from PySide6.QtWidgets import QFileDialog

    from macfinetune.core.recipe import save_recipe

    from .wizard.conftest import wait_data

    save_recipe(tmp_path / "mine.yaml", fast_recipe(tiny_model, "rank=2"))
    asked = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a: asked.append(a[3]) or (str(tmp_path / "mine.yaml"),
                                                                                        ""))
    assert window.open_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Open)
    window.open_action.trigger()
    page = window.pages["new"]
    assert said == [] and asked[0].startswith("Recipes and datasets (*.yaml")
    assert window.current_page() == "new" and page.current_step() == "review" and page.recipe.method.rank == 2
    wait_data(qtbot, page)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a: str(tiny_model))
    window.open_folder_action.trigger()
    assert page.current_step() == "model" and page.state.values["model"]["path"] == str(tiny_model)


def test_session_routes_other_jobs_to_job_event_and_keeps_training_state(window, engine, qtbot):
    """A page's download/fuse/export job: its events come back on ``jobEvent``; the training state is untouched."""
    from macfinetune.core.events import Progress

    seen = []
    window.session.jobEvent.connect(seen.append)
    handle = window.session.submit("download", print, repo_id="a/b")
    engine.send(JobStarted(), Progress("download", 1, 3), JobFinished(None), job=handle)
    assert [type(e.event).__name__ for e in seen] == ["JobStarted", "Progress", "JobFinished"]
    assert {e.job_id for e in seen} == {handle.id}
    assert window.session.state == "idle"
    assert window.session.cancel(handle.id) is True
    assert engine.calls[-1] == ("cancel", handle.id)


def test_start_anyway_reaches_the_engine(window, engine):
    from macfinetune.core.recipe import Recipe

    window.session.prepare(Recipe(), Path("run"))
    window.session.start(allow_over_budget=True)
    assert engine.allow_over_budget is True


def test_the_status_bar_shows_the_final_state_of_a_run(window, engine):
    start_job(engine, window.session, "demo-run")
    engine.send(*sample_run.sample_events("demo-run", upto=30))
    assert window.statusBar().currentMessage().startswith("Running 30/1000")
    engine.send(events.RunFinished("demo-run", 30, True, None, None))
    assert window.statusBar().currentMessage().startswith("Stopped 30/1000")
    finish_job(engine)
    start_job(engine, window.session, "demo-run")
    engine.send(*sample_run.sample_events("demo-run", upto=20), events.RunFailed("demo-run", "the loss became NaN"))
    assert window.statusBar().currentMessage().startswith("Failed 20/1000")
