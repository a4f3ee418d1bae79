"""The engine: one long-lived QThread that runs every MLX job, one at a time.

MLX streams are thread-local, so loading, training, fusing and generating all happen on
this thread. Jobs report through ``event`` (a ``Signal(object)`` carrying frozen event
dataclasses); slots of QObjects living in the GUI thread receive them on the GUI thread.
Stop and pause go through a ``JobControl`` the worker polls between steps and tokens.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QThread, Signal

from macfinetune.backend import fusing, generation, runtime, training
from macfinetune.core.control import JobControl
from macfinetune.core.events import JobFailed, JobFinished, JobStarted
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import Recipe
from macfinetune.core.sampling import Sampling

Job = Callable[[Callable[[object], None], JobControl], object]


@dataclass
class _Queued:
    name: str
    run: Job
    control: JobControl = field(default_factory=JobControl)


class Engine(QThread):
    """Start it once; submit jobs; ``shutdown()`` before the application quits."""

    event = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._jobs: queue.Queue[_Queued | None] = queue.Queue()
        self._current: _Queued | None = None

    # --- intent from the GUI thread -------------------------------------------------

    def submit(self, name: str, job: Job) -> JobControl:
        queued = _Queued(name, job)
        self._jobs.put(queued)
        return queued.control

    def train(self, recipe: Recipe, run_dir: Path, allow_over_budget: bool = False) -> JobControl:
        """Start a run; one the estimator says will not fit fails with a ``memory`` problem unless
        ``allow_over_budget`` (the user confirmed the override)."""
        return self.submit("train", lambda emit, control: training.train_run(recipe, run_dir, emit, control,
                                                                            allow_over_budget))

    def fuse(self, path: Path, which: str, out_dir: Path | None = None, **options) -> JobControl:
        return self.submit("fuse", lambda emit, control: emit(fusing.fuse(path, which, out_dir, emit=emit, **options)))

    def generate(self, model: str | None, adapter: tuple[Path, str] | None, prompt: str,
                 sampling: Sampling, compare: bool = False) -> JobControl:
        def job(emit, control):
            for result in generation.run_generate(model, adapter, prompt, sampling, compare=compare,
                                                  emit=emit, control=control):
                emit(result)

        return self.submit("generate", job)

    def stop_current(self) -> None:
        if self._current is not None:
            self._current.control.request_stop()

    def pause_current(self) -> None:
        if self._current is not None:
            self._current.control.pause()

    def resume_current(self) -> None:
        if self._current is not None:
            self._current.control.resume()

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        """Stop the running job, drop queued ones, end the thread; True when it ended."""
        self._drain()
        self.stop_current()
        self._jobs.put(None)
        return self.wait(timeout_ms) if self.isRunning() else True

    # --- the worker thread ----------------------------------------------------------

    def run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                self._run_one(job)
        finally:
            runtime.release_thread_resources()

    def _run_one(self, job: _Queued) -> None:
        self._current = job
        self.event.emit(JobStarted(job.name))
        try:
            job.run(self.event.emit, job.control)
        except ProblemError as e:
            self.event.emit(JobFailed(job.name, str(e), e.problems))
        except Exception as e:  # a job must never kill the engine thread
            self.event.emit(JobFailed(job.name, f"{type(e).__name__}: {e}"))
        finally:
            self._current = None
            self.event.emit(JobFinished(job.name))

    def _drain(self) -> None:
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                return
