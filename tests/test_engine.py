"""The engine thread: jobs run one at a time off the GUI thread; events arrive on the GUI thread."""

import pytest
from conftest import fast_recipe
from PySide6.QtCore import QObject, QThread, Signal, Slot

from macfinetune.core.events import (
    CheckpointSaved,
    JobFailed,
    JobFinished,
    JobStarted,
    RunFinished,
    TokenChunk,
    TrainReport,
)
from macfinetune.core.sampling import Sampling
from macfinetune.engine import Engine


class Recorder(QObject):
    """A GUI-thread receiver, as a window would be."""

    def __init__(self):
        super().__init__()
        self.events = []
        self.threads = set()

    @Slot(object)
    def on_event(self, event):
        self.events.append(event)
        self.threads.add(QThread.currentThread())

    def finished(self, n):
        return sum(isinstance(e, JobFinished) for e in self.events) >= n


@pytest.fixture
def engine(qtbot):
    eng = Engine()
    recorder = Recorder()
    eng.event.connect(recorder.on_event)
    eng.start()
    yield eng, recorder
    assert eng.shutdown(), "engine thread did not end"
    assert not eng.isRunning()


def test_training_events_arrive_on_the_gui_thread(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    eng.train(fast_recipe(tiny_model, "iterations=4"), tmp_path / "run")
    qtbot.waitUntil(lambda: rec.finished(1), timeout=120_000)
    assert rec.threads == {QThread.currentThread()}
    kinds = [type(e) for e in rec.events]
    assert kinds[0] is JobStarted and kinds[-1] is JobFinished
    assert TrainReport in kinds and CheckpointSaved in kinds and RunFinished in kinds


def test_jobs_run_one_at_a_time_and_stop_reaches_the_running_job(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    eng.train(fast_recipe(tiny_model, "iterations=100000", "report_every=1"), tmp_path / "long")
    eng.generate(str(tiny_model), None, "Hi", Sampling(max_tokens=4, temperature=0))
    qtbot.waitUntil(lambda: any(isinstance(e, TrainReport) for e in rec.events), timeout=120_000)
    eng.stop_current()
    qtbot.waitUntil(lambda: rec.finished(2), timeout=120_000)
    starts = [e.job for e in rec.events if isinstance(e, JobStarted)]
    assert starts == ["train", "generate"]
    finish = next(e for e in rec.events if isinstance(e, RunFinished))
    assert finish.stopped and finish.iteration < 100000
    first_token = next(i for i, e in enumerate(rec.events) if isinstance(e, TokenChunk))
    assert first_token > rec.events.index(finish)


def test_bad_input_becomes_a_job_failed_event_and_the_engine_lives_on(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    eng.train(fast_recipe(tmp_path / "no-model"), tmp_path / "run")
    eng.generate(str(tiny_model), None, "Hi", Sampling(max_tokens=2, temperature=0))
    qtbot.waitUntil(lambda: rec.finished(2), timeout=120_000)
    failed = [e for e in rec.events if isinstance(e, JobFailed)]
    assert len(failed) == 1 and "model folder not found" in failed[0].message
    assert failed[0].problems[0].field == "model.path"
    assert any(isinstance(e, TokenChunk) for e in rec.events)
    assert not (tmp_path / "run").exists()


class _Emitter(QObject):
    sig = Signal(object)


def test_thousands_of_signal_emits_do_not_crash(qtbot):
    """PySide6 6.12.0 on CPython 3.11 aborts after a few hundred emits (bool refcount bug)."""
    emitter, rec = _Emitter(), Recorder()
    emitter.sig.connect(rec.on_event)
    for i in range(5000):
        emitter.sig.emit(i)
    assert len(rec.events) == 5000
