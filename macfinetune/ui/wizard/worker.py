"""Long work off the GUI thread (folder scans, reading and tokenizing data): one QThread per job.

A job is ``fn(report, cancelled) -> result``; ``report(value)`` sends partial results to the GUI
thread (``progress``), ``cancelled()`` tells it to stop early. No MLX runs here (MLX stays on the
engine thread); the jobs are plain Python and the fast tokenizer.
"""

from __future__ import annotations

import atexit
import gc
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager

from PySide6.QtCore import QThread, Signal

from macfinetune.core.problems import ProblemError

# Workers are nobody's children: a window that is deleted must never destroy a running thread.
# Each one is kept here until its thread has ended.
_LIVE: set[Worker] = set()
_EXIT_HOOK: list = []  # stop_live, registered with atexit once the first worker exists


def stop_live() -> None:
    """Cancel and wait for every worker still running (at exit: never destroy a running QThread)."""
    for worker in list(_LIVE):
        stop(worker)


class Worker(QThread):
    progress = Signal(object)
    done = Signal(object)  # the result
    failed = Signal(str)  # a ProblemError's words (never a traceback)

    def __init__(self, fn: Callable):
        super().__init__(None)
        self._fn = fn
        self._cancel = threading.Event()
        if not _LIVE and not _EXIT_HOOK:
            _EXIT_HOOK.append(atexit.register(stop_live))
        _LIVE.add(self)
        self.finished.connect(self._forget)  # delivered on the GUI thread, where this object lives

    def _forget(self) -> None:
        self.wait()
        _LIVE.discard(self)

    def cancel(self) -> None:
        self._cancel.set()

    def run(self) -> None:
        try:
            result = self._fn(self.progress.emit, self._cancel.is_set)
        except ProblemError as e:
            self.failed.emit(str(e))
            return
        except Exception as e:  # a broken file must not take the window down
            self.failed.emit(f"{type(e).__name__}: {e}")
            return
        if not self._cancel.is_set():
            self.done.emit(result)


@contextmanager
def quiet_gc(collect_young: bool = False):
    """Read a big dataset without stalling the GUI thread on garbage collection.

    Reading 100,000 rows makes about a million long-lived objects; each full collection of that
    growing heap holds the GIL for up to 200 ms (measured: bench/gui_wizard.py), which freezes the
    window. The cyclic collector is paused while reading, and what was read is then moved out of
    its reach (``gc.freeze``): rows hold no reference cycles, so reference counting still frees
    them when they are dropped. ``collect_young`` first collects the young generations (a small
    step's temporaries, which may hold cycles) so that no cyclic garbage is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collect_young:
            gc.collect(1)
        gc.freeze()
        if enabled:
            gc.enable()


def retire(worker: Worker | None) -> None:
    """Cancel a worker without waiting: its results are dropped, and its thread ends on its own
    (the GUI never blocks on a file that is still being read). ``stop_all`` waits for it later."""
    if worker is None:
        return
    worker.cancel()
    with warnings.catch_warnings():  # PySide warns when a signal had no connection to drop
        warnings.simplefilter("ignore", RuntimeWarning)
        for signal in (worker.progress, worker.done, worker.failed):
            try:
                signal.disconnect()
            except (RuntimeError, TypeError):
                pass


def stop_all(workers: list[Worker]) -> None:
    """Cancel and wait for every worker started by a step (the page's shutdown)."""
    for worker in workers:
        stop(worker)
    workers.clear()


def running() -> list[Worker]:
    """Workers whose thread has not ended (tests check that none is left)."""
    return [w for w in _LIVE if w.isRunning()]


def stop(worker: Worker | None, timeout_ms: int = 30_000) -> None:
    """Cancel a worker and wait for its thread to end (never leave a QThread running)."""
    if worker is None:
        return
    worker.cancel()
    worker.wait(timeout_ms)
