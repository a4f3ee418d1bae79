"""Measure the loading phase: peak memory of a plain load and of a load + on-the-fly quantization.

Builds small llama-shaped models (random weights, safetensors, a few hundred MB, nothing downloaded),
then, each in a fresh process so the peak counter holds only that phase, runs the code training runs
(``backend.models.load_model`` and ``quantize_into(..., loaded=...)``) and records
``mx.get_peak_memory()`` as a ratio of the full-precision weight bytes.

    python bench/probe_loading.py --out resources/estimator/loading.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {
    "L1": dict(hidden_size=1024, num_layers=8, num_heads=16, num_kv_heads=4, intermediate_size=2816, vocab_size=8192),
    "L2": dict(hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=4, intermediate_size=2048, vocab_size=8192),
}
TEXTS = [f"sample text number {i} with some words to train a tokenizer on" for i in range(200)]


def build(folder: Path, shape: dict, dtype: str) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load_model, save_model

    from macfinetune.backend.tinymodel import build_tiny_model

    build_tiny_model(folder, TEXTS, max_position_embeddings=2048, **shape)
    if dtype == "bfloat16":
        model, _ = load_model(folder)
        model.set_dtype(mx.bfloat16)
        mx.eval(model.parameters())
        for f in folder.glob("model*.safetensors"):
            f.unlink()
        save_model(folder, model)
        config = json.loads((folder / "config.json").read_text())
        config["torch_dtype"] = "bfloat16"
        (folder / "config.json").write_text(json.dumps(config))


def measure(folder: Path, mode: str) -> dict:
    """Run in a fresh process: the phase's peak and the full-precision weight bytes."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from macfinetune.backend import models

    mx.reset_peak_memory()
    base = mx.get_active_memory()
    model, tokenizer, _ = models.load_model(folder)
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    loaded_peak = mx.get_peak_memory() - base
    row = {"mode": mode, "weight_bytes": weights, "load_peak": loaded_peak}
    if mode == "quantize":
        with tempfile.TemporaryDirectory() as tmp:
            model, _, _ = models.quantize_into(folder, Path(tmp) / "q", 4, 64, loaded=(model, tokenizer))
            row["quant_bytes"] = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    row["peak"] = mx.get_peak_memory() - base
    row["ratio"] = round(row["peak"] / weights, 3)
    return row


def provenance() -> dict:
    import mlx.core as mx
    import mlx_lm

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"machine": f"{platform.system()} {platform.machine()}", "mlx": mx.__version__,
            "mlx_lm": mlx_lm.__version__, "device": str(mx.default_device()), "commit": commit,
            "date": datetime.date.today().isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1])))
        return
    rows, prov = [], provenance()
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            for dtype in ("float32", "bfloat16"):
                folder = Path(tmp) / f"{name}-{dtype}"
                build(folder, shape, dtype)
                for mode in ("plain", "quantize"):
                    out = subprocess.run([sys.executable, __file__, "--child", str(folder), mode],
                                         capture_output=True, text=True, check=True).stdout
                    row = {"shape": name, "dtype": dtype, **json.loads(out.strip().splitlines()[-1]), **prov}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
