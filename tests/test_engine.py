"""The engine thread: jobs run one at a time off the GUI thread; events arrive on the GUI thread,
each wrapped in a JobEvent with the job's id; queued jobs can be cancelled; shutdown never leaves
a running thread; train reports are coalesced to ~20 signals a second."""

import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import fast_recipe
from PySide6.QtCore import QObject, QThread, Signal, Slot

from macfinetune import engine as engine_module
from macfinetune import jobs
from macfinetune.core.events import (
    CheckpointSaved,
    GenerationFinished,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobFinished,
    JobQueued,
    JobStarted,
    RunFinished,
    Stage,
    TokenChunk,
    TrainReport,
    TrainReportBatch,
)
from macfinetune.core.sampling import Sampling
from macfinetune.engine import Engine


class Recorder(QObject):
    """A GUI-thread receiver, as a window would be."""

    def __init__(self):
        super().__init__()
        self.events: list[JobEvent] = []
        self.threads = set()
        self.arrivals: list[float] = []

    @Slot(object)
    def on_event(self, event):
        self.events.append(event)
        self.arrivals.append(time.monotonic())
        self.threads.add(QThread.currentThread())

    def of(self, job_id):
        return [e.event for e in self.events if e.job_id == job_id]

    def ended(self, job_id):
        return any(isinstance(e, JobFinished | JobFailed | JobCancelled) for e in self.of(job_id))


@pytest.fixture
def engine(qtbot):
    """A started engine and its recorder; the test fails if the thread outlives it."""
    eng = Engine()
    recorder = Recorder()
    eng.event.connect(recorder.on_event)
    eng.start()
    yield eng, recorder
    ended = eng.shutdown(120_000)
    assert ended
    assert not eng.isRunning()


def _reports(events):
    out = []
    for e in events:
        if isinstance(e, TrainReport):
            out.append(e)
        elif isinstance(e, TrainReportBatch):
            out.extend(e.reports)
    return out


# --- lifecycle and threads ----------------------------------------------------------------


def test_training_events_arrive_on_the_gui_thread_wrapped_with_the_job_id(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    handle = eng.train(fast_recipe(tiny_model, "iterations=4"), tmp_path / "run")
    qtbot.waitUntil(lambda: rec.ended(handle.id), timeout=120_000)
    assert rec.threads == {QThread.currentThread()}
    assert all(isinstance(e, JobEvent) and e.job_id == handle.id and e.job == "train" for e in rec.events)
    kinds = [type(e) for e in rec.of(handle.id)]
    assert kinds[:2] == [JobQueued, JobStarted] and kinds[-1] is JobFinished
    assert TrainReport in kinds and CheckpointSaved in kinds and RunFinished in kinds
    assert rec.of(handle.id)[-1].result.state == "finished"


def test_jobs_run_one_at_a_time_and_stop_reaches_the_running_job(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    train = eng.train(fast_recipe(tiny_model, "iterations=100000", "report_every=1"), tmp_path / "long")
    gen = eng.generate(str(tiny_model), None, "Hi", Sampling(max_tokens=4, temperature=0))
    assert train.id != gen.id
    qtbot.waitUntil(lambda: bool(_reports(rec.of(train.id))), timeout=120_000)
    assert eng.current() == train and eng.queued() == [gen]
    eng.stop_current()
    qtbot.waitUntil(lambda: rec.ended(gen.id), timeout=120_000)
    starts = [e.job_id for e in rec.events if isinstance(e.event, JobStarted)]
    assert starts == [train.id, gen.id]
    finish = next(e for e in rec.of(train.id) if isinstance(e, RunFinished))
    assert finish.stopped and finish.iteration < 100000
    train_end = max(i for i, e in enumerate(rec.events) if e.job_id == train.id)
    first_token = next(i for i, e in enumerate(rec.events) if isinstance(e.event, TokenChunk))
    assert first_token > train_end
    assert any(isinstance(e, GenerationFinished) for e in rec.of(gen.id))
    assert eng.current() is None and eng.queued() == []


def test_bad_input_becomes_a_job_failed_event_and_the_engine_lives_on(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    bad = eng.train(fast_recipe(tmp_path / "no-model"), tmp_path / "run")
    gen = eng.generate(str(tiny_model), None, "Hi", Sampling(max_tokens=2, temperature=0))
    qtbot.waitUntil(lambda: rec.ended(gen.id), timeout=120_000)
    failed = [e for e in rec.of(bad.id) if isinstance(e, JobFailed)]
    assert len(failed) == 1 and "model folder not found" in failed[0].message
    assert failed[0].problems[0].field == "model.path"
    assert any(isinstance(e, TokenChunk) for e in rec.of(gen.id))
    assert not (tmp_path / "run").exists()


# --- cancel -------------------------------------------------------------------------------


def _blocker(release: threading.Event):
    """A job that holds the engine until ``release`` is set or it is asked to stop."""

    def job(emit, control):
        emit(Stage("test", "holding"))
        while not release.is_set() and not control.stop_requested:
            time.sleep(0.01)
        if control.stop_requested:
            raise jobs.Cancelled()
        return "released"

    return job


def test_a_train_cancelled_while_queued_never_runs_and_leaves_no_run_folder(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    release = threading.Event()
    blocker = eng.submit("block", _blocker(release))
    train = eng.train(fast_recipe(tiny_model, "iterations=4"), tmp_path / "run")
    after = eng.probe_machine()
    qtbot.waitUntil(lambda: any(isinstance(e, Stage) for e in rec.of(blocker.id)), timeout=30_000)
    assert [h.id for h in eng.queued()] == [train.id, after.id]
    assert eng.cancel(train.id)
    assert [h.id for h in eng.queued()] == [after.id]
    assert not eng.cancel(train.id)  # already gone
    release.set()
    qtbot.waitUntil(lambda: rec.ended(after.id), timeout=60_000)
    assert [type(e) for e in rec.of(train.id)] == [JobQueued, JobCancelled]
    assert not (tmp_path / "run").exists()
    assert rec.of(blocker.id)[-1] == JobFinished("released")
    assert isinstance(rec.of(after.id)[-1], JobFinished)


def test_cancel_of_the_running_job_stops_it(engine, qtbot):
    eng, rec = engine
    handle = eng.submit("block", _blocker(threading.Event()))
    qtbot.waitUntil(lambda: eng.current() == handle, timeout=30_000)
    assert eng.cancel(handle.id)
    qtbot.waitUntil(lambda: rec.ended(handle.id), timeout=30_000)
    assert isinstance(rec.of(handle.id)[-1], JobCancelled)


# --- shutdown -----------------------------------------------------------------------------


def test_shutdown_during_a_fuse_waits_for_it_and_leaves_no_partial_folder(engine, qtbot, trained_run, tmp_path):
    eng, rec = engine
    out = tmp_path / "fused"
    handle = eng.fuse(trained_run, "last", out)
    queued = eng.probe_machine()
    qtbot.waitUntil(lambda: any(isinstance(e, Stage) for e in rec.of(handle.id)), timeout=60_000)
    assert eng.shutdown(120_000)
    assert not eng.isRunning()
    qtbot.waitUntil(lambda: rec.ended(handle.id), timeout=10_000)
    end = rec.of(handle.id)[-1]
    # stopped between stages (nothing written) or finished its atomic save (a complete folder)
    assert (isinstance(end, JobCancelled) and not out.exists()) or (
        isinstance(end, JobFinished) and (out / "config.json").exists())
    assert not list(tmp_path.glob(".fused.partial-*"))
    assert [type(e) for e in rec.of(queued.id)] == [JobQueued, JobCancelled]


def test_a_shutdown_that_times_out_says_so_and_keeps_the_thread_referenced(qtbot):
    eng, rec = Engine(), Recorder()
    eng.event.connect(rec.on_event)
    eng.start()
    release = threading.Event()

    def stubborn(emit, control):  # ignores stop, as a step that takes long would
        emit(Stage("test", "busy"))
        release.wait(30)

    handle = eng.submit("stubborn", stubborn)
    try:
        qtbot.waitUntil(lambda: eng.current() == handle, timeout=30_000)
        assert eng.shutdown(200) is False
        assert eng.isRunning() and eng in engine_module._UNFINISHED
    finally:
        release.set()
    assert eng.shutdown(30_000)
    assert not eng.isRunning() and eng not in engine_module._UNFINISHED


# --- coalesced train reports ----------------------------------------------------------------


def _report(i):
    return TrainReport(i, 10_000, 1.0, 1e-3, 100.0, 1000.0, i * 10, 0.1)


def test_fast_reports_are_coalesced_to_at_most_20_signals_a_second_and_none_is_lost(engine, qtbot):
    eng, rec = engine
    n = 3000

    def flood(emit, control):
        for i in range(1, n + 1):
            emit(_report(i))
            if i % 100 == 0:
                time.sleep(0.01)
        emit(Stage("test", "done"))

    handle = eng.submit("train", flood)
    qtbot.waitUntil(lambda: rec.ended(handle.id), timeout=60_000)
    carrying = [e for e in rec.events if isinstance(e.event, TrainReport | TrainReportBatch)]
    assert [r.iteration for r in _reports(e.event for e in carrying)] == list(range(1, n + 1))
    made = [e.time for e in carrying]  # when each signal was made on the engine thread
    span = made[-1] - made[0]
    assert len(carrying) <= span / engine_module.REPORT_INTERVAL_S + 2
    assert any(isinstance(e.event, TrainReportBatch) for e in carrying)


def test_the_forwarder_sends_reports_at_most_once_per_interval_and_flushes_before_other_events():
    now = [0.0]
    sent = []
    forward = engine_module._Forwarder(sent.append, clock=lambda: now[0])
    for i in range(1, 6):
        forward(_report(i))
        now[0] += 0.01
    forward(Stage("test", "x"))
    assert sent[0] == _report(1)
    assert sent[1] == TrainReportBatch(tuple(_report(i) for i in range(2, 6)))
    assert sent[2] == Stage("test", "x")


def test_report_every_1_on_a_real_run_loses_no_report(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    handle = eng.train(fast_recipe(tiny_model, "iterations=30", "report_every=1", "eval_every=100",
                                   "save_every=100"), tmp_path / "run")
    qtbot.waitUntil(lambda: rec.ended(handle.id), timeout=120_000)
    assert [r.iteration for r in _reports(rec.of(handle.id))] == list(range(1, 31))
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in logged if r["event"] == "train"]
    assert [r["iteration"] for r in train_lines] == list(range(1, 31))
    assert [r["time"] for r in train_lines] == [round(r.time, 3) for r in _reports(rec.of(handle.id))]


# --- per-job MLX memory -------------------------------------------------------------------


@jobs.mlx_job
def _allocate(emit, control, *, megabytes):
    import mlx.core as mx

    a = mx.ones((megabytes * 250_000,), dtype=mx.float32)
    mx.eval(a)
    from macfinetune.backend import runtime

    return runtime.peak_memory_gb()


def test_a_job_after_a_bigger_one_reports_its_own_peak(engine, qtbot, tiny_model, tmp_path):
    eng, rec = engine
    big = eng.submit("big", _allocate, megabytes=400)
    small = eng.submit("small", _allocate, megabytes=4)
    train = eng.train(fast_recipe(tiny_model, "iterations=4"), tmp_path / "run")
    qtbot.waitUntil(lambda: rec.ended(train.id), timeout=120_000)
    big_peak, small_peak = rec.of(big.id)[-1].result, rec.of(small.id)[-1].result
    assert big_peak >= 0.4
    assert small_peak < 0.1
    assert max(r.peak_memory_gb for r in _reports(rec.of(train.id))) < 0.2


# --- imports ------------------------------------------------------------------------------


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in json.loads(out)}


def test_importing_the_engine_imports_no_mlx():
    loaded = _modules_after_import("macfinetune.engine")
    assert "PySide6" in loaded
    assert "mlx" not in loaded and "mlx_lm" not in loaded


def test_importing_the_cli_imports_no_qt_and_no_mlx():
    loaded = _modules_after_import("macfinetune.cli")
    assert "macfinetune" in loaded
    assert not loaded & {"PySide6", "pyqtgraph", "shiboken6", "mlx", "mlx_lm"}


class _Emitter(QObject):
    sig = Signal(object)


def test_thousands_of_signal_emits_do_not_crash(qtbot):
    """PySide6 6.12.0 on CPython 3.11 aborts after a few hundred emits (bool refcount bug)."""
    emitter, rec = _Emitter(), Recorder()
    emitter.sig.connect(rec.on_event)
    for i in range(5000):
        emitter.sig.emit(i)
    assert len(rec.events) == 5000
