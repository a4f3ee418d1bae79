"""What samples at checkpoints cost: training wall time with ``eval.samples`` on versus off.

In-process runs of the same recipe, alternated on/off for N pairs (timings on shared machines drift;
side by side is fair), on the tiny model (hidden 64, 2 layers) and a small one (hidden 256, 4 layers).
Wall time is from the run's 'start' record to its 'finish' record in metrics.jsonl: training,
validation, checkpoint saves and, when on, the samples (model loading is outside it).

    python bench/samples_cost.py [--pairs 3] [--iters 200] [--save-every 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "resources" / "sample_data"
SHAPES = {"tiny": {}, "small": {"hidden_size": 256, "num_layers": 4, "num_heads": 8, "num_kv_heads": 4,
                                "intermediate_size": 512}}


def build(name: str, folder: Path) -> Path:
    from macfinetune.backend.tinymodel import build_tiny_model
    from macfinetune.core.dataset import read_jsonl

    rows = read_jsonl(DATA / "train.jsonl") + read_jsonl(DATA / "valid.jsonl")
    texts = [m["content"] for row in rows for m in row["messages"]]
    return build_tiny_model(folder / name, texts, **SHAPES[name])


def wall_seconds(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = {r["event"]: r["time"] for r in records if r["event"] in ("start", "finish")}
    return times["finish"] - times["start"]


def train_once(model: Path, run_dir: Path, args, samples: bool) -> tuple[float, float]:
    from macfinetune.backend.training import train_run
    from macfinetune.core.recipe import Recipe, apply_overrides, with_paths

    sets = [f"iterations={args.iters}", "batch_size=4", "num_layers=-1", "learning_rate=1e-3", "report_every=10",
            f"eval_every={args.save_every}", f"save_every={args.save_every}", "val_batches=2",
            "max_seq_length=128", f"samples={str(samples).lower()}", f"sample_count={args.count}",
            f"sample_max_tokens={args.tokens}"]
    spent = []
    result = train_run(apply_overrides(with_paths(Recipe(), str(model), str(DATA)), sets), run_dir,
                       lambda e: spent.append(e.seconds) if type(e).__name__ == "SamplesSaved" else None)
    assert result.state == "finished", result.message
    return wall_seconds(run_dir), sum(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--count", type=int, default=3, help="sample prompts")
    parser.add_argument("--tokens", type=int, default=48, help="sample_max_tokens")
    parser.add_argument("--models", default="tiny,small")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="samples-cost-") as tmp:
        for name in args.models.split(","):
            model = build(name, Path(tmp))
            off, on, generating = [], [], []
            for n in range(args.pairs):
                order = (False, True) if n % 2 == 0 else (True, False)  # alternate which goes first
                for samples in order:
                    seconds, spent = train_once(model, Path(tmp) / f"{name}-{n}-{samples}", args, samples)
                    (on if samples else off).append(seconds)
                    if samples:
                        generating.append(spent)
            ratio = statistics.median(on) / statistics.median(off)
            print(f"{name}: off median {statistics.median(off):.1f} s {[round(s, 1) for s in off]}, "
                  f"on median {statistics.median(on):.1f} s {[round(s, 1) for s in on]}, ratio {ratio:.3f}; "
                  f"generating {statistics.median(generating):.2f} s per run "
                  f"({args.iters // args.save_every} checkpoints x {args.count} prompts x {args.tokens} tokens)",
                  flush=True)


if __name__ == "__main__":
    main()
