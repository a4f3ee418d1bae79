"""Atomic writes: write a temporary file beside the target, flush, fsync, rename.

Test-only fault injection: with ``MACFINETUNE_FAULT=<point>:<n>`` in the environment, the process
SIGKILLs itself the n-th time it reaches ``<point>`` (one of ``FAULT_POINTS``). Unset, a write
point costs one global lookup. ``tests/reliability/test_faults.py`` kills a training run at every
point, checks what is left on disk and resumes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

FAULT_ENV = "MACFINETUNE_FAULT"
_PHASES = ("temp-written", "before-rename", "renamed")  # what write_atomically passes through
# Every write point of a run, in one place: a new point must be added here, and then it is tested.
# Files written with write_atomically(label=...) contribute "<label>.<phase>" for each phase.
ATOMIC_LABELS = ("status", "checkpoint-adapters", "final-adapters", "optimizer", "commit-marker")
FAULT_POINTS = tuple(f"{label}.{phase}" for label in ATOMIC_LABELS for phase in _PHASES) + (
    "metrics.partial-line",  # half a line appended and flushed: a torn last line
    "metrics.line-written",
    "prune.marker-removed",  # an old checkpoint's commit marker deleted, its weight files not yet
)

_UMASK = os.umask(0o022)  # reading the umask means setting it: read once, at import (one thread), and put back
os.umask(_UMASK)

_armed: tuple[str, int] | None = None
_parsed = False
_hits = 0


def fault_point(point: str, before_kill: Callable[[], None] | None = None) -> None:
    """Test-only: SIGKILL this process when MACFINETUNE_FAULT names this point and hit count."""
    global _hits
    armed = _armed if _parsed else _parse_fault()
    if armed is None or armed[0] != point:
        return
    _hits += 1
    if _hits == armed[1]:
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)


def _label_point(label: str, phase: str) -> None:
    if label:
        fault_point(f"{label}.{phase}")


def _parse_fault() -> tuple[str, int] | None:
    global _armed, _parsed
    value = os.environ.get(FAULT_ENV, "")
    _parsed = True
    if value:
        point, _, n = value.rpartition(":")
        if point not in FAULT_POINTS or not n.isdigit():
            raise ValueError(f"{FAULT_ENV}={value!r}: expected <point>:<n> with a point of {FAULT_POINTS}")
        _armed = (point, int(n))
    return _armed


def write_atomically(path: Path, write: Callable[[Path], None], suffix: str = ".tmp", label: str = "") -> None:
    """Call ``write(tmp)`` for a temporary path in the same folder, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never half of one.
    ``label`` names the file's fault points (test-only, see ``FAULT_POINTS``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file gets the mode any new file would
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        _label_point(label, "temp-written")
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        _label_point(label, "before-rename")
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    _label_point(label, "renamed")


def copy_atomically(source: Path, path: Path, label: str = "") -> None:
    """``path`` becomes a copy of ``source``, atomically; on APFS a clone that shares the blocks.

    A clone (``clonefile``) costs no time and no disk until one of the two files is rewritten, and
    neither ever sees the other's writes, unlike a hard link. Elsewhere the bytes are copied.
    """
    write_atomically(path, lambda tmp: _clone_or_copy(Path(source), tmp), suffix=Path(path).suffix, label=label)


def _clone_or_copy(source: Path, dest: Path) -> None:
    if sys.platform == "darwin":
        import ctypes

        dest.unlink(missing_ok=True)  # clonefile creates the file itself
        clonefile = getattr(ctypes.CDLL(None), "clonefile", None)  # macOS 10.12+
        if clonefile is not None and clonefile(os.fsencode(source), os.fsencode(dest), 0) == 0:
            return
    shutil.copyfile(source, dest)  # not APFS (or an older macOS): the bytes


def write_text(path: Path, text: str, label: str = "") -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), label=label)


def write_json(path: Path, obj, label: str = "") -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", label=label)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
