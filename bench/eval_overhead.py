"""Share of a run's wall time spent validating and saving checkpoints (issue 14).

Trains in-process (``backend.training.train_run``, what ``macfinetune train`` runs) with the recipe
defaults for reports, validation and checkpoints (validate every 50 iterations on 25 batches, save
every 50), and times ``StepHook._validate`` and ``StepHook._save`` (checkpoint files, commit marker,
pruning) from outside. Prints each share of the run's wall time (train_run from call to return,
model loading included) for LoRA and full fine-tuning.

    python bench/eval_overhead.py [--iters 200] [--methods lora full]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(cls, name: str, totals: dict):
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        tic = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - tic
            totals[name + "_n"] = totals.get(name + "_n", 0) + 1

    setattr(cls, name, wrapper)
    return original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--methods", nargs="*", default=["lora", "full"])
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256, help="model width (the layers, heads and MLP follow)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=50)
    a = ap.parse_args()
    import mlx.core as mx
    import mlx_lm

    from macfinetune.backend import loop
    from macfinetune.backend.tinymodel import build_tiny_model
    from macfinetune.backend.training import train_run
    from macfinetune.core.recipe import Recipe, apply_overrides, with_paths

    print(f"# {platform.machine()} {platform.system()}, {os.cpu_count()} cores, mlx {mx.__version__}, "
          f"mlx-lm {mlx_lm.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"BLAS {'OpenBLAS (LD_PRELOAD)' if 'openblas' in os.environ.get('LD_PRELOAD', '') else 'bundled'}")
    data = ROOT / "resources" / "sample_data"
    texts = [line for line in (data / "train.jsonl").read_text().splitlines()]
    print("| method | iterations | wall s | validation s (passes) | share | saving s (checkpoints) | share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="mf-evalcost-") as tmp:
        model = build_tiny_model(Path(tmp) / "model", texts, hidden_size=a.hidden, num_layers=a.layers,
                                 num_heads=max(4, a.hidden // 64), num_kv_heads=2,
                                 intermediate_size=2 * a.hidden, vocab_size=a.vocab)
        print(f"# model: hidden {a.hidden}, {a.layers} blocks, vocab {a.vocab}; save every {a.save_every}, "
              f"validate every {a.eval_every}")
        for method in a.methods:
            totals: dict = {}
            originals = [(name, timed(loop.StepHook, name, totals)) for name in ("_validate", "_save")]
            recipe = apply_overrides(with_paths(Recipe(), str(model), str(data)),
                                     [f"iterations={a.iters}", f"type={method}", "num_layers=-1",
                                      f"max_seq_length={a.seq}", "learning_rate=1e-4",
                                      f"save_every={a.save_every}", f"eval_every={a.eval_every}"])
            tic = time.perf_counter()
            result = train_run(recipe, Path(tmp) / f"run-{method}", lambda e: None)
            wall = time.perf_counter() - tic
            for name, original in originals:
                setattr(loop.StepHook, name, original)
            assert result.state == "finished", result.message
            v, s = totals.get("_validate", 0.0), totals.get("_save", 0.0)
            print(f"| {method} | {a.iters} | {wall:.1f} | {v:.1f} ({totals.get('_validate_n', 0)}) | {v / wall:.1%} | "
                  f"{s:.2f} ({totals.get('_save_n', 0)}) | {s / wall:.1%} |", flush=True)


if __name__ == "__main__":
    main()
