"""UI test hygiene: Qt warnings fail, a leaked window or a scan thread left running fails; a fake engine
that records intent and replays recorded events."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QApplication

from macfinetune.core import sample_run
from macfinetune.core.events import JobEvent, JobFinished, JobStarted

UI_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if UI_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.qt_log_level_fail("WARNING"))
            item.add_marker(pytest.mark.qt_log_ignore("propagateSizeHints"))


@pytest.fixture(autouse=True)
def no_leaks(qapp):
    yield
    QApplication.processEvents()
    leaked = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    for w in leaked:
        w.close()
    threads = [t.name for t in threading.enumerate() if t.name.startswith("macfinetune-") and t.is_alive()]
    assert leaked == []
    assert threads == []


class Handle:
    def __init__(self, id: int, name: str):
        self.id, self.name = id, name


class FakeEngine(QObject):
    """Engine.event and the intent methods the session calls; ``send`` replays events as a job's."""

    event = Signal(object)

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []
        self._ids = itertools.count(1)
        self.job: Handle | None = None

    def _job(self, name: str, *args) -> Handle:
        self.calls.append((name, *args))
        self.job = Handle(next(self._ids), name)
        return self.job

    def train(self, recipe, run_dir, allow_over_budget=False):
        self.allow_over_budget = allow_over_budget
        return self._job("train", recipe, run_dir)

    def submit(self, name, fn, /, **args):
        return self._job(name, fn, args)

    def cancel(self, job_id):
        self.calls.append(("cancel", job_id))
        return True

    def resume(self, run_dir):
        return self._job("resume", run_dir)

    def pause_current(self):
        self.calls.append(("pause",))

    def resume_current(self):
        self.calls.append(("resume_current",))

    def stop_current(self):
        self.calls.append(("stop",))

    def send(self, *events, job: Handle | None = None) -> None:
        job = job or self.job
        for event in events:
            self.event.emit(JobEvent(job.id, job.name, event))


@pytest.fixture
def settings(tmp_path) -> QSettings:
    s = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    s.setValue("prefs/data_folder", str(tmp_path / "data"))
    return s


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def window(qtbot, engine, settings):
    from macfinetune.ui.main_window import create_main_window

    w = create_main_window(engine, settings)
    w.resize(1100, 720)
    w.show()
    w.pages["runs"].wait_for_scan()
    yield w
    if w.session.is_training and engine.job is not None:
        engine.send(JobFinished(None))  # else closing would ask whether to stop the run
    w.close()
    w.deleteLater()
    QApplication.processEvents()


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    """A data folder's runs/: finished, stopped (higher learning rate), interrupted (rank 16), failed."""
    root = tmp_path / "data" / "runs"
    sample_run.write_sample_run(root / "finished-run")
    sample_run.write_sample_run(root / "stopped-run", upto=600, state="stopped", learning_rate="3e-4",
                                started=sample_run.T0 + 3600)
    sample_run.write_sample_run(root / "interrupted-run", upto=300, state="interrupted", rank=16,
                                started=sample_run.T0 + 7200)
    sample_run.write_sample_run(root / "failed-run", upto=40, state="failed", started=sample_run.T0 + 9000,
                                message="the loss became NaN")
    return root


def start_job(engine: FakeEngine, session, run_dir: str = "run") -> Handle:
    """The session starts a (fake) train job and the engine says it started."""
    from macfinetune.core.recipe import Recipe

    session.prepare(Recipe(), Path(run_dir))
    session.start()
    engine.send(JobStarted())
    return engine.job


def finish_job(engine: FakeEngine) -> None:
    engine.send(JobFinished(None))
