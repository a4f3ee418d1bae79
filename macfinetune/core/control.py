"""Stop and pause requests for a running job, checked by the worker between steps."""

from __future__ import annotations

import threading


class JobControl:
    """Thread-safe flags: the GUI (or a signal handler) sets them, the worker polls them."""

    def __init__(self, pause_on_trouble: bool = True) -> None:
        # On trouble (memory pressure, a failed save) a job with someone to resume it pauses;
        # a headless one stops, keeping its checkpoint, so it can be resumed later.
        self.pause_on_trouble = pause_on_trouble
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused worker wakes up to stop

    def pause(self) -> None:
        if not self._stop.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def wait_while_paused(self, timeout: float | None = None) -> None:
        self._running.wait(timeout)
