"""What the Runs page lists and exports: one row per run folder, metrics as CSV, a run's history
as events again (so a reopened run is drawn by the same code as a live one), and the settings
that differ between runs being compared."""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import events, runs, yamlfast

CSV_COLUMNS = ("event", "iteration", "time", "train_loss", "val_loss", "learning_rate", "iterations_per_second",
               "tokens_per_second", "trained_tokens", "peak_memory_gb")
# added after CSV_COLUMNS for runs with preference records (DPO, ORPO: core.events.PreferenceReport)
PREFERENCE_CSV_COLUMNS = ("split", "objective", "loss", "rewards_chosen", "rewards_rejected", "reward_margin",
                          "accuracy", "likelihood_accuracy", "logps_chosen", "logps_rejected", "pairs")
# added for runs with memory records (core.events.MemorySample at every train report)
MEMORY_CSV_COLUMNS = ("active_gb", "cache_gb", "peak_gb", "process_gb", "system_used_gb", "system_total_gb",
                      "swap_used_gb")


@dataclass(frozen=True)
class RunRow:
    path: Path
    name: str
    model: str
    method: str
    status: str
    best_val_loss: float | None
    iteration: int
    total_iterations: int
    started: float
    duration_s: float
    size_bytes: int


def row_for(summary: runs.RunSummary) -> RunRow:
    s = summary.status or runs.RunStatus(state="unknown")
    model = Path(s.model.rstrip("/")).name if s.model else ""
    return RunRow(summary.path, summary.path.name, model, s.method, s.state, s.best_val_loss, s.iteration,
                  s.total_iterations, s.started, max(0.0, s.updated - s.started), summary.size_bytes)


def scan_rows(home: Path, extra: list[Path] = ()) -> list[RunRow]:
    """Every run under ``home`` and each extra folder (runs opened before), no duplicates."""
    found = {s.path.resolve(): s for s in runs.list_runs(home)}
    for folder in extra:
        folder = Path(folder)
        try:  # a folder opened before may be gone, unreadable, or named beyond what the file system allows
            if (folder / runs.RECIPE).exists() and folder.resolve() not in found:
                found[folder.resolve()] = runs.RunSummary(folder, runs.read_status(folder), runs._folder_size(folder))
        except OSError:
            continue
    return [row_for(s) for s in found.values()]


def metrics_csv(run_dir: Path) -> str:
    """The run's metrics.jsonl (every record, not a downsampled plot) as CSV."""
    out = io.StringIO()
    records = runs.read_metrics(run_dir)
    columns = CSV_COLUMNS + (PREFERENCE_CSV_COLUMNS if any(r["event"] == "preference" for r in records) else ())
    columns += MEMORY_CSV_COLUMNS if any(r["event"] == "memory" for r in records) else ()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if record.get(k) is None else record.get(k)) for k in columns})
    return out.getvalue()


_RECORD_EVENTS = {
    "start": events.RunStarted, "train": events.TrainReport, "val": events.ValReport,
    "checkpoint": events.CheckpointSaved, "pause": events.RunPaused, "unpause": events.RunResumed,
    "resume": events.RunContinued, "finish": events.RunFinished, "fail": events.RunFailed,
    "preference": events.PreferenceReport, "memory": events.MemorySample,
}


def events_from_records(records: list[dict]) -> list:
    """metrics.jsonl records back into the events that wrote them (unknown records are skipped)."""
    out = []
    for record in records:
        cls = _RECORD_EVENTS.get(record.get("event"))
        if cls is None:
            continue
        names = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in record.items() if k in names}
        if "problems" in args:
            args["problems"] = ()  # stored as text; the message is what the Monitor shows
        try:
            out.append(cls(**args))
        except TypeError:
            continue  # a record from an older format missing a field
    return out


def load_run_events(run_dir: Path) -> list:
    return events_from_records(runs.read_metrics(run_dir))


def history_before_continue(run_dir: Path) -> list:
    """A resumed run's events before its last 'resume' record: what a resume job shows under its own events."""
    evs = load_run_events(run_dir)
    last = max((i for i, e in enumerate(evs) if isinstance(e, events.RunContinued)), default=len(evs))
    return evs[:last]


def flat_recipe(run_dir: Path) -> dict[str, object]:
    """recipe.yaml as dotted keys (training.learning_rate: 0.001); {} when unreadable."""
    import yaml  # here, not at import: the window paints before it needs YAML

    try:
        data = yamlfast.safe_load((Path(run_dir) / runs.RECIPE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def difference_labels(settings: list[dict[str, object]], names: list[str]) -> list[str]:
    """A label per run naming the settings that differ between them ('lora.rank=8, training.learning_rate=0.001');
    the run's name when nothing differs."""
    keys = sorted({k for s in settings for k in s})
    differing = [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]
    labels = []
    for s, name in zip(settings, names, strict=True):
        text = ", ".join(f"{_short(k)}={_short_value(s.get(k))}" for k in differing)
        labels.append(text or name)
    return labels


def _short(key: str) -> str:
    return key if key.endswith(".path") else key.split(".")[-1]


def _short_value(value) -> str:
    text = str(value)
    return Path(text).name if "/" in text else text
