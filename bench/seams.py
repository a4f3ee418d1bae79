"""What in-process monitoring costs: mlx-lm's train() as its own CLI calls it, versus train()
with macfinetune's seams (a callback after every step, the pause/stop batch wrapper), in one
process, alternating, same model, data and settings. Prints wall seconds and the speed ratio.

    python bench/seams.py [--rounds 3] [--iters 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Counter:
    def __init__(self):
        self.reports = 0

    def on_train_loss_report(self, info):
        self.reports += 1

    def on_val_loss_report(self, info):
        pass


def timed_run(model_dir: Path, rows: list, iters: int, with_seams: bool) -> float:
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset
    from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    from macfinetune.backend import quiet
    from macfinetune.core.control import JobControl

    control = JobControl()

    def wrapped(**kwargs):  # the same checks as macfinetune.backend.training._controlled_batches
        for batch in iterate_batches(**kwargs):
            if control.paused:
                control.wait_while_paused()
            if control.stop_requested:
                return
            yield batch

    model, tokenizer = load(str(model_dir))
    np.random.seed(0)
    mx.random.seed(0)
    model.freeze()
    linear_to_lora_layers(model, -1, {"rank": 8, "scale": 20.0, "dropout": 0.0})
    data = CacheDataset(create_dataset(rows, tokenizer, types.SimpleNamespace(mask_prompt=False)))
    args = TrainingArgs(batch_size=8, iters=iters, steps_per_report=1 if with_seams else 10,
                        steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=128,
                        adapter_file=str(model_dir.parent / "bench.safetensors"))
    started = time.perf_counter()
    with quiet.quiet_trainer(lambda message: None):
        train(model, optim.Adam(learning_rate=1e-3), data, None, args,
              iterate_batches=wrapped if with_seams else iterate_batches,
              training_callback=_Counter() if with_seams else None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from macfinetune.backend.tinymodel import build_demo_model

    lines = (ROOT / "resources" / "sample_data" / "train.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    with tempfile.TemporaryDirectory(prefix="mf-seams-") as tmp:
        model_dir = build_demo_model(Path(tmp) / "model")
        timed_run(model_dir, rows, args.iters, False)  # warm-up
        ratios = []
        for n in range(args.rounds):
            plain = timed_run(model_dir, rows, args.iters, False)
            seams = timed_run(model_dir, rows, args.iters, True)
            ratios.append(plain / seams)
            print(f"round {n + 1}: mlx-lm alone {plain:.2f} s, with macfinetune's seams {seams:.2f} s, "
                  f"speed ratio {ratios[-1]:.3f}", flush=True)
        print(f"median speed ratio (seams / plain): {statistics.median(ratios):.3f} over {args.rounds} rounds")


if __name__ == "__main__":
    main()
