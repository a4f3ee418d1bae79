"""What every command shares: exit codes, the stop-on-Ctrl-C/SIGTERM handler, problem printing."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path

from macfinetune.core import paths, runs
from macfinetune.core.control import JobControl
from macfinetune.core.problems import ProblemError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 130


def shell_command(*words) -> str:
    """A command line to copy into a shell, each word quoted where needed (on a Mac every default
    run folder is under "~/Library/Application Support")."""
    return shlex.join(str(word) for word in words)


def run_folder(text: str) -> Path:
    """A RUN_DIR argument: a path, or a run's name in the runs folder (as ``macfinetune runs`` lists it)."""
    return runs.locate_run(Path(text), paths.runs_home())


def print_problems(error: ProblemError) -> None:
    for problem in error.problems:
        print(f"error: {problem}", file=sys.stderr)


class StopOnCtrlC:
    """First Ctrl-C (or SIGTERM: ``timeout``, ``kill``, logout): ask the job to stop cleanly
    (saying ``message``); a second one aborts. ``exit_code`` is 143 after a SIGTERM, else 130."""

    def __init__(self, control: JobControl, message: str = ""):
        self.control = control
        self.message = message
        self.signum: int | None = None

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.control.stop_requested:
            raise KeyboardInterrupt
        self.signum = signum
        if self.message:
            print(self.message if signum == signal.SIGINT else self._terminated(), file=sys.stderr)
        self.control.request_stop()

    def _terminated(self) -> str:
        """The message without its Ctrl-C hint: whoever sent SIGTERM is not at the keyboard."""
        return f"\nSIGTERM: {self.message.strip().split(' (')[0]}"

    @property
    def exit_code(self) -> int:
        return 128 + signal.SIGTERM if self.signum == signal.SIGTERM else EXIT_STOPPED

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def stop_on_ctrl_c(control: JobControl) -> StopOnCtrlC:
    """First Ctrl-C (or SIGTERM): stop after the current step and save; a second one aborts."""
    return StopOnCtrlC(control, "\nstopping after this step (Ctrl-C again to abort)...")


def stopped_by(stopper: StopOnCtrlC, code: int) -> int:
    """A run stopped by SIGTERM exits 143, by Ctrl-C 130."""
    return stopper.exit_code if code == EXIT_STOPPED else code
