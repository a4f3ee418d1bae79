"""A small index of every run folder made on this machine, so ``runs`` finds runs made with ``--out``.

One JSON list of absolute paths in the data folder, written atomically. A missing index reads as empty; a
damaged one (edited by hand, a disk that lost its tail) is salvaged: every quoted absolute path in it is kept.
Folders deleted since are skipped when read (and dropped at the next write).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from macfinetune.core import atomic, paths, runs


def remember(run_dir: Path, index: Path | None = None) -> None:
    """Add ``run_dir`` to the index; never fails a run (an unwritable data folder only loses the entry)."""
    index = index or paths.runs_index_file()
    folder = str(Path(run_dir).expanduser().resolve())
    known = [p for p in _read(index) if Path(p).is_dir() and p != folder]
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(index, json.dumps([*known, folder], indent=1) + "\n")
    except OSError:
        pass


def forget(run_dir: Path, index: Path | None = None) -> None:
    """Drop ``run_dir`` from the index (a probe of 'measure this Mac' is not one of the user's runs)."""
    index = index or paths.runs_index_file()
    folder = str(Path(run_dir).expanduser().resolve())
    kept = [p for p in _read(index) if p != folder]
    try:
        atomic.write_text(index, json.dumps(kept, indent=1) + "\n")
    except OSError:
        pass


def remembered(index: Path | None = None) -> list[Path]:
    """The indexed folders that are still run folders."""
    return [Path(p) for p in _read(index or paths.runs_index_file()) if (Path(p) / runs.RECIPE).is_file()]


def all_runs(home: Path, index: Path | None = None) -> list[runs.RunSummary]:
    """Runs under ``home`` and every remembered run elsewhere, each once, in folder order."""
    found = {s.path.resolve(): s for s in runs.list_runs(home)}
    for folder in remembered(index):
        if folder.resolve() not in found:
            found[folder.resolve()] = runs.list_runs_in([folder])[0]
    return sorted(found.values(), key=lambda s: str(s.path))


def _read(index: Path) -> list[str]:
    try:
        text = index.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    try:
        data = json.loads(text)
    except ValueError:  # damaged: keep every path that is still readable in it
        return re.findall(r'"(/[^"\n]+)"', text)
    return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []
