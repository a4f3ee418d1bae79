"""The run folder: a contract shared by training, fuse, generate and the app.

RUN/
  recipe.yaml          fully resolved settings (reloadable with ``macfinetune train``)
  status.json          state, pid, progress, best checkpoint (written atomically)
  metrics.jsonl        one JSON object per event, appended and flushed
  data/                the train.jsonl / valid.jsonl actually used
  adapters/            exactly mlx-lm's layout: adapter_config.json, adapters.safetensors,
                       NNNNNNN_adapters.safetensors
  checkpoints/         NNNNNNN_state.json (+ optimizer state) for exact resume
  base_model/          only when the base was quantized on the fly
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import atomic, events
from macfinetune.core.problems import Problem, ProblemError

RECIPE = "recipe.yaml"
STATUS = "status.json"
METRICS = "metrics.jsonl"
ADAPTERS = "adapters"
CHECKPOINTS = "checkpoints"
DATA = "data"
BASE_MODEL = "base_model"
ADAPTER_CONFIG = "adapter_config.json"
FINAL_ADAPTERS = "adapters.safetensors"
_CHECKPOINT_RE = re.compile(r"^(\d{7})_adapters\.safetensors$")


def checkpoint_name(iteration: int) -> str:
    return f"{iteration:07d}_adapters.safetensors"


def default_run_dir(home: Path, model: str, method: str, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or "model").strip("-")
    base = home / f"{stamp}-{name}-{method}"
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def check_new_dir(path: Path, what: str = "output folder") -> list[Problem]:
    """A folder we are about to create must not exist, and its parent must be writable."""
    path = Path(path)
    if path.exists():
        kind = what if path.is_dir() else f"a file is where the {what} would go; it"
        return [Problem(f"{kind} already exists; choose another --out or remove it", file=str(path), value=str(path))]
    parent = _existing_parent(path)
    if not os.access(parent, os.W_OK | os.X_OK):
        return [Problem(f"cannot create the {what}: {parent} is not writable", file=str(path), value=str(path))]
    return []


def rename_refusal(run_dir: Path, new_name: str) -> str | None:
    """Why the run folder ``run_dir`` cannot be renamed to ``new_name``; None when it can."""
    if not new_name:
        return "the new name is empty"
    if new_name in (".", ".."):
        return f"“{new_name}” cannot name a folder: it means {'this folder' if new_name == '.' else 'the folder above'}"
    if "/" in new_name:
        return f"a folder name cannot contain “/”: “{new_name}”"
    target = Path(run_dir).with_name(new_name)
    if target.exists():
        return f"{target} already exists"
    return None


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


# --- metrics ----------------------------------------------------------------------------

_RECORD_NAMES = {
    events.RunStarted: "start",
    events.TrainReport: "train",
    events.ValReport: "val",
    events.CheckpointSaved: "checkpoint",
    events.RunPaused: "pause",
    events.RunResumed: "unpause",
    events.RunContinued: "resume",
    events.RunFinished: "finish",
    events.RunFailed: "fail",
    events.PreferenceReport: "preference",
    events.MemorySample: "memory",  # only the samples taken at train reports (with MLX's figures)
}


def event_record(event) -> dict | None:
    """The metrics.jsonl line for an event, or None for events the log does not keep."""
    name = _RECORD_NAMES.get(type(event))
    if name is None or (name == "memory" and event.active_gb is None):  # the ~1 s pressure watch is not kept
        return None
    record = {"event": name}
    for key, value in dataclasses.asdict(event).items():
        if key == "time":  # when the event was made (not when it was written), to the millisecond
            value = round(value, 3)
        elif key == "problems":
            value = [str(p) for p in event.problems]
        record[key] = value
    record.setdefault("iteration", None)
    return record


class MetricsLog:
    """Appends one JSON line per event and flushes it, so a crash loses nothing written."""

    def __init__(self, run_dir: Path):
        path = Path(run_dir) / METRICS
        torn = not _ends_a_line(path)
        self._file = open(path, "a", encoding="utf-8")
        if torn:  # a killed process left half a line: end it, so the next record starts a line of its own
            self._append("\n")

    def write(self, event) -> None:
        record = event_record(event)
        if record is None or self._file.closed:
            return
        line = json.dumps(record) + "\n"
        atomic.fault_point("metrics.partial-line", before_kill=lambda: self._append(line[: len(line) // 2]))
        self._append(line)
        atomic.fault_point("metrics.line-written")

    def _append(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _ends_a_line(path: Path) -> bool:
    """True for a missing or empty file, or one whose last byte is a newline."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's history as it stands: a half-written line (crash mid-write) is skipped, and a
    'resume' record rewinds it, dropping records of iterations after the checkpoint resumed from."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "resume":
            records = [r for r in records if (r.get("iteration") or 0) <= record["iteration"]]
        records.append(record)
    return records


# --- status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    state: str  # running, paused, finished, stopped, failed, interrupted
    iteration: int = 0
    total_iterations: int = 0
    best_iteration: int | None = None
    best_val_loss: float | None = None
    message: str = ""
    pid: int | None = None
    host: str = ""
    started: float = 0.0
    updated: float = 0.0
    model: str = ""
    method: str = ""


def write_status(run_dir: Path, status: RunStatus) -> None:
    atomic.write_json(Path(run_dir) / STATUS, dataclasses.asdict(status), label="status")


def method_label(method: str, objective: str = "sft") -> str:
    """What Runs, the Monitor and the CLI call a run's method: 'lora', or 'lora + dpo' for preference runs."""
    return method if objective in ("", "sft") else f"{method} + {objective}"


def new_status(model: str, method: str, total: int) -> RunStatus:
    now = time.time()
    return RunStatus(
        state="running",
        total_iterations=total,
        pid=os.getpid(),
        host=socket.gethostname(),
        started=now,
        updated=now,
        model=model,
        method=method,
    )


def read_status(run_dir: Path) -> RunStatus | None:
    """The run's status; a 'running' run whose process is gone reads as 'interrupted'."""
    path = Path(run_dir) / STATUS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        status = RunStatus(**{k: v for k, v in data.items() if k in RunStatus.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None
    if status.state in ("running", "paused") and not _alive(status.pid, status.host):
        status = dataclasses.replace(status, state="interrupted")
    return status


def _alive(pid: int | None, host: str) -> bool:
    if host and host != socket.gethostname():
        return True  # written on another machine: we cannot tell
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- base model -------------------------------------------------------------------------


def base_model(run_dir: Path) -> str:
    """The base model a run trained on, where it is now: its status, else its adapter_config.json
    ('' when neither says). A base quantized into the run's own base_model/ is found there even after
    the run folder was moved or renamed (the records hold the absolute path it had)."""
    status = read_status(run_dir)
    recorded = status.model if status and status.model else _adapter_config_model(Path(run_dir) / ADAPTERS)
    return relocated_base(recorded, Path(run_dir))


def relocated_base(recorded: str, run_dir: Path) -> str:
    """``recorded``, unless it names a run's own base_model/ and ``run_dir`` has one: then that one."""
    own = Path(run_dir) / BASE_MODEL
    if recorded and Path(recorded).name == BASE_MODEL and own.is_dir():
        return str(own.absolute())
    return recorded


def locate_run(path: Path, home: Path) -> Path:
    """A run folder given as a path, or by the name ``macfinetune runs`` shows (relative to the runs
    folder ``home``). A path that exists wins; anything else is returned as given, for the caller's error."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute() or not (Path(home) / path).is_dir():
        return path
    return Path(home) / path


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RECIPE).is_file() or (Path(path) / STATUS).is_file()


def _adapter_config_model(adapters: Path) -> str:
    try:
        config = json.loads((adapters / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(config.get("model") or "") if isinstance(config, dict) else ""


# --- checkpoints ------------------------------------------------------------------------


def adapters_dir(path: Path) -> Path:
    """A run folder's adapters/, or the folder itself when it is an mlx-lm adapter folder."""
    path = Path(path)
    if (path / ADAPTERS / ADAPTER_CONFIG).exists():
        return path / ADAPTERS
    if (path / ADAPTER_CONFIG).exists():
        return path
    raise ProblemError(
        Problem(
            "not a run folder or an adapter folder: no adapters/adapter_config.json or adapter_config.json",
            file=str(path),
            value=str(path),
        )
    )


def list_checkpoints(adapters: Path) -> dict[int, Path]:
    found = {}
    for entry in Path(adapters).iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and entry.stat().st_size > 0:
            found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class CheckpointState:
    """What a complete checkpoint holds; its state file is written last, as the commit marker."""

    iteration: int
    trained_tokens: int
    val_loss: float | None
    adapters: Path
    optimizer: Path


def state_file(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{iteration:07d}_state.json"


def optimizer_file(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{iteration:07d}_optimizer.safetensors"


def write_checkpoint_state(run_dir: Path, iteration: int, trained_tokens: int, val_loss: float | None) -> None:
    atomic.write_json(
        state_file(run_dir, iteration),
        {"format": 1, "iteration": iteration, "trained_tokens": trained_tokens, "val_loss": val_loss},
        label="commit-marker",
    )


def complete_checkpoints(run_dir: Path) -> list[CheckpointState]:
    """Checkpoints whose state file and both weight files exist; a half-written one is skipped."""
    out = []
    for path in sorted((Path(run_dir) / CHECKPOINTS).glob("*_state.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            it = int(data["iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        adapters = Path(run_dir) / ADAPTERS / checkpoint_name(it)
        optimizer = optimizer_file(run_dir, it)
        if _nonempty(adapters) and _nonempty(optimizer):
            out.append(CheckpointState(it, int(data.get("trained_tokens", 0)), data.get("val_loss"), adapters, optimizer))
    return out


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


LOCK = ".macfinetune.lock"  # held (flock) by the process that trains in the folder; the OS lets go when it dies


class RunLock:
    """An exclusive hold on a run folder while a process trains in it: a second process that would train or resume
    in the same folder is refused, even in the seconds before the first one writes its status."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._file = None

    def acquire(self) -> RunLock:
        import fcntl  # macOS and Linux

        handle = open(self.run_dir / LOCK, "a+")  # noqa: SIM115 (held open for the life of the run)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ProblemError(Problem("another macfinetune process is training in this run folder or resuming it; "
                                       "wait for it to end, or stop it", file=str(self.run_dir))) from None
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing lets go of the lock
            self._file = None


def remove_partial_files(run_dir: Path) -> list[str]:
    """Temporary files a killed process left mid-write (atomic writes start them with a dot)."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / ADAPTERS, Path(run_dir) / CHECKPOINTS):
        for entry in folder.glob(".*"):
            if entry.is_file() and (entry.name.endswith(".tmp") or entry.name.endswith(".safetensors")):
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
    return removed


def checkpoints_to_delete(saved: dict[int, float | None], keep: int, latest: int) -> list[int]:
    """With keep N: all but the N best by validation loss and the latest (needed to resume)."""
    if keep <= 0:
        return []
    scored = sorted((loss, it) for it, loss in saved.items() if loss is not None)
    kept = {it for _, it in scored[:keep]} | {latest}
    return sorted(it for it in saved if it not in kept)


def best_checkpoint(run_dir: Path) -> tuple[int, float] | None:
    """(iteration, val_loss) of the saved checkpoint with the lowest validation loss."""
    return best_in_records(read_metrics(run_dir))


def best_in_records(records: list[dict]) -> tuple[int, float] | None:
    """``best_checkpoint`` of metrics records already read (``read_metrics``)."""
    best = None
    for record in records:
        if record.get("event") == "checkpoint" and record.get("val_loss") is not None:
            if best is None or record["val_loss"] < best[1]:
                best = (record["iteration"], record["val_loss"])
    return best


def resolve_checkpoint(path: Path, which: str | int = "best") -> tuple[Path, int | None]:
    """The adapter weights file for 'best', 'last' or an iteration number, with its iteration."""
    adapters = adapters_dir(path)
    found = _committed(adapters, list_checkpoints(adapters))
    if not found and not (adapters / FINAL_ADAPTERS).exists():
        raise ProblemError(Problem("no adapter weights were saved here: the run stopped or failed before its first "
                                   "checkpoint, so there is nothing to load; train it again", file=str(path)))
    which = str(which).strip().lower()
    if which == "last":
        if found:
            it = max(found)
            return found[it], it
        return _final_file(adapters), None
    if which == "best":
        run_dir = adapters.parent if adapters.name == ADAPTERS else adapters
        best = best_checkpoint(run_dir)
        if best is None:
            raise ProblemError(
                Problem(
                    "no checkpoint has a validation loss, so there is no 'best'; use --checkpoint last or a number"
                    + (f" ({_available(found)})" if found else ""),
                    file=str(path),
                    value="best",
                )
            )
        if best[0] in found:
            return found[best[0]], best[0]
        raise ProblemError(Problem(f"the best checkpoint {best[0]} is missing from {adapters}", file=str(path)))
    if not which.isdigit():
        raise ProblemError(
            Problem(f"checkpoint must be best, last or an iteration number, got {which!r}", value=which)
        )
    if int(which) not in found:
        raise ProblemError(
            Problem(f"there is no checkpoint {int(which)}; {_available(found)}", file=str(adapters), value=which)
        )
    return found[int(which)], int(which)


def _committed(adapters: Path, found: dict[int, Path]) -> dict[int, Path]:
    """In a run folder, only checkpoints with their commit marker count (a plain adapter folder has none)."""
    run_dir = adapters.parent
    if adapters.name != ADAPTERS or not (run_dir / CHECKPOINTS).is_dir():
        return found
    complete = {c.iteration for c in complete_checkpoints(run_dir)}
    return {it: p for it, p in found.items() if it in complete}


def _final_file(adapters: Path) -> Path:
    final = adapters / FINAL_ADAPTERS
    if not final.exists():
        raise ProblemError(Problem("no adapter weights saved yet", file=str(adapters)))
    return final


def _available(found: dict[int, Path]) -> str:
    if not found:
        return "no numbered checkpoints were saved"
    return "available: " + ", ".join(str(i) for i in found)


# --- listing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    path: Path
    status: RunStatus | None
    size_bytes: int


def list_runs(home: Path) -> list[RunSummary]:
    """Run folders directly under ``home`` or one level deeper (a demo folder holds its run)."""
    if not Path(home).is_dir():
        return []
    found = [p.parent for pattern in (f"*/{RECIPE}", f"*/*/{RECIPE}") for p in Path(home).glob(pattern)]
    return [RunSummary(d, read_status(d), _folder_size(d)) for d in sorted(found)]


def list_runs_in(folders: list[Path]) -> list[RunSummary]:
    return [RunSummary(d, read_status(d), _folder_size(d)) for d in folders]


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
