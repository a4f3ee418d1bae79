"""Packing: real tokens/s of `macfinetune train` (data.packing) vs `python -m mlx_lm lora` on short documents.

Builds a llama offline (hidden 256, 4 blocks, 4 heads, 2 KV heads, MLP 512, a BPE tokenizer trained on
the data) and a dataset of short text documents (30-200 tokens each), then trains it with the same
settings (LoRA rank 8 on every linear layer of every block, batch 4, max length 512, Adam 1e-4,
no validation or checkpoints in the measured window) through both, alternating which goes first.

Real tokens are the targets the loss trains on that are not padding. mlx-lm's own count takes one
padding target per padded row (every row here is padded), so its real tokens are its trained tokens
minus one per row. Rates are real tokens per wall-clock second between the first and the last
report (compile and start-up excluded). Also prints the padding fraction of one epoch under mlx-lm's
batching, length buckets and packing, on the bundled sample data and on a skewed-length set.

    python bench/packing_speed.py [--rounds 3] [--iters 30]
    python bench/packing_speed.py --quality 200     # final validation loss at the same real tokens
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 ...   # Linux: a faster BLAS
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MLX_LM_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+\S\s+([\d,]+)\s+([\d.]+)k")
WORDS = ("the sea ship sail wind tide harbour captain crew rope deck storm island map gold coin parrot anchor "
         "wave north south east west star night morning bread water fish net boat lantern compass reef cove "
         "mast hull cargo trade port river hill forest stone bridge road market village tower bell song").split()
BATCH, LENGTH, RANK = 4, 512, 8


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200",
            "TOKENIZERS_PARALLELISM": "false"}


def documents(n: int, seed: int, low: int = 30, high: int = 200) -> list[str]:
    """Texts of ``low``-``high`` words (about as many tokens with a tokenizer trained on them)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) + "." for _ in range(n)]


def build(work: Path) -> tuple[Path, Path]:
    from macfinetune.backend.tinymodel import build_tiny_model

    data = work / "data"
    data.mkdir()
    for name, n, seed in (("train", 2000, 0), ("valid", 100, 1)):
        with open(data / f"{name}.jsonl", "w") as f:
            for text in documents(n, seed):
                f.write(json.dumps({"text": text}) + "\n")
    model = build_tiny_model(work / "model", documents(500, 2), hidden_size=256, num_layers=4, num_heads=4,
                             num_kv_heads=2, intermediate_size=512, vocab_size=1024, max_position_embeddings=2048)
    return model, data


def run_mlx_lm(model: Path, data: Path, work: Path, iters: int, n: int) -> dict:
    config = work / f"lora-{n}.yaml"
    config.write_text(f"lora_parameters:\n  rank: {RANK}\n  scale: 20.0\n  dropout: 0.0\n")
    cmd = [sys.executable, "-m", "mlx_lm", "lora", "--model", str(model), "--train", "--data", str(data),
           "--iters", str(iters), "--batch-size", str(BATCH), "--steps-per-report", "5", "--learning-rate", "1e-4",
           "--max-seq-length", str(LENGTH), "--num-layers", "-1", "--val-batches", "1",
           "--steps-per-eval", str(iters * 10), "--save-every", str(iters * 10),
           "--adapter-path", str(work / f"mlx-{n}"), "-c", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env())
    points = []
    for line in proc.stdout:
        match = MLX_LM_LINE.match(ANSI.sub("", line))
        if match:
            it, trained = int(match.group(1)), float(match.group(4)) * 1000
            points.append((time.time(), trained - BATCH * it))  # less the one padding target per row
    if proc.wait() != 0:
        raise SystemExit("mlx_lm lora failed")
    return {"real_per_s": rate(points)}


def run_macfinetune(model: Path, data: Path, work: Path, iters: int, n: int, packing: bool, lr: str = "1e-4",
                    val_batches: int = 1) -> dict:
    run = work / f"mf-{n}-{packing}"
    sets = [f"iterations={iters}", f"batch_size={BATCH}", "report_every=5", f"rank={RANK}", f"alpha={RANK * 20}",
            f"learning_rate={lr}", f"max_seq_length={LENGTH}", "num_layers=-1", f"val_batches={val_batches}",
            f"eval_every={iters * 10}", f"save_every={iters * 10}", "optimizer=adam", "lr_schedule=constant",
            "warmup_steps=0", "mask_prompt=false", f"packing={str(packing).lower()}"]
    cmd = [sys.executable, "-m", "macfinetune", "train", "demo-tiny-lora", "--model", str(model), "--data", str(data),
           "--out", str(run)]
    for item in sets:
        cmd += ["--set", item]
    subprocess.run(cmd, check=True, capture_output=True, env=env())
    reports = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]
    # trained tokens of a packed run are its real tokens (the packed loss counts no padding); unpacked,
    # mlx-lm's loss counts one padding target per row
    points = [(r["time"], r["trained_tokens"] - (0 if packing else BATCH * r["iteration"])) for r in reports]
    vals = [r["val_loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "val"]
    return {"real_per_s": rate(points), "own_real_per_s": statistics.median(r["real_tokens_per_second"]
                                                                            for r in reports[1:]),
            "real_tokens": points[-1][1], "val_loss": vals[-1] if vals else None}


def quality(model: Path, data: Path, work: Path, iters: int) -> list[str]:
    """The final validation loss (every validation row, unpacked) after the same number of real tokens:
    unpacked for ``iters`` iterations, then packed for as many iterations as reach its real tokens
    (counted on the packed batches the run will draw, from the same seed)."""
    import types

    from mlx_lm.tuner.datasets import CacheDataset, create_dataset
    from mlx_lm.utils import load_tokenizer

    from macfinetune.backend import batching
    from macfinetune.core import dataset as ds
    from macfinetune.core.recipe import Recipe

    plain = run_macfinetune(model, data, work, iters, 100, False, lr="1e-3", val_batches=-1)
    rows = ds.read_jsonl(data / "train.jsonl")
    train = CacheDataset(create_dataset(rows, load_tokenizer(model), types.SimpleNamespace(mask_prompt=False)))
    seen, packed_iters = 0, 0
    for batch in batching.packed_batches(train, BATCH, LENGTH, loop=True, seed=Recipe().training.seed):
        seen, packed_iters = seen + batch.real_tokens, packed_iters + 1
        if seen >= plain["real_tokens"]:
            break
    packed = run_macfinetune(model, data, work, packed_iters, 101, True, lr="1e-3", val_batches=-1)
    return ["| run | iterations | real tokens seen | final validation loss |", "|---|---:|---:|---:|",
            f"| unpacked | {iters} | {plain['real_tokens']:,.0f} | {plain['val_loss']:.4f} |",
            f"| packed | {packed_iters} | {packed['real_tokens']:,.0f} | {packed['val_loss']:.4f} |"]


def rate(points) -> float:
    (t0, k0), (t1, k1) = points[0], points[-1]
    return (k1 - k0) / (t1 - t0)


def padding_table(model: Path, data: Path) -> list[str]:
    """Padding fraction of one epoch: mlx-lm's iterate_batches, length buckets, packing."""
    import types

    import numpy as np
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset
    from mlx_lm.tuner.trainer import iterate_batches
    from mlx_lm.utils import load_tokenizer

    from macfinetune.backend import batching
    from macfinetune.core import dataset as ds

    tokenizer = load_tokenizer(model)
    skewed = [{"text": t} for t in documents(1000, 7, 5, 40)] + [{"text": t} for t in documents(60, 8, 200, 480)]
    random.Random(3).shuffle(skewed)
    sets = {"bundled sample data (chat)": ds.read_jsonl(ROOT / "resources" / "sample_data" / "train.jsonl"),
            "short documents (30-200 words)": ds.read_jsonl(data / "train.jsonl"),
            "skewed lengths (94% 5-40 words, 6% 200-480)": skewed}
    lines = ["| data | rows | tokens per row (min / median / max) | mlx-lm batching | length buckets | packing |",
             "|---|---:|---|---:|---:|---:|"]
    for name, rows in sets.items():
        def fresh(rows=rows):
            return CacheDataset(create_dataset(rows, tokenizer, types.SimpleNamespace(mask_prompt=False)))

        counts = sorted(len(fresh()[i][0]) for i in range(len(rows)))
        stats = f"{counts[0]} / {counts[len(counts) // 2]} / {counts[-1]}"
        np.random.seed(0)
        theirs = batching.padding_fraction(iterate_batches(fresh(), BATCH, LENGTH))
        buckets = batching.padding_fraction(batching.bucketed_batches(fresh(), BATCH, LENGTH, seed=0))
        packed = batching.padding_fraction(batching.packed_batches(fresh(), BATCH, LENGTH, seed=0))
        lines.append(f"| {name} | {len(rows)} | {stats} | {theirs:.1%} | {buckets:.1%} | {packed:.1%} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--padding-only", action="store_true")
    ap.add_argument("--quality", type=int, metavar="ITERS", help="instead of speed: the final validation loss of an "
                    "unpacked run of ITERS iterations and of a packed run that saw as many real tokens (lr 1e-3)")
    a = ap.parse_args()
    import mlx.core as mx
    import mlx_lm

    print(f"# {platform.machine()} {platform.system()}, {os.cpu_count()} cores, mlx {mx.__version__}, "
          f"mlx-lm {mlx_lm.__version__}, python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"BLAS {'OpenBLAS (LD_PRELOAD)' if 'openblas' in os.environ.get('LD_PRELOAD', '') else 'bundled'}")
    with tempfile.TemporaryDirectory(prefix="mf-pack-") as tmp:
        work = Path(tmp)
        model, data = build(work)
        print("\n".join(padding_table(model, data)), flush=True)
        if a.padding_only:
            return
        if a.quality:
            print("\n" + "\n".join(quality(model, data, work, a.quality)), flush=True)
            return
        run_mlx_lm(model, data, work, 6, -1)  # warm-up: kernel caches
        print("\n| round | first | mlx-lm real tok/s | macfinetune packed real tok/s | ratio | macfinetune unpacked "
              "real tok/s | ratio |\n|---:|---|---:|---:|---:|---:|---:|")
        packed_ratios, plain_ratios = [], []
        for n in range(a.rounds):
            runs = [("mlx", lambda n=n: run_mlx_lm(model, data, work, a.iters, n)),
                    ("packed", lambda n=n: run_macfinetune(model, data, work, a.iters, n, True)),
                    ("plain", lambda n=n: run_macfinetune(model, data, work, a.iters, n, False))]
            if n % 2:
                runs.reverse()
            got = {name: fn() for name, fn in runs}
            packed_ratios.append(got["packed"]["real_per_s"] / got["mlx"]["real_per_s"])
            plain_ratios.append(got["plain"]["real_per_s"] / got["mlx"]["real_per_s"])
            print(f"| {n + 1} | {runs[0][0]} | {got['mlx']['real_per_s']:,.0f} | {got['packed']['real_per_s']:,.0f} | "
                  f"{packed_ratios[-1]:.2f} | {got['plain']['real_per_s']:,.0f} | {plain_ratios[-1]:.2f} |", flush=True)
        print(f"\nmedian ratio packed / mlx-lm: {statistics.median(packed_ratios):.2f} "
              f"(min {min(packed_ratios):.2f}, max {max(packed_ratios):.2f}); unpacked / mlx-lm: "
              f"{statistics.median(plain_ratios):.2f} (min {min(plain_ratios):.2f}, max {max(plain_ratios):.2f}); "
              f"{a.rounds} rounds of {a.iters} iterations, batch {BATCH}, max length {LENGTH}")


if __name__ == "__main__":
    main()
