"""Reading run folders off the GUI thread: one plain thread at a time (file reads, no MLX)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    """``run(kind, fn, done)`` calls ``fn()`` on a worker thread, then ``done(result or the exception)`` there (emit a
    Signal of a GUI-thread QObject from it). A request while busy runs after the current one; of
    several pending requests of one kind only the latest runs."""

    def __init__(self, name: str):
        self._name = name
        self._pending: dict[str, tuple[Callable, Callable]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.closed = False

    def run(self, kind: str, fn: Callable[[], object], done: Callable[[object], None]) -> None:
        with self._lock:
            if self.closed:
                return
            self._pending[kind] = (fn, done)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending or self.closed:
                    self._thread = None
                    return
                kind = next(iter(self._pending))
                fn, done = self._pending.pop(kind)
            try:
                result = fn()
            except Exception as e:  # a folder deleted mid-read, a permission problem: the page shows it
                result = e
            done(result)

    def wait(self, timeout: float = 10.0) -> None:
        """Until nothing is pending or running (tests, shutdown)."""
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                return
            thread.join(timeout)
            if thread.is_alive():
                return

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._pending.clear()
        self.wait()
