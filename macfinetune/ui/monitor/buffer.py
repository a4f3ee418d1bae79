"""The Monitor's data: growable numpy series and the run's state, fed by events. No Qt.

Panels read ``Series.view()``; the redraw timer asks ``version`` whether anything changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from macfinetune.core import events, progress
from macfinetune.core.events import Heartbeat, JobFailed, MemorySample, TrainReportBatch

SERIES = ("train_loss", "val_loss", "learning_rate", "tokens_per_second", "iterations_per_second",
          "mem_active", "mem_cache", "mem_peak", "mem_process", "mem_system", "mem_swap",
          "real_tokens_per_second",
          # preference runs (DPO, ORPO): held-out pairs at every validation
          "pref_rewards_chosen", "pref_rewards_rejected", "pref_reward_margin", "pref_accuracy",
          "pref_likelihood_accuracy", "pref_train_reward_margin", "pref_train_accuracy")


class Series:
    """x/y float arrays that double when full; ``view()`` is the filled part (no copy)."""

    def __init__(self, capacity: int = 1024):
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self.n = 0
        self.changes = 0  # grows on every append or set: a panel redraws a curve only when it moved

    def append(self, x: float, y: float) -> None:
        """Amortized O(1): the arrays double when full."""
        if self.n == len(self._x):
            self._x = np.resize(self._x, 2 * self.n)
            self._y = np.resize(self._y, 2 * self.n)
        self._x[self.n], self._y[self.n] = x, y
        self.n += 1
        self.changes += 1

    def set(self, x, y) -> None:
        """Replace the contents (a new object identity is not made: callers that cache must compare ``n``)."""
        self._x, self._y = np.asarray(x, float).copy(), np.asarray(y, float).copy()
        self.n = len(self._x)
        self.changes += 1

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x[: self.n], self._y[: self.n]

    def last(self) -> float | None:
        return float(self._y[self.n - 1]) if self.n else None


@dataclass
class RunState:
    """What the progress line, the labels and the warnings show."""

    state: str = "idle"
    run_dir: str = ""
    method: str = ""
    total: int = 0
    epochs: float = 0.0
    iteration: int = 0
    start_iteration: int = 0  # where this job began: a continued run's checkpoint
    continuing: bool = False  # RunContinued came; the RunStarted the resume job writes next starts no new run
    started_at: float | None = None
    job_elapsed_s: float = 0.0  # elapsed when this job began: the ETA is at this job's pace
    now: float | None = None
    paused_s: float = 0.0
    paused_at: float | None = None
    train_loss: float | None = None
    first_loss: float | None = None
    best: tuple[int, float] | None = None
    budget_gb: float | None = None
    estimate_gb: float | None = None
    pressure: str = "green"
    swap_start: float | None = None
    message: str = ""
    problems: tuple = ()
    warnings: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    objective: str = ""  # dpo or orpo once a PreferenceReport arrived: the Monitor shows the reward panels


class MetricsBuffer:
    """Applies training events to the series and the state; ``version`` grows on every change."""

    def __init__(self):
        self._received: float | None = None
        self.reset()

    def reset(self) -> None:
        self.series = {name: Series() for name in SERIES}
        self.run = RunState()
        self.hosts: dict[int, events.HostSample] = {}  # a run on several Macs: the latest sample per rank
        self.version = 0

    def apply(self, event, received: float | None = None) -> None:
        """Apply one event; ``received`` (arrival time) stands in for events made without a time."""
        handler = _HANDLERS.get(type(event))
        if handler is None:
            return
        self._received = received
        handler(self, event)
        self._stamp(event)
        line = progress.describe(event)
        if line:
            self.run.log.append(line)
        self.version += 1

    def _time(self, event) -> float | None:
        t = getattr(event, "time", None)
        return t if t is not None else self._received

    def _stamp(self, event) -> None:
        t = self._time(event)
        if t is not None:
            self.run.now = t if self.run.now is None else max(self.run.now, t)

    # --- derived numbers (computed in core) -------------------------------------------

    def elapsed_s(self) -> float | None:
        r = self.run
        if r.started_at is None or r.now is None:
            return None
        paused = r.paused_s + ((r.now - r.paused_at) if r.paused_at is not None else 0.0)
        return max(0.0, r.now - r.started_at - paused)

    def left_s(self) -> float | None:
        r = self.run
        elapsed = (self.elapsed_s() or 0.0) - r.job_elapsed_s
        return progress.eta_seconds(r.iteration, r.total, elapsed, r.start_iteration)

    def progress_line(self) -> str:
        r = self.run
        return progress.progress_line(r.state, r.iteration, r.total, self.elapsed_s(), self.left_s())

    def warn(self, text: str) -> None:
        if text not in self.run.warnings:
            self.run.warnings.append(text)
            self.run.log.append("Warning: " + text)

    # --- handlers ---------------------------------------------------------------------

    def _on_started(self, e) -> None:
        if not (self.run.continuing and self.run.run_dir == e.run_dir):
            self.reset()
            self.run.started_at = self._time(e)
        r = self.run
        r.state, r.run_dir, r.method, r.total, r.epochs = "running", e.run_dir, e.method, e.iterations, e.epochs
        r.continuing = False

    def _on_continued(self, e) -> None:
        """A stopped or interrupted run goes on from checkpoint ``e.iteration``: its history (replayed before this,
        as ``runs.read_metrics`` rewinds it to the checkpoint) stays and the clock runs on from the first start."""
        if self.run.run_dir != e.run_dir:
            self.reset()
        r = self.run
        r.state, r.run_dir, r.iteration, r.start_iteration = "running", e.run_dir, e.iteration, e.iteration
        r.continuing, r.paused_at = True, None
        if r.started_at is None:
            r.started_at = self._time(e)
        self._stamp(e)
        r.job_elapsed_s = self.elapsed_s() or 0.0

    def _on_train(self, e) -> None:
        r = self.run
        r.total, r.iteration, r.train_loss = e.total_iterations, e.iteration, e.train_loss
        if r.state in ("idle", "interrupted"):
            r.state = "running"
        if r.started_at is None:
            r.started_at = self._time(e)
        if r.first_loss is None and math.isfinite(e.train_loss):
            r.first_loss = e.train_loss
        s = self.series
        s["train_loss"].append(e.iteration, e.train_loss)
        s["learning_rate"].append(e.iteration, e.learning_rate)
        s["tokens_per_second"].append(e.iteration, e.tokens_per_second)
        s["iterations_per_second"].append(e.iteration, e.iterations_per_second)
        if getattr(e, "real_tokens_per_second", None) is not None:
            s["real_tokens_per_second"].append(e.iteration, e.real_tokens_per_second)
        if progress.is_exploding(e.train_loss, r.first_loss):
            self.warn(f"The loss is {e.train_loss:.3g} at iteration {e.iteration} (NaN or exploding): "
                      "lower the learning rate")

    def _on_batch(self, e) -> None:
        for report in e.reports:
            self._on_train(report)

    def _on_val(self, e) -> None:
        self.series["val_loss"].append(e.iteration, e.val_loss)
        if math.isfinite(e.val_loss) and (self.run.best is None or e.val_loss < self.run.best[1]):
            self.run.best = (e.iteration, e.val_loss)

    def _on_checkpoint(self, e) -> None:
        if e.is_best and e.val_loss is not None:
            self.run.best = (e.iteration, e.val_loss)

    def _on_memory(self, e) -> None:
        r = self.run
        x = self._seconds(e)
        s = self.series
        for name, value in (("mem_active", e.active_gb), ("mem_cache", e.cache_gb), ("mem_peak", e.peak_gb),
                            ("mem_process", e.process_gb), ("mem_system", e.system_used_gb),
                            ("mem_swap", e.swap_used_gb)):
            if value is not None:
                s[name].append(x, value)
        r.budget_gb, r.estimate_gb = e.budget_gb or r.budget_gb, e.estimate_gb or r.estimate_gb
        r.pressure = progress.pressure_level(progress.memory_in_use(e), r.budget_gb)
        self._check_memory(e)

    def _check_memory(self, e) -> None:
        r = self.run
        if r.pressure != "green":
            self.warn(f"Memory pressure {r.pressure}: {progress.memory_in_use(e):.1f} GB in use "
                      f"of a {r.budget_gb:.1f} GB budget")
        r.swap_start = e.swap_used_gb if r.swap_start is None else r.swap_start
        if e.swap_used_gb - r.swap_start > 0.5:
            self.warn(f"Swap is growing: {e.swap_used_gb:.1f} GB used (was {r.swap_start:.1f} GB)")

    def _seconds(self, e) -> float:
        t = self._time(e)
        if t is None or self.run.started_at is None:
            return float(e.iteration)
        return t - self.run.started_at

    def _on_heartbeat(self, e) -> None:
        self.run.iteration = max(self.run.iteration, e.iteration)

    def _on_paused(self, e) -> None:
        self.run.state, self.run.paused_at = "paused", self._time(e)
        self.run.iteration = max(self.run.iteration, e.iteration)  # reports come every N steps; the pause is exact
        if e.reason:
            self.warn(f"Paused: {e.reason}")

    def _on_resumed(self, e) -> None:
        r = self.run
        r.state = "running"
        now = self._time(e)
        if r.paused_at is not None and now is not None:
            r.paused_s += now - r.paused_at
        r.paused_at = None

    def _on_finished(self, e) -> None:
        r = self.run
        r.state, r.iteration, r.message = ("stopped" if e.stopped else "finished"), e.iteration, e.reason
        if e.best_iteration is not None and e.best_val_loss is not None:
            r.best = (e.best_iteration, e.best_val_loss)

    def _on_host(self, e) -> None:
        self.hosts[e.rank] = e

    def _on_failed(self, e) -> None:
        if self.run.state == "failed" and self.run.message:
            return  # the job's failure repeats the run's
        self.run.state, self.run.message, self.run.problems = "failed", e.message, tuple(e.problems)


def _on_preference(buffer: MetricsBuffer, e) -> None:
    buffer.run.objective = e.objective
    if e.split == "train":  # the batch of a report step, before its update
        for name in ("reward_margin", "accuracy"):
            buffer.series[f"pref_train_{name}"].append(e.iteration, getattr(e, name))
        return
    for name in ("rewards_chosen", "rewards_rejected", "reward_margin", "accuracy", "likelihood_accuracy"):
        buffer.series[f"pref_{name}"].append(e.iteration, getattr(e, name))


_HANDLERS = {
    events.RunStarted: MetricsBuffer._on_started,
    events.RunContinued: MetricsBuffer._on_continued,
    events.TrainReport: MetricsBuffer._on_train,
    TrainReportBatch: MetricsBuffer._on_batch,
    events.ValReport: MetricsBuffer._on_val,
    events.CheckpointSaved: MetricsBuffer._on_checkpoint,
    MemorySample: MetricsBuffer._on_memory,
    Heartbeat: MetricsBuffer._on_heartbeat,
    events.HostSample: MetricsBuffer._on_host,
    events.RunPaused: MetricsBuffer._on_paused,
    events.RunResumed: MetricsBuffer._on_resumed,
    events.RunFinished: MetricsBuffer._on_finished,
    events.RunFailed: MetricsBuffer._on_failed,
    JobFailed: MetricsBuffer._on_failed,
    events.PreferenceReport: _on_preference,
}
