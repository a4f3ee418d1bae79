"""Training health and trouble: NaN, early stopping, keep-N, disk full, memory pressure."""

import errno
import math
import threading
import types
from collections import namedtuple

import pytest
from conftest import fast_recipe

from macfinetune.backend import adapters, loop
from macfinetune.backend.training import resume_run, train_run
from macfinetune.core import health, runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import (
    CheckpointSaved,
    Heartbeat,
    MemorySample,
    RunFailed,
    RunFinished,
    RunPaused,
    RunResumed,
    TrainReport,
)


def test_loss_rules():
    assert "became nan" in health.loss_problem(math.nan, 2.0, 10, 1e-3)
    assert "try 0.0001" in health.loss_problem(math.inf, 2.0, 10, 1e-3)
    assert "exploded from 2.000 to 7.000" in health.loss_problem(7.0, 2.0, 10, 1e-3)
    assert health.loss_problem(7.0, 2.0, 2, 1e-3) is None  # too early to judge
    assert health.loss_problem(2.5, 2.0, 10, 1e-3) is None


def test_memory_rules():
    gb = health.GB
    assert health.memory_danger(8 * gb, 16 * gb, 0) is None
    assert "nearly full" in health.memory_danger(int(0.5 * gb), 16 * gb, 0)
    assert "swapped 5.0 GB" in health.memory_danger(8 * gb, 16 * gb, 5 * gb)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model, tmp_path, monkeypatch):
    real = loop.StepHook.on_train_loss_report

    def inject(self, info):
        if self.offset + info["iteration"] == 7:
            info = {**info, "train_loss": math.nan}
        return real(self, info)

    monkeypatch.setattr(loop.StepHook, "on_train_loss_report", inject)
    events = []
    result = train_run(fast_recipe(tiny_model, "save_every=4"), tmp_path / "run", events.append)
    assert result.state == "failed" and "training loss became nan" in result.message
    assert "learning rate" in result.message
    failed = next(e for e in events if isinstance(e, RunFailed))
    assert "nan" in failed.message
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "run")] == [4]
    assert runs.read_status(tmp_path / "run").state == "failed"


def test_early_stopping_keeps_the_best(tiny_model, tmp_path):
    events = []
    result = train_run(fast_recipe(tiny_model, "iterations=200", "eval_every=2", "save_every=2",
                                   "early_stopping_patience=2", "early_stopping_min_delta=10.0"),
                       tmp_path / "run", events.append)
    assert result.state == "finished" and "early stopping" in result.message
    assert result.iteration < 20
    finish = next(e for e in events if isinstance(e, RunFinished))
    assert "early stopping" in finish.reason and not finish.stopped


def test_keep_only_the_best_n_checkpoints(tiny_model, tmp_path):
    events = []
    train_run(fast_recipe(tiny_model, "iterations=12", "save_every=2", "keep_checkpoints=2"), tmp_path / "run",
              events.append)
    saved = {e.iteration: e.val_loss for e in events if isinstance(e, CheckpointSaved)}
    best_two = sorted(saved, key=saved.get)[:2]
    left = {c.iteration for c in runs.complete_checkpoints(tmp_path / "run")}
    assert left == set(best_two) | {12}
    assert runs.resolve_checkpoint(tmp_path / "run", "best")[1] == best_two[0]


def _failing_disk(monkeypatch, fail_at):
    real = adapters.save_checkpoint

    def save(run_dir, iteration, model, optimizer):
        if iteration in fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(run_dir, iteration, model, optimizer)

    monkeypatch.setattr(adapters, "save_checkpoint", save)


def test_disk_full_headless_stops_with_the_previous_checkpoint_intact(tiny_model, tmp_path, monkeypatch):
    _failing_disk(monkeypatch, {8, 12})
    result = train_run(fast_recipe(tiny_model), tmp_path / "run", lambda e: None, JobControl(pause_on_trouble=False))
    assert result.state == "stopped" and "No space left on device" in result.message
    assert "previous checkpoint is intact" in result.message
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "run")] == [4]
    monkeypatch.undo()
    assert resume_run(tmp_path / "run", lambda e: None).state == "finished"


def test_disk_full_in_the_app_pauses_with_a_message_and_resumes(tiny_model, tmp_path, monkeypatch):
    _failing_disk(monkeypatch, {4})
    control, events = JobControl(), []

    def emit(event):
        events.append(event)
        if isinstance(event, RunPaused):
            assert runs.read_status(tmp_path / "run").state == "paused"
            threading.Timer(0.2, control.resume).start()

    result = train_run(fast_recipe(tiny_model), tmp_path / "run", emit, control)
    paused = next(e for e in events if isinstance(e, RunPaused))
    assert "could not save checkpoint 4" in paused.reason
    assert result.state == "finished"
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "run")] == [8, 12]


Memory = namedtuple("Memory", "total available")


@pytest.fixture
def pressure(monkeypatch):
    """psutil reports low memory to the watch thread once ``on`` is set; ``judged`` is set at the
    watch's second low reading, by when it has judged the first. The watch samples every 20 ms."""
    import psutil

    state = types.SimpleNamespace(on=threading.Event(), judged=threading.Event(), low_reads=0)

    def fake_memory():
        if not state.on.is_set():
            return Memory(16 * health.GB, 8 * health.GB)
        if threading.current_thread().name == "macfinetune-watch":
            state.low_reads += 1
            if state.low_reads >= 2:
                state.judged.set()
        return Memory(16 * health.GB, health.GB // 4)

    monkeypatch.setattr(psutil, "virtual_memory", fake_memory)
    monkeypatch.setattr(loop, "SAMPLE_SECONDS", 0.02)
    return state


def _pressure_after(monkeypatch, pressure, iteration):
    """Memory runs out during step ``iteration``: the step ends once the watch has judged it."""
    real = loop.StepHook.on_train_loss_report

    def hooked(self, info):
        if self.offset + info["iteration"] == iteration:
            pressure.on.set()
            if not pressure.judged.wait(30):
                raise RuntimeError("the watch never sampled")
        return real(self, info)

    monkeypatch.setattr(loop.StepHook, "on_train_loss_report", hooked)


def test_memory_pressure_seen_on_time_saves_then_stops_headless_at_the_update_boundary(
        tiny_model, tmp_path, monkeypatch, pressure):
    _pressure_after(monkeypatch, pressure, 5)
    events = []
    result = train_run(fast_recipe(tiny_model, "iterations=40", "save_every=20", "report_every=1000",
                                   "eval_every=1000", "grad_accumulation=2"),
                       tmp_path / "run", events.append, JobControl(pause_on_trouble=False))
    assert result.state == "stopped" and "memory is nearly full" in result.message
    assert "batch_size" in result.message
    # seen during step 5 (no report was due), acted on at the next update boundary: step 6
    assert result.iteration == 6
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "run")] == [6]
    assert not [e for e in events if isinstance(e, TrainReport)]
    watched = [e for e in events if isinstance(e, MemorySample)]
    assert watched and all(e.active_gb is None for e in watched)
    assert any(e.system_used_gb == pytest.approx(16 * health.GB / 1e9 - 0.25 * health.GB / 1e9) for e in watched)


def test_memory_pressure_in_the_app_pauses_after_the_step_and_resumes(tiny_model, tmp_path, monkeypatch,
                                                                      pressure):
    _pressure_after(monkeypatch, pressure, 5)
    monkeypatch.setattr(loop, "HEARTBEAT_SECONDS", 0.04)
    control, events, states = JobControl(), [], []

    def emit(event):
        events.append(event)
        if isinstance(event, RunPaused):
            states.append(runs.read_status(tmp_path / "run").state)
            pressure.on.clear()
            threading.Timer(0.2, control.resume).start()

    result = train_run(fast_recipe(tiny_model, "report_every=1000"), tmp_path / "run", emit, control)
    paused = [e for e in events if isinstance(e, RunPaused)]
    assert len(paused) == 1 and paused[0].iteration == 5 and "memory is nearly full" in paused[0].reason
    assert states == ["paused"]
    kinds = [type(e) for e in events]
    during_pause = kinds[kinds.index(RunPaused):kinds.index(RunResumed)]
    assert Heartbeat in kinds and Heartbeat not in during_pause  # no heartbeat while paused
    assert result.state == "finished" and result.iteration == 12
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "run")] == [4, 5, 8, 12]


def test_memory_limit_is_a_guideline_not_a_wall():
    """Why the pressure watch exists: MLX allocates past its memory limit (MLX documents that
    allocations fail only when memory including swap is exhausted)."""
    import mlx.core as mx

    previous = mx.set_memory_limit(1_000_000)  # 1 MB
    try:
        big = mx.ones((4_000_000,), dtype=mx.float32)  # 16 MB
        mx.eval(big)
        assert big.sum().item() == 4_000_000
    finally:
        mx.set_memory_limit(previous)


def test_keep_awake(monkeypatch):
    import subprocess
    import sys

    from macfinetune.backend import hardware

    started = []
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(subprocess, "Popen", lambda args: started.append(args) or _FakeProc())
    with hardware.keep_awake() as proc:
        assert started[0][:2] == ["caffeinate", "-i"] and "-d" not in started[0]
    assert proc.terminated


class _FakeProc:
    terminated = False

    def terminate(self):
        self.terminated = True

    def wait(self, timeout=None):
        return 0
