"""Throughput: `macfinetune train` versus `python -m mlx_lm lora`, same model, data and settings.

Alternates the two for N pairs (timings on shared machines drift; side by side is fair) and
prints wall-clock tokens/s of each and the ratio. Wall clock between the first and the
second-to-last training report, so it includes everything our in-process monitoring does
per step (callbacks, metrics log), not just the step mlx-lm times itself.

    python bench/throughput.py [--pairs 5] [--iters 80] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "resources" / "sample_data"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MLX_LM_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+\S\s+([\d,]+)\s+([\d.]+)k")


def build_model(folder: Path) -> Path:
    from macfinetune.backend.tinymodel import build_demo_model

    return build_demo_model(folder / "model")


def settings(args) -> dict:
    return {"iters": args.iters, "batch": args.batch_size, "report": 10, "rank": 8, "lr": 1e-3, "seq": 128}


def run_macfinetune(model: Path, work: Path, s: dict, n: int) -> float:
    run = work / f"mf-{n}"
    sets = [f"iterations={s['iters']}", f"batch_size={s['batch']}", f"report_every={s['report']}",
            f"rank={s['rank']}", f"alpha={s['rank'] * 20}", f"learning_rate={s['lr']}", f"max_seq_length={s['seq']}",
            "num_layers=-1", "val_batches=1", f"eval_every={s['iters'] * 10}", f"save_every={s['iters'] * 10}",
            "valid_fraction=0.1", "optimizer=adam", "lr_schedule=constant", "warmup_steps=0"]
    cmd = [sys.executable, "-m", "macfinetune", "train", "demo-tiny-lora", "--model", str(model), "--data", str(DATA),
           "--out", str(run), "--set", "mask_prompt=false"]
    for item in sets:
        cmd += ["--set", item]
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    reports = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]
    points = [(r["time"], r["trained_tokens"]) for r in reports]
    return _rate(points), statistics.median(r["tokens_per_second"] for r in reports[1:-1])


def run_mlx_lm(model: Path, work: Path, s: dict, n: int) -> float:
    config = work / f"lora-{n}.yaml"
    config.write_text(f"lora_parameters:\n  rank: {s['rank']}\n  scale: 20.0\n  dropout: 0.0\n")
    cmd = [sys.executable, "-m", "mlx_lm", "lora", "--model", str(model), "--train", "--data", str(DATA),
           "--iters", str(s["iters"]), "--batch-size", str(s["batch"]), "--steps-per-report", str(s["report"]),
           "--learning-rate", str(s["lr"]), "--max-seq-length", str(s["seq"]), "--num-layers", "-1",
           "--val-batches", "1", "--steps-per-eval", str(s["iters"] * 10), "--save-every", str(s["iters"] * 10),
           "--adapter-path", str(work / f"mlx-{n}"), "-c", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    points, own = [], []
    for line in proc.stdout:
        match = MLX_LM_LINE.match(ANSI.sub("", line))
        if match:
            points.append((time.time(), float(match.group(4)) * 1000))
            own.append(float(match.group(3).replace(",", "")))
    if proc.wait() != 0:
        raise SystemExit("mlx_lm lora failed")
    return _rate(points), statistics.median(own[1:-1])


def _rate(points: list[tuple[float, float]]) -> float:
    """Tokens per wall-clock second between the first and the second-to-last report."""
    (t0, k0), (t1, k1) = points[0], points[-2]
    return (k1 - k0) / (t1 - t0)


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--iters", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    s = settings(args)
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        work = Path(tmp)
        model = build_model(work)
        run_mlx_lm(model, work, s, -1)  # warm-up: compile caches, file caches
        print("tokens/s: wall = trained tokens per wall-clock second between reports; own = what the tool reports")
        print(f"{'pair':>4} {'macfinetune wall':>17} {'mlx_lm wall':>12} {'ratio':>6}   "
              f"{'macfinetune own':>16} {'mlx_lm own':>11} {'ratio':>6}")
        walls, owns = [], []
        for n in range(args.pairs):
            first, second = (run_macfinetune, run_mlx_lm) if n % 2 == 0 else (run_mlx_lm, run_macfinetune)
            a = first(model, work, s, n)
            b = second(model, work, s, n)
            ours, theirs = (a, b) if first is run_macfinetune else (b, a)
            walls.append(ours[0] / theirs[0])
            owns.append(ours[1] / theirs[1])
            print(f"{n + 1:>4} {ours[0]:>17,.0f} {theirs[0]:>12,.0f} {walls[-1]:>6.3f}   "
                  f"{ours[1]:>16,.0f} {theirs[1]:>11,.0f} {owns[-1]:>6.3f}", flush=True)
        for name, ratios in (("wall-clock", walls), ("self-reported", owns)):
            print(f"median {name} ratio macfinetune / mlx_lm: {statistics.median(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
        print(f"{args.pairs} pairs; settings {s}")


if __name__ == "__main__":
    main()
