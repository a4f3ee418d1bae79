"""Cost of the memory watch and heartbeat thread: tokens/s with the watch at its normal period,
at a 20x faster one, and effectively off, alternated in-process on the tiny model.

    python bench/watch_overhead.py [--rounds 3] [--iters 80]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import fast_recipe  # noqa: E402

from macfinetune.backend import loop  # noqa: E402
from macfinetune.backend.tinymodel import build_demo_model  # noqa: E402
from macfinetune.backend.training import train_run  # noqa: E402
from macfinetune.core.events import TrainReport  # noqa: E402

PERIODS = {"off": (3600.0, 3600.0), "normal (1 s / 2 s)": (1.0, 2.0), "20x (0.05 s / 0.1 s)": (0.05, 0.1)}


def tokens_per_second(model: Path, out: Path, iters: int) -> float:
    reports = []
    recipe = fast_recipe(model, f"iterations={iters}", "report_every=100000", "eval_every=100000",
                         "save_every=100000", "batch_size=8")
    train_run(recipe, out, lambda e: reports.append(e) if isinstance(e, TrainReport) else None)
    return reports[-1].tokens_per_second  # one window over every step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=80)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model = build_demo_model(tmp / "tiny")
    results = {name: [] for name in PERIODS}
    for r in range(args.rounds):
        for name, (sample, beat) in PERIODS.items():
            loop.SAMPLE_SECONDS, loop.HEARTBEAT_SECONDS = sample, beat
            results[name].append(tokens_per_second(model, tmp / f"{r}-{len(results[name])}-{sample}", args.iters))
    for name, values in results.items():
        print(f"{name:>22}: median {statistics.median(values):8.0f} tok/s  ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
