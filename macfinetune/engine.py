"""The engine: one long-lived QThread that runs every MLX job, one at a time.

MLX streams are thread-local, so loading, training, fusing and generating all happen on this
thread; MLX itself is imported there, lazily (importing this module imports no MLX). Jobs are the
plain functions of ``macfinetune.jobs`` (the CLI runs the same ones). ``event`` carries only
``JobEvent(job_id, job, event)`` values: the lifecycle (JobQueued, JobStarted, then one of
JobFinished, JobFailed, JobCancelled) and whatever the job emits. Train reports are forwarded at
most ~20 times a second; faster ones arrive together as one ``TrainReportBatch`` (in order, none
lost). Stop and pause go through each job's ``JobControl``, polled between steps and tokens.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QThread, Signal

from macfinetune.core.control import JobControl
from macfinetune.core.events import (
    JobCancelled,
    JobEvent,
    JobFailed,
    JobFinished,
    JobQueued,
    JobStarted,
    TrainReport,
    TrainReportBatch,
)
from macfinetune.core.problems import ProblemError

if TYPE_CHECKING:  # the window paints before recipes and jobs are imported
    from macfinetune.core.recipe import Recipe
    from macfinetune.core.sampling import Sampling

REPORT_INTERVAL_S = 0.05  # at most ~20 train-report signals a second

_UNFINISHED: list[Engine] = []  # engines whose shutdown timed out: kept alive until their thread ends


@dataclass(frozen=True)
class JobHandle:
    id: int
    name: str
    control: JobControl = field(compare=False)


@dataclass
class _Job:
    handle: JobHandle
    fn: Callable
    args: dict


class Engine(QThread):
    """Start it once; submit jobs; ``shutdown()`` before the application quits."""

    event = Signal(object)  # always a JobEvent

    def __init__(self, parent=None):
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._waiting: deque[_Job | None] = deque()
        self._current: JobHandle | None = None

    # --- intent from the GUI thread -------------------------------------------------

    def submit(self, name: str, fn: Callable, /, **args) -> JobHandle:
        """Queue ``fn(emit, control, **args)``; JobQueued is emitted now, JobStarted when it runs."""
        handle = JobHandle(next(self._ids), name, JobControl())
        self._send(handle, JobQueued())  # before the worker can see it, so JobQueued always comes first
        with self._lock:
            self._waiting.append(_Job(handle, fn, args))
            self._lock.notify()
        return handle

    def train(self, recipe: Recipe, run_dir: Path, allow_over_budget: bool = False) -> JobHandle:
        """Start a run; one the estimator says will not fit fails with a ``memory`` problem unless
        ``allow_over_budget`` (the user confirmed the override)."""
        return self.submit("train", _jobs().train, recipe=recipe, run_dir=run_dir, allow_over_budget=allow_over_budget)

    def resume(self, run_dir: Path) -> JobHandle:
        return self.submit("resume", _jobs().resume, run_dir=run_dir)

    def fuse(self, path: Path, which: str, out_dir: Path | None = None, **options) -> JobHandle:
        return self.submit("fuse", _jobs().fuse, path=path, which=which, out_dir=out_dir, **options)

    def generate(self, model: str | None, adapter: tuple[Path, str] | None, prompt: str,
                 sampling: Sampling, compare: bool = False, system: str | None = None) -> JobHandle:
        return self.submit("generate", _jobs().generate, model=model, adapter=adapter, prompt=prompt,
                           sampling=sampling, compare=compare, system=system)

    def download(self, repo_id: str, revision: str | None = None) -> JobHandle:
        return self.submit("download", _jobs().download, repo_id=repo_id, revision=revision)

    def convert(self, source: str, out_dir: Path | None = None, bits: int | None = None,
                group_size: int = 64) -> JobHandle:
        return self.submit("convert", _jobs().convert, source=source, out_dir=out_dir, bits=bits, group_size=group_size)

    def inspect_dataset(self, path, model: str | None = None, max_seq_length: int | None = None,
                        **options) -> JobHandle:
        if max_seq_length is not None:
            options["max_seq_length"] = max_seq_length
        return self.submit("inspect", _jobs().inspect_dataset, path=path, model=model, **options)

    def probe_machine(self) -> JobHandle:
        return self.submit("probe", _jobs().probe_machine)

    def estimate(self, recipe: Recipe, machine=None) -> JobHandle:
        return self.submit("estimate", _jobs().estimate, recipe=recipe, machine=machine)

    def current(self) -> JobHandle | None:
        return self._current

    def queued(self) -> list[JobHandle]:
        with self._lock:
            return [job.handle for job in self._waiting if job is not None]

    def cancel(self, job_id: int) -> bool:
        """A queued job is removed (it never runs; JobCancelled now); the running one is asked to stop
        (training saves a checkpoint). False when no such job is queued or running."""
        with self._lock:
            job = next((j for j in self._waiting if j is not None and j.handle.id == job_id), None)
            if job is not None:
                self._waiting.remove(job)
        if job is not None:
            job.handle.control.request_stop()
            self._send(job.handle, JobCancelled())
            return True
        current = self._current
        if current is not None and current.id == job_id:
            current.control.request_stop()
            return True
        return False

    def stop_current(self) -> None:
        if (current := self._current) is not None:
            current.control.request_stop()

    def pause_current(self) -> None:
        if (current := self._current) is not None:
            current.control.pause()

    def resume_current(self) -> None:
        if (current := self._current) is not None:
            current.control.resume()

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        """Cancel queued jobs, stop the running one (training saves a checkpoint, a fuse stops between
        stages or finishes its atomic save), end the thread and wait for it. True when it ended.

        False when the job did not end within ``timeout_ms``: the thread still runs (it ends when the job
        does, since stop was requested), and the engine keeps itself referenced so that Qt never destroys
        a running thread; call ``shutdown``/``wait`` again before quitting."""
        for handle in self.queued():
            self.cancel(handle.id)
        self.stop_current()
        with self._lock:
            self._waiting.append(None)
            self._lock.notify()
        if not self.isRunning() or self.wait(timeout_ms):
            if self in _UNFINISHED:
                _UNFINISHED.remove(self)
            return True
        if self not in _UNFINISHED:
            _UNFINISHED.append(self)
        return False

    # --- the worker thread ----------------------------------------------------------

    def run(self) -> None:
        try:
            while (job := self._next()) is not None:
                self._run_one(job)
        finally:
            from macfinetune.backend import runtime

            runtime.release_thread_resources()

    def _next(self) -> _Job | None:
        with self._lock:
            while not self._waiting:
                self._lock.wait()
            return self._waiting.popleft()

    def _run_one(self, job: _Job) -> None:
        handle = job.handle
        self._current = handle
        forward = _Forwarder(lambda event: self._send(handle, event))
        forward(JobStarted())
        from macfinetune.jobs import Cancelled

        try:
            result = job.fn(forward, handle.control, **job.args)
            end = JobFinished(result)
        except Cancelled:
            end = JobCancelled()
        except ProblemError as e:
            end = JobFailed(str(e), tuple(e.problems))
        except Exception as e:  # a job must never kill the engine thread
            end = JobFailed(f"{type(e).__name__}: {e}")
        self._current = None
        forward(end)

    def _send(self, handle: JobHandle, event: object) -> None:
        self.event.emit(JobEvent(handle.id, handle.name, event))


class _Forwarder:
    """A job's ``emit``: other events pass at once; train reports at most every REPORT_INTERVAL_S.
    Those that come faster are held and go together as one TrainReportBatch, in order: before the
    next other event, or when the interval is over (a timer), whichever comes first."""

    def __init__(self, send: Callable[[object], None], clock=time.monotonic, timers: bool = True):
        self._send, self._clock, self._timers = send, clock, timers
        self._lock = threading.Lock()
        self._held: list[TrainReport] = []
        self._last = float("-inf")
        self._timer: threading.Timer | None = None

    def __call__(self, event: object) -> None:
        with self._lock:
            if not isinstance(event, TrainReport):
                self._flush()
                self._send(event)
                return
            self._held.append(event)
            wait = REPORT_INTERVAL_S - (self._clock() - self._last)
            if wait <= 0:
                self._flush()
            elif self._timers and self._timer is None:
                self._timer = threading.Timer(wait + 0.001, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._held:
            return
        held, self._held = self._held, []
        self._last = self._clock()
        self._send(held[0] if len(held) == 1 else TrainReportBatch(tuple(held)))


def _jobs():
    """``macfinetune.jobs``, imported when the first job is submitted (not before the window paints)."""
    from macfinetune import jobs

    return jobs
