"""Measure this Mac: a few real training steps of the chosen model at two sequence lengths.

Each probe is an ordinary run (``train_run``, the memory gate, ``estimate.json`` beside the measured
peak) in the data folder's ``calibration/`` area, so it is a calibration row for this Mac's correction
(``core.calibration.mac_correction``) without showing up among the user's runs; ``rows.jsonl`` there
keeps one line per probe (settings, estimate, measured peak, error, MLX version, date).

Rows are generated longer than the longest probe so every batch is padded to the probed length, and
the peak counter is reset before each probe (mlx-lm reports ``mx.get_peak_memory()``, a process maximum).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import calibration, paths, run_index
from macfinetune.core.events import Stage
from macfinetune.core.recipe import Recipe, apply_overrides, with_paths

ROWS_FILE = "rows.jsonl"
PROBE_STEPS = ["iterations=3", "report_every=1", "eval_every=1000", "save_every=1000", "val_batches=1",
               "warmup_steps=0", "lr_schedule=constant"]
_WORDS = ("the tide turns and the ship sails north past the harbour lights while gulls circle over grey "
          "water and the crew hauls rope").split()


@dataclass(frozen=True)
class ProbeRow:
    run: str
    sequence_length: int
    estimate_gb: float
    measured_gb: float

    @property
    def error(self) -> float:
        return (self.estimate_gb - self.measured_gb) / self.measured_gb


def probe_lengths(longest: int, fits) -> list[int]:
    """Two lengths, ``longest`` and half of it, halved together until the longer one ``fits(length)``."""
    while longest > 64 and not fits(longest):
        longest //= 2
    return [max(32, longest // 2), longest]


def overrides_for(s) -> list[str]:
    """The recipe overrides that make a probe train with estimator settings ``s`` (core.estimator.Settings)."""
    keys = f"[{', '.join(s.target_modules)}]" if s.target_modules else "[]"
    return [f"type={s.method}", f"batch_size={s.batch_size}", f"num_layers={s.num_layers}", f"rank={s.rank}",
            f"alpha={2 * s.rank}", f"target_modules={keys}", f"optimizer={s.optimizer}",
            f"grad_checkpoint={str(s.grad_checkpoint).lower()}", f"quantize={s.quantize or 'null'}"]


def write_probe_data(folder: Path, longest: int) -> Path:
    """train/valid rows of plain text, each longer than ``longest`` tokens (every word is one token or more)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", 8), ("valid", 2)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for i in range(count):
                words = [_WORDS[(i + j) % len(_WORDS)] for j in range(longest + 16)]
                f.write(json.dumps({"text": " ".join(words)}) + "\n")
    return folder


def measure(model: str, overrides: list[str], lengths: list[int], emit=lambda event: None,
            home: Path | None = None) -> list[ProbeRow]:
    """Train the probe at each length and record it; returns the rows (shortest first)."""
    import mlx.core as mx

    from macfinetune.backend.training import train_run

    home = home or paths.calibration_home()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = write_probe_data(home / f"{stamp}-data", max(lengths))
    rows = []
    for length in sorted(lengths):
        recipe = apply_overrides(with_paths(Recipe(name="measure-this-mac"), model, str(data)),
                                 [*overrides, *PROBE_STEPS, f"max_seq_length={length}"])
        run_dir = home / f"{stamp}-{Path(model).name}-L{length}"
        emit(Stage("measure", f"probe: {length} tokens per row, {recipe.training.batch_size} rows per batch"))
        mx.clear_cache()
        mx.reset_peak_memory()
        result = train_run(recipe, run_dir, emit)
        run_index.forget(run_dir)
        if result.state != "finished":
            raise RuntimeError(f"the probe at {length} tokens ended {result.state}: {result.message}")
        rows.append(_record(home, run_dir, length, mx.__version__))
    return rows


def _record(home: Path, run_dir: Path, length: int, mlx_version: str) -> ProbeRow:
    mac = calibration.mac_row(run_dir)
    est = calibration.read_run_estimate(run_dir) or {}
    row = ProbeRow(run_dir.name, length, mac.estimate_gb, mac.measured_gb)
    line = {"run": row.run, "family": mac.family, "method": mac.method, "mode": mac.mode,
            "sequence_length": length, "settings": est.get("settings"), "estimate_gb": row.estimate_gb,
            "measured_gb": row.measured_gb, "error": round(row.error, 4), "mlx": mlx_version,
            "date": time.strftime("%Y-%m-%d")}
    with open(home / ROWS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    return row
