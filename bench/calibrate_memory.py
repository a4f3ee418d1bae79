"""Calibrate the memory estimator: real training runs on this machine, and the seeds' figures.

Part 1 (needs MLX): builds a tiny and a few small models offline (llama, qwen3, gemma3 blocks; bf16,
4-bit and 8-bit), then trains each configuration of a grid (method, batch, sequence length, adapted
layers, rank, target modules, checkpointing, quantization, optimizer, accumulation) with
``macfinetune.backend.training.train_run`` in a fresh process, exactly as ``macfinetune train`` does,
and records the estimate beside the measured peak (``mx.get_peak_memory()`` over the whole run, which
is what mlx-lm reports as "Peak mem").

Part 2 (pure Python): the estimate for every memory figure in the seeds, with the error per row.

Both go to ``resources/estimator/calibration.yaml`` with provenance (machine, versions, date).

    python bench/calibrate_memory.py --work /tmp/calib            # grid + seeds
    python bench/calibrate_memory.py --seeds-only                  # recompute the seed rows only
    python bench/calibrate_memory.py --work /tmp/calib --only small-lora-b2   # one grid row

Rows are padded to mlx-lm's batch length, so every row of the generated data is longer than the
longest max_seq_length in the grid: each batch is exactly ``max_seq_length`` tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macfinetune.core import estimator  # noqa: E402
from macfinetune.core.modelshape import read_shape  # noqa: E402
from macfinetune.core.paths import shipped  # noqa: E402
from macfinetune.core.recipe import Recipe, apply_overrides, with_paths  # noqa: E402

OUT = ROOT / "resources" / "estimator" / "calibration.yaml"
SAMPLE = ROOT / "resources" / "sample_data" / "train.jsonl"
CONFIGS = ROOT / "resources" / "estimator" / "configs"

# Models built offline: name -> (family, sizes, dtype, bits)
MODELS = {
    "tiny": ("llama", dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                          vocab_size=1024), "float32", None),
    "small": ("llama", dict(hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2, intermediate_size=1024,
                           vocab_size=6144), "bfloat16", None),
    "small-q4": ("llama", "small", "bfloat16", 4),
    "small-q8": ("llama", "small", "bfloat16", 8),
    "small-qwen3": ("qwen3", "small", "bfloat16", None),
    "small-gemma3": ("gemma3_text", "small", "bfloat16", None),
}
BASE = ["iterations=3", "report_every=1", "eval_every=1000", "save_every=1000", "val_batches=1",
        "learning_rate=1e-5", "warmup_steps=0", "lr_schedule=constant", "rank=8", "alpha=16"]
# name -> (model, overrides): one mechanism changes at a time around small-lora-b2.
GRID = {
    "tiny-lora-b4-l128": ("tiny", ["batch_size=4", "max_seq_length=128", "num_layers=-1"]),
    "tiny-full-b4-l128": ("tiny", ["type=full", "batch_size=4", "max_seq_length=128", "num_layers=-1"]),
    "small-lora-b2": ("small", ["batch_size=2", "max_seq_length=512", "num_layers=-1"]),
    "small-lora-2-layers": ("small", ["batch_size=2", "max_seq_length=512", "num_layers=2"]),
    "small-lora-b4-l256": ("small", ["batch_size=4", "max_seq_length=256", "num_layers=-1"]),
    "small-lora-b1-l1024": ("small", ["batch_size=1", "max_seq_length=1024", "num_layers=-1"]),
    "small-lora-rank64": ("small", ["batch_size=2", "max_seq_length=512", "num_layers=-1", "rank=64", "alpha=128"]),
    "small-lora-qv-4-layers": ("small", ["batch_size=2", "max_seq_length=512", "num_layers=4",
                                         "target_modules=[q_proj, v_proj]", "rank=16", "alpha=32"]),
    "small-lora-checkpoint": ("small", ["batch_size=2", "max_seq_length=512", "num_layers=-1", "grad_checkpoint=true"]),
    "small-lora-checkpoint-b4-l1024": ("small", ["batch_size=4", "max_seq_length=1024", "num_layers=-1",
                                                 "grad_checkpoint=true"]),
    "small-lora-accumulation-4": ("small", ["batch_size=2", "max_seq_length=512", "num_layers=-1",
                                            "grad_accumulation=4", "iterations=4"]),
    "small-lora-sgd": ("small", ["batch_size=2", "max_seq_length=512", "num_layers=-1", "optimizer=sgd"]),
    "small-dora-4-layers": ("small", ["type=dora", "batch_size=2", "max_seq_length=512", "num_layers=4"]),
    "small-full": ("small", ["type=full", "batch_size=2", "max_seq_length=512", "num_layers=-1"]),
    "small-full-2-layers-adamw": ("small", ["type=full", "batch_size=2", "max_seq_length=512", "num_layers=2",
                                            "optimizer=adamw", "weight_decay=0.01"]),
    "small-full-b1-l256-sgd": ("small", ["type=full", "batch_size=1", "max_seq_length=256", "num_layers=-1",
                                         "optimizer=sgd"]),
    "small-full-b1-l256-adafactor": ("small", ["type=full", "batch_size=1", "max_seq_length=256", "num_layers=-1",
                                               "optimizer=adafactor"]),
    "small-full-checkpoint": ("small", ["type=full", "batch_size=2", "max_seq_length=512", "num_layers=-1",
                                        "grad_checkpoint=true"]),
    "small-q4-lora-b2": ("small-q4", ["batch_size=2", "max_seq_length=512", "num_layers=-1"]),
    "small-q4-lora-checkpoint-b4": ("small-q4", ["batch_size=4", "max_seq_length=512", "num_layers=-1",
                                                 "grad_checkpoint=true"]),
    # Quantized matmuls are slow on MLX's CPU backend (8 tokens/s here): the rows below stay short.
    "small-q8-lora-b1-l256": ("small-q8", ["batch_size=1", "max_seq_length=256", "num_layers=-1"]),
    "small-q4-dora-4-layers-b1-l256": ("small-q4", ["type=dora", "batch_size=1", "max_seq_length=256",
                                                    "num_layers=4"]),
    "small-quantize-on-the-fly-4-b1-l256": ("small", ["quantize=4", "batch_size=1", "max_seq_length=256",
                                                      "num_layers=-1"]),
    "small-qwen3-lora-b2": ("small-qwen3", ["batch_size=2", "max_seq_length=512", "num_layers=-1"]),
    "small-gemma3-lora-b2": ("small-gemma3", ["batch_size=2", "max_seq_length=512", "num_layers=-1"]),
    "small-gemma3-full-b1-l512": ("small-gemma3", ["type=full", "batch_size=1", "max_seq_length=512",
                                                   "num_layers=-1"]),
}


# --- part 1: models, data and runs (MLX) ------------------------------------------------


def sample_texts() -> list[str]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line]
    return [m["content"] for row in rows for m in row["messages"]]


def build_models(work: Path) -> None:
    from macfinetune.backend.tinymodel import build_tiny_model

    texts = sample_texts()
    corpus = texts * 4 + [" ".join(texts[i:i + 7]) for i in range(0, len(texts), 3)]
    for name, (family, sizes, dtype, bits) in MODELS.items():
        folder = work / "models" / name
        if folder.exists():
            continue
        if isinstance(sizes, str) or family != "llama":
            _derived_model(work, name, family, sizes if isinstance(sizes, str) else "small", dtype, bits)
        else:
            build_tiny_model(folder.with_name(name + "-f32"), corpus, max_position_embeddings=4096, **sizes)
            _convert(folder.with_name(name + "-f32"), folder, dtype=dtype)


def _derived_model(work: Path, name: str, family: str, source: str, dtype: str, bits: int | None) -> None:
    models = work / "models"
    if family == "llama":
        _convert(models / f"{source}-f32", models / name, dtype=dtype, bits=bits)
        return
    config = json.loads((models / source / "config.json").read_text())
    config = _family_config(config, family)
    scratch = models / f"{name}-f32"
    _save_random_model(config, scratch, models / source)
    _convert(scratch, models / name, dtype=dtype, bits=bits)


def _family_config(config: dict, family: str) -> dict:
    keep = {k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                   "intermediate_size", "vocab_size", "bos_token_id", "eos_token_id")}
    extra = {
        "qwen3": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 64, "rms_norm_eps": 1e-6,
                  "rope_theta": 1e6, "tie_word_embeddings": True, "max_position_embeddings": 4096},
        "gemma3_text": {"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"], "head_dim": 64,
                        "query_pre_attn_scalar": 64, "sliding_window": 512, "sliding_window_pattern": 3,
                        "rms_norm_eps": 1e-6, "max_position_embeddings": 4096},
    }[family]
    return {**keep, **extra, "torch_dtype": "float32"}


def _save_random_model(config: dict, folder: Path, tokenizer_from: Path) -> None:
    import mlx.core as mx
    from mlx_lm.utils import _get_classes, save_model

    folder.mkdir(parents=True)
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(0)
    model = model_cls(args_cls.from_dict(config))
    mx.eval(model.parameters())
    save_model(folder, model)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for file in tokenizer_from.iterdir():
        if file.name.startswith("tokenizer") or file.suffix == ".jinja":
            shutil.copy2(file, folder / file.name)


def _convert(source: Path, out: Path, dtype: str, bits: int | None = None) -> None:
    from mlx_lm.convert import convert

    convert(str(source), str(out), dtype=dtype, quantize=bool(bits), q_bits=bits, q_group_size=64 if bits else None)


def build_data(work: Path) -> Path:
    folder = work / "data"
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    texts, rng = sample_texts(), random.Random(0)
    for name, count in (("train", 16), ("valid", 4)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(count):
                rng.shuffle(texts)
                f.write(json.dumps({"text": " ".join(texts[:400])}) + "\n")  # ~5,000 tokens
    return folder


def grid_recipe(work: Path, name: str, models: Path | None = None) -> Recipe:
    model, overrides = GRID[name]
    recipe = with_paths(Recipe(name=name), str((models or work / "models") / model), str(work / "data"))
    return apply_overrides(recipe, BASE + overrides)


def run_one(work: Path, name: str) -> dict:
    """Train one grid row in a fresh process; returns the measured peaks."""
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    code = ("import json, sys; from bench.calibrate_memory import child; "
            f"print(json.dumps(child({str(work)!r}, {name!r})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(work: str, name: str) -> dict:
    """In the fresh process: train and report mlx's peak (the reports' maximum and the process's)."""
    import mlx.core as mx

    from macfinetune.backend.training import train_run
    from macfinetune.core.events import TrainReport

    reports: list[float] = []
    tic = time.perf_counter()

    def emit(event):
        if isinstance(event, TrainReport):
            reports.append(event.peak_memory_gb)

    result = train_run(grid_recipe(Path(work), name), Path(work) / "runs" / name, emit)
    if result.state != "finished":
        raise RuntimeError(f"{name}: {result.state} {result.message}")
    return {"reported_peak_gb": max(reports), "process_peak_gb": mx.get_peak_memory() / 1e9,
            "seconds": round(time.perf_counter() - tic, 1)}


GRID_CONFIGS = ROOT / "resources" / "estimator" / "grid"  # the grid models' config.json, with their weights' dtype


def estimate_row(work: Path, name: str, models: Path | None = None) -> dict:
    """The estimate of a grid row; ``models`` may be GRID_CONFIGS (config.json only, no MLX needed)."""
    recipe = grid_recipe(work, name, models)
    shape = read_shape(recipe.model.path)
    settings = replace(estimator.settings_from_recipe(recipe), val_batch_size=min(recipe.training.batch_size, 4),
                       device="cpu")  # this machine runs MLX's CPU backend
    est = estimator.estimate(shape, settings)
    return {"estimate_gb": round(est.total_gb, 5), "phase": est.phase, "breakdown_gb": est.breakdown_gb()}


def measured_from_folder(work: Path, name: str) -> dict | None:
    """A grid row's measurement from an earlier run folder: the largest peak its reports gave."""
    from macfinetune.core import runs

    run_dir = work / "runs" / name
    reports = [r for r in runs.read_metrics(run_dir) if r.get("event") == "train"] if run_dir.is_dir() else []
    if not reports or max(r["iteration"] for r in reports) < int(_override(name, "iterations", 3)):
        return None
    peak = max(r["peak_memory_gb"] for r in reports)
    seconds = max(r["time"] for r in reports) - json.loads((run_dir / "status.json").read_text())["started"]
    return {"reported_peak_gb": peak, "process_peak_gb": peak, "seconds": round(seconds, 1)}


def _override(name: str, key: str, default):
    for item in BASE + GRID[name][1]:
        if item.startswith(key + "="):
            return item.split("=", 1)[1]
    return default


def calibrate_grid(work: Path, only: list[str] | None, previous: list[dict], reuse: bool = False) -> list[dict]:
    build_models(work)
    build_data(work)
    save_grid_configs(work)
    rows = {r["name"]: r for r in previous}
    for name in only or list(GRID):
        measured = (measured_from_folder(work, name) if reuse else None) or run_one(work, name)
        row = {"name": name, "model": GRID[name][0], "settings": GRID[name][1], **estimate_row(work, name),
               "measured_gb": round(measured["process_peak_gb"], 5),
               "reported_peak_gb": round(measured["reported_peak_gb"], 5), "seconds": measured["seconds"],
               "commit": code_commit()}
        row["error"] = round((row["estimate_gb"] - row["measured_gb"]) / row["measured_gb"], 4)
        rows[name] = row
        print(f"{name:34} estimate {row['estimate_gb']:.4f}  measured {row['measured_gb']:.4f}  "
              f"error {row['error']:+.1%}", flush=True)
    return [rows[n] for n in GRID if n in rows]


def save_grid_configs(work: Path) -> None:
    """Ship each grid model's config.json, its dtype set to its weights' (so tests can re-estimate)."""
    for name in MODELS:
        shape = read_shape(work / "models" / name)
        config = json.loads((work / "models" / name / "config.json").read_text())
        config["torch_dtype"] = shape.dtype
        folder = GRID_CONFIGS / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def reestimate_grid(work: Path, rows: list[dict]) -> list[dict]:
    """Recompute the estimates of measured rows (after the estimator changed), from the shipped configs."""
    out = []
    for row in rows:
        new = {**row, **estimate_row(work, row["name"], GRID_CONFIGS)}
        new["error"] = round((new["estimate_gb"] - new["measured_gb"]) / new["measured_gb"], 4)
        out.append(new)
    return out


# --- part 2: the seeds' figures (pure Python) ---------------------------------------------

# Each: the figure, its kind, the model config (resources/estimator/configs), the settings the seed
# states or implies, and how the sequence length was derived.
SEEDS = [
    dict(source="seed 000, Qwen3-1.7B baseline (M4 Max 128GB, MLX-LM)", kind="measured (MLX)", config="Qwen3-1.7B",
         figure_gb=20.6, settings=dict(method="full", num_layers=-1, batch_size=3, max_seq_length=1024),
         note="~3000 tokens per iteration (300-450 tokens/s at 0.10-0.15 it/s) of 3 rows: rows of ~1000 tokens, "
              "padded to 1024; every block trained (16 would give far less than 20.6 GB)"),
    dict(source="seed 000, Gemma3-12B baseline (M4 Max 128GB, MLX-LM)", kind="measured (MLX)", config="gemma-3-12b-it",
         figure_gb=102.1, settings=dict(method="full", num_layers=-1, batch_size=2, max_seq_length=1056),
         note="~2100 tokens per iteration (55-80 tokens/s at 0.025-0.040 it/s) of 2 rows: ~1050, padded to 1056"),
    dict(source="seed 003, Experiment 1 (M1 Ultra, mlx_lm.lora --batch-size 2)", kind="measured (MLX)",
         config="gemma-3-4b-it-4bit", figure_gb=7.532,
         settings=dict(method="lora", num_layers=16, rank=8, target_modules=("q_proj", "v_proj"), batch_size=2,
                       max_seq_length=704),
         sequence_range=[352, 2048],
         note="1.049M trainable = rank 8 on q/v of 16 blocks (mlx-lm's 2024 default); rows average 344 tokens "
              "(137,675 / 400); the longest of the 20 rows is not given: assumed twice the mean (704); "
              "bounds are the mean (352) and the 2048 cap"),
    dict(source="seed 003, Experiment 2 (M1 Ultra, --batch-size 1 --grad-checkpoint, 200 iterations)",
         kind="measured (MLX)", config="gemma-3-4b-it-4bit", figure_gb=6.101,
         settings=dict(method="lora", num_layers=16, rank=8, target_modules=("q_proj", "v_proj"), batch_size=1,
                       max_seq_length=2048, grad_checkpoint=True),
         sequence_range=[384, 2048],
         note="2,831 rows averaging 368 tokens; the longest batch in 200 iterations is not given: assumed the "
              "2048 cap"),
    dict(source="seed 003, Experiment 3 (same, 2000 iterations)", kind="measured (MLX)", config="gemma-3-4b-it-4bit",
         figure_gb=6.335,
         settings=dict(method="lora", num_layers=16, rank=8, target_modules=("q_proj", "v_proj"), batch_size=1,
                       max_seq_length=2048, grad_checkpoint=True),
         sequence_range=[384, 2048], note="as above; more iterations meet longer rows"),
    dict(source="seed 003, 'Model weights (4-bit): ~2.3 GB'", kind="seed figure (part)", config="gemma-3-4b-it-4bit",
         figure_gb=2.3, term="weights", settings=dict(method="lora", num_layers=16, rank=8,
                                                       target_modules=("q_proj", "v_proj"), batch_size=1,
                                                       max_seq_length=512)),
    dict(source="seed 003, 'LoRA parameters: ~4.2 MB (1.049M x 4 bytes)' + 'Adam ~8.4 MB'", kind="seed figure (part)",
         config="gemma-3-4b-it-4bit", figure_gb=0.0168, term="trainable",
         settings=dict(method="lora", num_layers=16, rank=8, target_modules=("q_proj", "v_proj"), batch_size=1,
                       max_seq_length=512),
         note="weights 4.2 MB + Adam 8.4 MB + gradients 4.2 MB = 16.8 MB (the seed leaves out the gradients)"),
    # Seed 000's estimates for the recipes it proposes (the author's estimates, not measurements).
    dict(source="seed 000, Gemma3-27B full (estimate)", kind="seed estimate", config="gemma-3-27b-it",
         figure_gb=[180, 220], settings=dict(method="full", num_layers=-1, batch_size=1, max_seq_length=2048,
                                            grad_checkpoint=True)),
    dict(source="seed 000, Gemma3-27B LoRA recipe (estimate)", kind="seed estimate", config="gemma-3-27b-it",
         figure_gb=[85, 95], settings=dict(method="lora", num_layers=16, rank=64, batch_size=1, max_seq_length=2048,
                                          grad_checkpoint=True)),
    dict(source="seed 000, Qwen3-14B full recipe (estimate)", kind="seed estimate", config="Qwen3-14B",
         figure_gb=[110, 125], settings=dict(method="full", num_layers=-1, batch_size=1, max_seq_length=2048,
                                            grad_checkpoint=True, optimizer="adamw")),
    dict(source="seed 000, Qwen3-14B LoRA recipe (estimate)", kind="seed estimate", config="Qwen3-14B",
         figure_gb=[65, 75], settings=dict(method="lora", num_layers=20, rank=128, batch_size=2, max_seq_length=3072)),
    dict(source="seed 000, Qwen3-32B full (estimate)", kind="seed estimate", config="Qwen3-32B",
         figure_gb=[250, 300], settings=dict(method="full", num_layers=-1, batch_size=1, max_seq_length=1536,
                                            grad_checkpoint=True)),
    dict(source="seed 000, Qwen3-32B LoRA recipe (estimate)", kind="seed estimate", config="Qwen3-32B",
         figure_gb=[115, 125], settings=dict(method="lora", num_layers=8, rank=32, batch_size=1, max_seq_length=1536,
                                            grad_checkpoint=True)),
    dict(source="seed 000, Mistral-Small-24B full (estimate)", kind="seed estimate",
         config="Mistral-Small-24B-Instruct-2501", figure_gb=[160, 200],
         settings=dict(method="full", num_layers=-1, batch_size=1, max_seq_length=2048, grad_checkpoint=True)),
    dict(source="seed 000, Mistral-Small-24B LoRA recipe (estimate)", kind="seed estimate",
         config="Mistral-Small-24B-Instruct-2501", figure_gb=[90, 105],
         settings=dict(method="lora", num_layers=14, rank=96, batch_size=1, max_seq_length=2048)),
    # Seed 001: an 18 GB M3 with a PyTorch trainer (torch_compile, bitsandbytes); model inferred (phi-2,
    # its "PHI2 Layer Guide"), LoRA r 8 as its defaults.
    *[dict(source=f"seed 001, M3 18GB '{label}' (PyTorch; model inferred: phi-2 LoRA r8)", kind="other runtime",
           config="phi-2", figure_gb=gb, settings=dict(method="lora", num_layers=-1, rank=8, batch_size=b,
                                                        max_seq_length=length, grad_checkpoint=checkpoint))
      for label, gb, b, length, checkpoint in (("High", 16, 3, 1024, False), ("Balanced", 14, 2, 1024, False),
                                                ("Low", 12, 2, 768, True), ("Safe", 10, 1, 768, True))],
    # Seed 002: litgpt on CUDA (PyTorch, bf16, bitsandbytes nf4 for QLoRA), max_seq_length 512, micro batch.
    *[dict(source=f"seed 002, litgpt {label} (CUDA)", kind="other runtime", config=config, figure_gb=gb, dtype="bfloat16",
           prequantized=q, settings=dict(method=method, num_layers=-1, rank=8, batch_size=b, max_seq_length=512))
      for label, config, method, b, q, gb in (
          ("TinyLlama 1.1B LoRA", "TinyLlama-1.1B", "lora", 8, None, 4),
          ("Llama 2 7B LoRA", "Llama-2-7b-hf", "lora", 2, None, 16),
          ("Llama 3 8B LoRA", "Meta-Llama-3-8B", "lora", 1, None, 20),
          ("Mistral 7B LoRA", "Mistral-7B-v0.1", "lora", 2, None, 16),
          ("Phi-2 LoRA", "phi-2", "lora", 4, None, 8),
          ("Falcon 7B LoRA", "falcon-7b", "lora", 1, None, 18),
          ("Gemma 7B LoRA", "gemma-7b", "lora", 1, None, 18),
          ("TinyLlama 1.1B QLoRA", "TinyLlama-1.1B", "lora", 8, 4, 2),
          ("Llama 2 7B QLoRA", "Llama-2-7b-hf", "lora", 2, 4, 6),
          ("Llama 3 8B QLoRA", "Meta-Llama-3-8B", "lora", 2, 4, 8),
          ("Mistral 7B QLoRA", "Mistral-7B-v0.1", "lora", 2, 4, 6),
          ("Phi-2 QLoRA", "phi-2", "lora", 4, 4, 3),
          ("Falcon 7B QLoRA", "falcon-7b", "lora", 1, 4, 6),
          ("Gemma 2B QLoRA", "gemma-2b", "lora", 2, 4, 3),
          ("Gemma 7B QLoRA", "gemma-7b", "lora", 1, 4, 6),
          ("TinyLlama 1.1B full", "TinyLlama-1.1B", "full", 2, None, 12),
          ("Phi-2 full", "phi-2", "full", 1, None, 24))],
]


def seed_shape(shape, row: dict):
    """litgpt trains in bf16 whatever the checkpoint's dtype; its QLoRA compares with a 4-bit MLX copy."""
    if row.get("dtype"):
        shape = replace(shape, dtype=row["dtype"])
    if row.get("prequantized"):
        shape = replace(shape, quant_bits=row["prequantized"], quant_group=64)
    return shape


def seed_rows() -> list[dict]:
    return [_seed_row(row) for row in SEEDS]


def _seed_row(row: dict) -> dict:
    shape = read_shape(shipped("resources", "estimator", "configs", row["config"]))
    shape = seed_shape(shape, row)
    settings = estimator.Settings(**row["settings"])
    est = estimator.estimate(shape, settings)
    value = est.term(row["term"]).bytes / 1e9 if row.get("term") else est.total_gb
    figure = row["figure_gb"]
    middle = sum(figure) / 2 if isinstance(figure, list) else figure
    out = {k: v for k, v in row.items() if k not in ("settings",)}
    out["settings"] = {k: list(v) if isinstance(v, tuple) else v for k, v in row["settings"].items()}
    out.update(estimate_gb=round(value, 3), error=round((value - middle) / middle, 4))
    if row.get("sequence_range"):
        low, high = (estimator.estimate(shape, replace(settings, max_seq_length=n)).total_gb
                     for n in row["sequence_range"])
        out["estimate_range_gb"] = [round(low, 3), round(high, 3)]
        out["implied_sequence_length"] = implied_length(shape, settings, middle)
    return out


def implied_length(shape, settings, figure_gb: float) -> int | None:
    """The sequence length at which the estimate equals the figure (None outside 32..32768)."""
    low, high = 32, 32768
    if estimator.estimate(shape, replace(settings, max_seq_length=low)).total_gb > figure_gb:
        return None
    while high - low > 8:
        mid = (low + high) // 2
        total = estimator.estimate(shape, replace(settings, max_seq_length=mid)).total_gb
        low, high = (mid, high) if total < figure_gb else (low, mid)
    return low


# --- writing ------------------------------------------------------------------------------


def code_commit() -> str:
    """The commit of the code that measures (with '+dirty' when the tree has changes): each row names it."""
    here = Path(__file__).parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=here).stdout
    return head.strip() + ("+dirty" if dirty.strip() else "")


def provenance() -> dict:
    try:
        import mlx.core as mx
        import mlx_lm

        versions = {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__, "device": str(mx.default_device())}
    except ImportError:
        versions = {}
    return {"machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores", **versions,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
            "source": "bench/calibrate_memory.py", "commit": code_commit()}


def summary(rows: list[dict], kinds: tuple[str, ...] | None = None) -> dict:
    errors = [abs(r["error"]) for r in rows if kinds is None or r.get("kind") in kinds]
    if not errors:
        return {}
    return {"rows": len(errors), "median_abs_error": round(statistics.median(errors), 4),
            "worst_abs_error": round(max(errors), 4)}


def write(path: Path, grid: list[dict], grid_provenance: dict, seeds: list[dict]) -> None:
    data = {
        "grid": {"provenance": grid_provenance, "summary": summary(grid), "rows": grid},
        "seeds": {"provenance": provenance() | {"note": "estimates from the shipped configs; figures as the seeds state them"},
                  "summary": {"measured (MLX)": summary(seeds, ("measured (MLX)",)),
                              "seed figure (part)": summary(seeds, ("seed figure (part)",)),
                              "seed estimate": summary(seeds, ("seed estimate",)),
                              "other runtime": summary(seeds, ("other runtime",))},
                  "rows": seeds},
    }
    header = ("# Calibration of the memory estimator (docs/estimator.md shows these tables).\n"
              "# grid: real training runs on this machine, estimate vs measured mx.get_peak_memory().\n"
              "# seeds: every memory figure in the seeds, estimate vs figure (ranges: error against the middle).\n"
              "# Written by bench/calibrate_memory.py; do not edit by hand.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")


def markdown(path: Path) -> str:
    """The calibration tables as Markdown, for docs/estimator.md."""
    data = yaml.safe_load(path.read_text())
    grid, seeds = data["grid"], data["seeds"]
    lines = ["| grid row | model | estimate GB | measured GB | error |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['model']} | {r['estimate_gb']:.4f} | {r['measured_gb']:.4f} | {r['error']:+.1%} |"
              for r in grid["rows"]]
    g = grid["summary"]
    lines += ["", f"{g['rows']} runs: median |error| {g['median_abs_error']:.1%}, worst {g['worst_abs_error']:.1%}.", "",
              "| seed figure | kind | figure GB | estimate GB | error | notes |", "|---|---|---:|---:|---:|---|"]
    for r in seeds["rows"]:
        figure = "-".join(f"{x:g}" for x in r["figure_gb"]) if isinstance(r["figure_gb"], list) else f"{r['figure_gb']:g}"
        extra = ""
        if r.get("estimate_range_gb"):
            low, high = r["estimate_range_gb"]
            extra = (f"{low:.2f}-{high:.2f} GB over the possible row lengths; the figure implies rows of "
                     f"{r.get('implied_sequence_length')} tokens")
        lines.append(f"| {r['source']} | {r['kind']} | {figure} | {r['estimate_gb']:.2f} | {r['error']:+.0%} | {extra} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/macfinetune-calibration"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", nargs="*", help="grid rows to (re)measure")
    parser.add_argument("--seeds-only", action="store_true", help="recompute the seed rows; keep the grid")
    parser.add_argument("--reestimate", action="store_true", help="recompute the grid's estimates; keep measurements")
    parser.add_argument("--reuse", action="store_true",
                        help="take measurements from run folders an earlier (interrupted) calibration left in --work")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(args.out))
        return 0
    old = yaml.safe_load(args.out.read_text()) if args.out.exists() else {}
    grid = (old.get("grid") or {}).get("rows", [])
    grid_provenance = (old.get("grid") or {}).get("provenance", {})
    if args.reestimate:
        grid = reestimate_grid(args.work, grid)
    elif not args.seeds_only:
        grid = calibrate_grid(args.work, args.only, grid, reuse=args.reuse)
        grid_provenance = provenance()
    write(args.out, grid, grid_provenance, seed_rows())
    print(json.dumps({"grid": summary(grid)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
