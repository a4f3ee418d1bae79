"""One process versus two local ranks (mlx.launch, ring backend over loopback) at the same global batch.

The same recipe, model and data; one process at batch B and two ranks at batch B/2 each (global batch B),
alternated for N pairs (timings on shared machines drift; side by side is fair). Reported: training wall
time from the run's 'start' to 'finish' record in metrics.jsonl (model loading and process start-up are
outside it), the median tokens/s of the train reports, and the ratio two ranks / one process.

On one machine two ranks share its cores and its memory bandwidth, and they add an all-reduce of the
trainable parameters per step, so no speed-up is expected here; the figure says what the coordination
costs. On two Macs each rank has a machine of its own (docs/multi-mac.md, "What scales").

    python bench/distributed_speed.py [--pairs 3] [--iters 60] [--model tiny|small]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.samples_cost import DATA, SHAPES, build  # noqa: E402  (the same models as the samples bench)


def measured(run_dir: Path) -> tuple[float, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = {r["event"]: r["time"] for r in records if r["event"] in ("start", "finish")}
    speeds = [r["tokens_per_second"] for r in records if r["event"] == "train" and r.get("tokens_per_second")]
    return times["finish"] - times["start"], statistics.median(speeds)


def recipe(model: Path, batch: int, iters: int):
    from macfinetune.core.recipe import Recipe, apply_overrides, with_paths

    return apply_overrides(with_paths(Recipe(), str(model), str(DATA)), [
        f"iterations={iters}", f"batch_size={batch}", "num_layers=-1", "report_every=10", "eval_every=100000",
        "save_every=100000", "val_batches=1", "max_seq_length=256"])


def one(model: Path, run_dir: Path, iters: int, batch: int) -> tuple[float, float]:
    from macfinetune.backend.training import train_run

    result = train_run(recipe(model, batch, iters), run_dir, lambda e: None)
    assert result.state == "finished", result.message
    return measured(run_dir)


def two(model: Path, run_dir: Path, iters: int, batch: int) -> tuple[float, float]:
    from macfinetune.backend import launch
    from macfinetune.core import hosts
    from macfinetune.core.control import JobControl

    result = launch.train_on_hosts(recipe(model, batch // 2, iters), run_dir, lambda e: None,
                                   JobControl(pause_on_trouble=False), hosts.local_hostfile(2))
    assert result.state == "finished", result.message
    return measured(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8, help="the global batch (each of two ranks takes half)")
    parser.add_argument("--model", choices=sorted(SHAPES), default="small")
    args = parser.parse_args()
    import mlx.core as mx

    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        model = build(args.model, Path(tmp))
        rows = {"one": [], "two": []}
        for n in range(args.pairs):
            for name, fn in (("one", one), ("two", two)) if n % 2 == 0 else (("two", two), ("one", one)):
                wall, speed = fn(model, Path(tmp) / f"{name}-{n}", args.iters, args.batch)
                rows[name].append((wall, speed))
                print(f"pair {n + 1} {name}: {wall:.2f} s, {speed:,.0f} tok/s", flush=True)
    print(f"\n{platform.machine()} {platform.system()}, mlx {mx.__version__}, model {args.model}, global batch "
          f"{args.batch}, {args.iters} iterations, {args.pairs} pairs")
    for name in ("one", "two"):
        walls, speeds = zip(*rows[name], strict=True)
        print(f"{name:>4}: median {statistics.median(walls):.2f} s, {statistics.median(speeds):,.0f} tok/s")
    ratio = statistics.median(w for w, _ in rows["one"]) / statistics.median(w for w, _ in rows["two"])
    print(f"two ranks / one process, speed by wall time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
