"""Crash reports a user can attach to a bug report: written to the data folder, offered at the next launch.

A report holds what helps to fix the bug and nothing private: the exception's type, the frames (file, line,
function, our source line), versions and the platform. No local variables, no environment, no tokens (Hugging
Face tokens are redacted wherever they appear), and no dataset content: quoted text in the exception's message
(where a row's value would appear) is replaced by its length. Hard crashes (a fault inside a native library)
are caught by ``faulthandler`` into a ``fault-*.log`` that is kept only when something was written to it.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import atomic, paths

TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
QUOTED = re.compile(r"(['\"])(.{3,}?)\1", re.DOTALL)
MAX_MESSAGE = 400


def reports_home() -> Path:
    return paths.data_home() / "crash-reports"


def scrub(text: str) -> str:
    """Tokens and quoted values out; what is left is the message's words and numbers."""
    text = TOKEN.sub("hf_<redacted>", text)
    text = QUOTED.sub(lambda m: f"{m.group(1)}<{len(m.group(2))} chars>{m.group(1)}", text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " …"


def format_report(exc_type, exc, tb, versions: dict[str, str], context: str = "") -> str:
    frames = traceback.extract_tb(tb)
    lines = [f"macfinetune crash report, {time.strftime('%Y-%m-%d %H:%M:%S')}",
             f"platform: {platform.platform()} ({platform.machine()}), Python {platform.python_version()}",
             *(f"{name}: {version}" for name, version in sorted(versions.items()))]
    if context:
        lines.append(f"while: {scrub(context)}")
    lines += ["", f"{exc_type.__name__}: {scrub(str(exc))}", "traceback (most recent call last):"]
    lines += [f"  {_short(f.filename)}:{f.lineno} in {f.name}: {scrub((f.line or '').strip())}" for f in frames]
    return "\n".join(lines) + "\n"


def _short(filename: str) -> str:
    """Paths from site-packages onwards (never the user's home folder)."""
    for marker in ("site-packages" + os.sep, "macfinetune" + os.sep):
        if marker in filename:
            return filename[filename.index(marker):]
    return Path(filename).name


def write_report(text: str, folder: Path | None = None) -> Path:
    folder = folder or reports_home()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    atomic.write_text(path, text)
    return path


@dataclass(frozen=True)
class PendingReport:
    path: Path
    text: str


def pending_reports(folder: Path | None = None) -> list[PendingReport]:
    """Reports not yet offered, newest first; empty fault logs (no hard crash happened) are removed."""
    folder = folder or reports_home()
    if not folder.is_dir():
        return []
    for fault in folder.glob("fault-*.log"):
        if fault.stat().st_size == 0 and not _pid_alive(fault):
            fault.unlink(missing_ok=True)
    found = [p for p in folder.iterdir() if p.suffix in (".txt", ".log") and not p.name.startswith("seen-")]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [PendingReport(p, TOKEN.sub("hf_<redacted>", p.read_text(encoding="utf-8", errors="replace")))
            for p in found if p.stat().st_size > 0 and not (p.suffix == ".log" and _pid_alive(p))]


def mark_seen(report: PendingReport) -> Path:
    """Keep the file (the user may attach it later) but never offer it again."""
    seen = report.path.with_name(f"seen-{report.path.name}")
    report.path.replace(seen)
    return seen


def fault_log_path(folder: Path | None = None) -> Path:
    folder = folder or reports_home()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"fault-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _pid_alive(path: Path) -> bool:
    """This very process's fault log (open until exit) is not a crash."""
    return path.stem.rsplit("-", 1)[-1] == str(os.getpid())


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("macfinetune", "mlx", "mlx-lm", "pyside6-essentials", "transformers"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["frozen"] = str(bool(getattr(sys, "frozen", False)))
    return found
