"""A run's checkpoints as table rows: the Checkpoints page's numbers, read from the run folder only.

One row per checkpoint the run recorded (metrics.jsonl 'checkpoint' records) or holds complete on
disk (checkpoints/NNNNNNN_state.json with both weight files). A checkpoint that ``keep_checkpoints``
pruned stays in the history with ``on_disk`` False. "Best" is the one ``fuse --checkpoint best``
takes: ``runs.best_in_records``, the lowest validation loss among the recorded checkpoints.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from macfinetune.core import runs, samples


@dataclass(frozen=True)
class CheckpointRow:
    iteration: int
    train_loss: float | None  # the nearest train report at or before the iteration
    val_loss: float | None
    size_bytes: int | None  # adapter + optimizer files; None when the files are gone
    saved_at: float | None  # seconds since the epoch
    is_best: bool
    samples: tuple[tuple[str, str], ...] = ()  # (prompt, text) per sample prompt

    @property
    def on_disk(self) -> bool:
        return self.size_bytes is not None


@dataclass(frozen=True)
class RunCheckpoints:
    """Everything the page draws for one run."""

    run_dir: Path
    rows: tuple[CheckpointRow, ...] = ()
    train_curve: tuple[tuple[int, float], ...] = ()  # (iteration, train loss) per report
    val_curve: tuple[tuple[int, float], ...] = ()
    best_iteration: int | None = None
    prompts: tuple[str, ...] = field(default=())  # the sample prompts, in order

    def row_of(self, iteration: int) -> int | None:
        return next((i for i, r in enumerate(self.rows) if r.iteration == iteration), None)


def read_checkpoints(run_dir: Path) -> RunCheckpoints:
    """The run folder's checkpoints, loss curves and samples (no MLX; safe on any thread)."""
    run_dir = Path(run_dir)
    records = runs.read_metrics(run_dir)
    train = curve(records, "train", "train_loss")
    best = runs.best_in_records(records)
    rows = checkpoint_rows(records, _on_disk(run_dir), train, samples.read_samples(run_dir),
                           best[0] if best else None)
    return RunCheckpoints(run_dir, tuple(rows), train, curve(records, "val", "val_loss"),
                          best[0] if best else None, sample_prompts(rows))


def curve(records: list[dict], event: str, key: str) -> tuple[tuple[int, float], ...]:
    return tuple((r["iteration"], r[key]) for r in records
                 if r.get("event") == event and r.get(key) is not None and r.get("iteration") is not None)


def train_loss_at(train: tuple[tuple[int, float], ...], iteration: int) -> float | None:
    """The loss of the last train report at or before ``iteration`` (reports are in iteration order)."""
    i = bisect.bisect_right([it for it, _ in train], iteration)
    return train[i - 1][1] if i else None


@dataclass(frozen=True)
class _Saved:
    val_loss: float | None
    size_bytes: int
    saved_at: float


def _on_disk(run_dir: Path) -> dict[int, _Saved]:
    """Complete checkpoints: their state file's validation loss and time, and the weight files' size."""
    out = {}
    for c in runs.complete_checkpoints(run_dir):
        state = runs.state_file(run_dir, c.iteration)
        try:
            size, mtime = c.adapters.stat().st_size + c.optimizer.stat().st_size, state.stat().st_mtime
        except OSError:
            continue
        out[c.iteration] = _Saved(c.val_loss, size, mtime)
    return out


def checkpoint_rows(records: list[dict], on_disk: dict[int, _Saved], train: tuple[tuple[int, float], ...],
                    sample_map: dict[int, tuple], best: int | None) -> list[CheckpointRow]:
    """One row per recorded or complete checkpoint, in iteration order."""
    recorded = {r["iteration"]: r for r in records if r.get("event") == "checkpoint" and r.get("iteration") is not None}
    rows = []
    for it in sorted(set(recorded) | set(on_disk)):
        record, saved = recorded.get(it, {}), on_disk.get(it)
        val = record.get("val_loss") if record else (saved.val_loss if saved else None)
        rows.append(CheckpointRow(it, train_loss_at(train, it), val, saved.size_bytes if saved else None,
                                  record.get("time") or (saved.saved_at if saved else None), it == best,
                                  sample_map.get(it, ())))
    return rows


def sample_prompts(rows: list[CheckpointRow]) -> tuple[str, ...]:
    """The prompts in the order the newest checkpoint with samples answered them."""
    with_samples = [r for r in rows if r.samples]
    return tuple(p for p, _ in with_samples[-1].samples) if with_samples else ()



def fuse_target(parent: Path, run_dir: Path, iteration: int) -> Path:
    """A new folder in ``parent`` for a fused checkpoint: ``<run>-fused-<iteration>``, numbered if taken."""
    base = Path(parent) / f"{Path(run_dir).name}-fused-{iteration}"
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def default_selection(data: RunCheckpoints) -> int | None:
    """The checkpoint selected when a run is shown: the best, else the newest."""
    if data.best_iteration is not None and data.row_of(data.best_iteration) is not None:
        return data.best_iteration
    return data.rows[-1].iteration if data.rows else None
