"""Write the shipped recipe catalog: recipes/*.yaml and resources/estimator/catalog.yaml.

Every recipe is built as a ``Recipe`` (so it passes the same validation as a user's file) and
written with ``dump_recipe`` (so every key carries its help text and the files follow the schema).
What is not a training setting (the seed it comes from, the memory and speed the seed reports,
feasibility on the seed's machine) goes to resources/estimator/catalog.yaml, keyed by recipe name.

    python packaging/make_recipes.py            # rewrite the catalog
    python packaging/make_recipes.py --check    # exit 1 if the files on disk differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macfinetune.core.recipe import dump_recipe, recipe_from_dict  # noqa: E402

RECIPES = ROOT / "recipes"
CATALOG = ROOT / "resources" / "estimator" / "catalog.yaml"
KEEP = {"demo-tiny-lora", "demo-tiny-dpo"}  # hand-written recipes this script leaves alone

S000 = "seed 000_18480debd14d688a.txt"
S001 = "seed 001_36bb6b9c668d0725.txt"
S002 = "seed 002_60bb65621d4b1b58.txt"
S003 = "seed 003_6c7fa67c0062e733.txt"
S004 = "seed 004_e90e7f2e2f76fa3a.txt"
M4MAX = "MacBook Pro M4 Max, 128 GB"

# Hugging Face ids (and the names people use) for the shapes under resources/estimator/configs.
MODELS = {
    "Qwen/Qwen3-1.7B": "Qwen3-1.7B", "mlx-community/Qwen3-1.7B-bf16": "Qwen3-1.7B",
    "Qwen/Qwen3-14B": "Qwen3-14B", "mlx-community/Qwen3-14B-bf16": "Qwen3-14B",
    "Qwen/Qwen3-32B": "Qwen3-32B", "mlx-community/Qwen3-32B-bf16": "Qwen3-32B",
    "google/gemma-3-4b-it": "gemma-3-4b-it", "mlx-community/gemma-3-4b-it-4bit": "gemma-3-4b-it-4bit",
    "google/gemma-3-12b-it": "gemma-3-12b-it", "mlx-community/gemma-3-12b-it-bf16": "gemma-3-12b-it",
    "google/gemma-3-27b-it": "gemma-3-27b-it", "mlx-community/gemma-3-27b-it-bf16": "gemma-3-27b-it",
    "mistralai/Mistral-Small-24B-Instruct-2501": "Mistral-Small-24B-Instruct-2501",
    "mlx-community/Mistral-Small-24B-Instruct-2501-bf16": "Mistral-Small-24B-Instruct-2501",
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": "TinyLlama-1.1B",
    "meta-llama/Llama-2-7b-hf": "Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B": "Meta-Llama-3-8B",
    "meta-llama/Llama-3.2-3B-Instruct": "Llama-3.2-3B-Instruct", "mistralai/Mistral-7B-v0.1": "Mistral-7B-v0.1",
    "microsoft/phi-2": "phi-2", "google/gemma-7b": "gemma-7b", "google/gemma-2b": "gemma-2b",
    "google/gemma-2-2b-it": "gemma-2-2b-it", "mlx-community/gemma-2-2b-it-4bit": "gemma-2-2b-it",
    "tiiuae/falcon-7b": "falcon-7b",
}
CONFIG_PROVENANCE = (
    "configs/*/config.json hold each model's published architecture (the public config.json fields that set "
    "its size: hidden, intermediate, layers, heads, kv heads, head_dim, vocab, tying, dtype), written from the "
    "model cards and Hugging Face configs as of 2025; no weights. Multimodal Gemma 3 configs keep the text "
    "model under text_config, as Hugging Face does; mlx-lm trains only the text model."
)


def entry(name, description, meta, model="", quantize=None, data=None, method=None, training=None, eval=None):
    """One catalog row: the recipe's sections (only what differs from the defaults) and its notes."""
    sections = {"model": {"path": model, "quantize": quantize}, "data": data or {}, "method": method or {},
                "training": training or {}, "eval": eval or {}}
    return name, description, sections, meta


def _seed000() -> list:
    def lora(lr, iters, layers, rank, alpha, seq, warmup, schedule="constant", gc=False, batch=1, kind="lora"):
        return dict(method={"type": kind, "num_layers": layers, "rank": rank, "alpha": float(alpha)},
                    data={"max_seq_length": seq},
                    training={"batch_size": batch, "learning_rate": lr, "iterations": iters, "warmup_steps": warmup,
                              "lr_schedule": schedule, "grad_checkpoint": gc},
                    eval={"eval_every": 25, "save_every": 50})

    def full(lr, iters, seq, batch, gc, warmup=0, schedule="constant", decay=0.0):
        return dict(method={"type": "full", "num_layers": -1}, data={"max_seq_length": seq},
                    training={"batch_size": batch, "learning_rate": lr, "iterations": iters, "warmup_steps": warmup,
                              "lr_schedule": schedule, "grad_checkpoint": gc, "weight_decay": decay,
                              "optimizer": "adamw" if decay else "adam"},
                    eval={"eval_every": 25, "save_every": 50})

    def meta(model, config, section, memory=None, kind="seed estimate", feasibility=None, **more):
        return {"model": model, "config": config, "source": f"{S000}, {section}", "machine": M4MAX,
                "memory_gb": memory, "memory_kind": kind, "feasibility": feasibility, **more}

    q17, g12, g27 = "mlx-community/Qwen3-1.7B-bf16", "mlx-community/gemma-3-12b-it-bf16", "mlx-community/gemma-3-27b-it-bf16"
    q14, q32, m24 = "mlx-community/Qwen3-14B-bf16", "mlx-community/Qwen3-32B-bf16", "mlx-community/Mistral-Small-24B-Instruct-2501-bf16"
    return [
        entry("qwen3-1.7b-full", "Continued pre-training baseline: Qwen3-1.7B, every weight (seed 000).",
              meta(q17, "Qwen3-1.7B", "Qwen3-1.7B Performance Baseline", 20.6, "measured", "ran",
                   speed_it_s=[0.10, 0.15], tokens_per_second=[300, 450], duration="~1 hour (400 iterations)",
                   note="rows of ~1000 tokens (300-450 tokens/s at 0.10-0.15 it/s, batch 3)"),
              model=q17, **full(3e-6, 400, 1024, 3, False)),
        entry("gemma3-12b-full", "Continued pre-training baseline: Gemma 3 12B, every weight (seed 000).",
              meta(g12, "gemma-3-12b-it", "Gemma3-12B Performance Baseline", 102.1, "measured", "ran, near the limit",
                   speed_it_s=[0.025, 0.040], tokens_per_second=[55, 80],
                   duration="~4.5 hours (505 iterations, stopped early)", note="rows of ~1050 tokens"),
              model=g12, **full(6e-6, 505, 1024, 2, False)),
        entry("gemma3-27b-full", "Gemma 3 27B, every weight: the seed advises against it (180-220 GB).",
              meta(g27, "gemma-3-27b-it", "Gemma3-27B Full Fine-Tuning", [180, 220], feasibility="not recommended",
                   note="settings from the seed's general guidelines (15-30B: batch 1, 2e-6..4e-6, 2048 tokens)"),
              model=g27, **full(3e-6, 1000, 2048, 1, True, 50, "cosine")),
        entry("gemma3-27b-lora", "Gemma 3 27B LoRA, rank 64 on 16 blocks, checkpointing (seed 000).",
              meta(g27, "gemma-3-27b-it", "Gemma3-27B LoRA Fine-Tuning", [85, 95], feasibility="recommended",
                   speed_it_s=[0.015, 0.025], tokens_per_second=[30, 50], duration="15-20 hours"),
              model=g27, **lora(4e-6, 1200, 16, 64, 128, 2048, 60, "cosine", True)),
        entry("gemma3-27b-dora", "Gemma 3 27B DoRA, rank 32 on 12 blocks, checkpointing (seed 000).",
              meta(g27, "gemma-3-27b-it", "Gemma3-27B DoRA Fine-Tuning", feasibility="recommended (better than LoRA)"),
              model=g27, **lora(3e-6, 1000, 12, 32, 64, 2048, 50, "cosine", True, kind="dora")),
        entry("qwen3-14b-full", "Qwen3-14B, every weight, conservative (seed 000: marginal on 128 GB).",
              meta(q14, "Qwen3-14B", "Qwen3-14B Full Fine-Tuning", [110, 125], feasibility="marginal",
                   speed_it_s=[0.020, 0.030], duration="8-12 hours"),
              model=q14, **full(4e-6, 800, 2048, 1, True, 40, "cosine", 0.01)),
        entry("qwen3-14b-lora", "Qwen3-14B LoRA, rank 128 on 20 blocks, 3072 tokens (seed 000).",
              meta(q14, "Qwen3-14B", "Qwen3-14B LoRA Fine-Tuning", [65, 75], feasibility="highly recommended",
                   speed_it_s=[0.025, 0.035], duration="5-7 hours"),
              model=q14, **lora(5e-6, 600, 20, 128, 256, 3072, 30, "cosine", batch=2)),
        entry("qwen3-14b-dora", "Qwen3-14B DoRA, rank 64 on 16 blocks (seed 000).",
              meta(q14, "Qwen3-14B", "Qwen3-14B DoRA Fine-Tuning", feasibility="recommended"),
              model=q14, **lora(4e-6, 500, 16, 64, 128, 3072, 25, batch=2, kind="dora")),
        entry("qwen3-32b-full", "Qwen3-32B, every weight: not feasible on 128 GB (seed 000: 250-300 GB).",
              meta(q32, "Qwen3-32B", "Qwen3-32B Full Fine-Tuning", [250, 300], feasibility="not feasible",
                   note="settings from the seed's general guidelines (30B+: batch 1, 1e-6..3e-6, 1536 tokens)"),
              model=q32, **full(2e-6, 800, 1536, 1, True, 40, "cosine")),
        entry("qwen3-32b-lora", "Qwen3-32B LoRA, rank 32 on 8 blocks, 1536 tokens (seed 000: tight).",
              meta(q32, "Qwen3-32B", "Qwen3-32B LoRA Fine-Tuning", [115, 125], feasibility="marginal",
                   speed_it_s=[0.010, 0.020], duration="12-20 hours"),
              model=q32, **lora(3e-6, 800, 8, 32, 64, 1536, 40, gc=True)),
        entry("qwen3-32b-dora", "Qwen3-32B DoRA, rank 24 on 6 blocks, 1536 tokens (seed 000).",
              meta(q32, "Qwen3-32B", "Qwen3-32B DoRA Fine-Tuning", feasibility="preferred over LoRA"),
              model=q32, **lora(2e-6, 600, 6, 24, 48, 1536, 30, kind="dora")),
        entry("mistral-small-24b-full", "Mistral Small 24B, every weight: the seed advises against it.",
              meta(m24, "Mistral-Small-24B-Instruct-2501", "Mistral-Small-24B Full Fine-Tuning", [160, 200],
                   feasibility="not recommended",
                   note="settings from the seed's general guidelines (15-30B: batch 1, 2e-6..4e-6, 2048 tokens)"),
              model=m24, **full(3e-6, 1000, 2048, 1, True, 50, "cosine")),
        entry("mistral-small-24b-lora", "Mistral Small 24B LoRA, rank 96 on 14 blocks (seed 000).",
              meta(m24, "Mistral-Small-24B-Instruct-2501", "Mistral-Small-24B LoRA Fine-Tuning", [90, 105],
                   feasibility="recommended", speed_it_s=[0.018, 0.028], duration="10-15 hours"),
              model=m24, **lora(4e-6, 1000, 14, 96, 192, 2048, 50, "cosine")),
        entry("mistral-small-24b-dora", "Mistral Small 24B DoRA, rank 48 on 10 blocks (seed 000).",
              meta(m24, "Mistral-Small-24B-Instruct-2501", "Mistral-Small-24B DoRA Fine-Tuning",
                   feasibility="highly recommended"),
              model=m24, **lora(3e-6, 800, 10, 48, 96, 2048, 40, kind="dora")),
    ]


def _seed001() -> list:
    """The 18 GB M3 presets and the three recommended configurations; the guide's LoRA defaults."""
    defaults = {"rank": 8, "alpha": 32.0, "dropout": 0.05, "num_layers": -1}

    def preset(name, description, batch, accumulation, length, gc, memory, epochs=20.0, lr=2e-4, label=None):
        save = accumulation * -(-50 // accumulation)  # checkpoints fall on optimizer updates
        meta = {"model": "microsoft/phi-2 (inferred)", "config": "phi-2", "source": f"{S001}, {label}",
                "machine": "MacBook Pro M3, 18 GB" if memory else None, "memory_gb": memory,
                "memory_kind": "seed figure (PyTorch trainer)" if memory else None,
                "note": "the guide's trainer is PyTorch (torch_compile, bitsandbytes); its model is inferred from "
                        "its 'PHI2 Layer Guide'; LoRA rank 8, alpha 32, dropout 0.05 and 2e-4 are its defaults"}
        return entry(name, description, meta, model="microsoft/phi-2", data={"max_seq_length": length},
                     method=dict(defaults),
                     training={"batch_size": batch, "grad_accumulation": accumulation, "grad_checkpoint": gc,
                               "iterations": None, "epochs": epochs, "learning_rate": lr, "warmup_ratio": 0.05},
                     eval={"save_every": save, "eval_every": save})

    return [
        preset("m3-18gb-high", "18 GB M3, high memory use (~16 GB): batch 3 x 8, 1024 tokens (seed 001).",
               3, 8, 1024, False, 16, label="MacBook Pro M3 (18GB) 'High Memory Usage'"),
        preset("m3-18gb-balanced", "18 GB M3, balanced (~14 GB): batch 2 x 16, 1024 tokens (seed 001).",
               2, 16, 1024, False, 14, label="MacBook Pro M3 (18GB) 'Balanced'"),
        preset("m3-18gb-low", "18 GB M3, low memory (~12 GB): batch 2 x 16, 768 tokens, checkpointing (seed 001).",
               2, 16, 768, True, 12, label="MacBook Pro M3 (18GB) 'Low Memory Usage'"),
        preset("m3-18gb-safe", "18 GB M3, safe mode (~10 GB): batch 1 x 32, 768 tokens, checkpointing (seed 001).",
               1, 32, 768, True, 10, label="MacBook Pro M3 (18GB) 'Safe Mode'"),
        preset("quick-test", "Quick test: batch 2 x 8, 3 epochs, 2e-4 (seed 001).", 2, 8, 1024, False, None,
               epochs=3.0, label="Recommended Configurations, 'For Quick Testing'"),
        preset("production", "Production: batch 4 x 16, 20 epochs, 1e-4 (seed 001).", 4, 16, 1024, False, None,
               lr=1e-4, label="Recommended Configurations, 'For Production Training'"),
        preset("memory-limited", "Memory-limited: batch 2 x 32, 768 tokens, checkpointing (seed 001).",
               2, 32, 768, True, None, label="Recommended Configurations, 'For Memory-Limited Systems'"),
    ]


def _seed002() -> list:
    """litgpt's config_hub recipes in MLX terms: global/micro batch -> batch x accumulation, nf4 -> 4-bit."""
    rows = [  # name, model id, config, method, quantize, global, micro, warmup, epochs, lr, memory (CUDA)
        ("tinyllama-1.1b-lora", "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", "TinyLlama-1.1B", "lora", None, 8, 8, 10, 3, 3e-4, 4),
        ("llama-2-7b-lora", "meta-llama/Llama-2-7b-hf", "Llama-2-7b-hf", "lora", None, 8, 2, 10, 4, 1e-4, 16),
        ("llama-3-8b-lora", "meta-llama/Meta-Llama-3-8B", "Meta-Llama-3-8B", "lora", None, 8, 1, 10, 2, 1e-4, 20),
        ("mistral-7b-lora", "mistralai/Mistral-7B-v0.1", "Mistral-7B-v0.1", "lora", None, 8, 2, 10, 4, 1e-4, 16),
        ("phi-2-lora", "microsoft/phi-2", "phi-2", "lora", None, 8, 4, 10, 1, 1e-4, 8),
        ("gemma-7b-lora", "google/gemma-7b", "gemma-7b", "lora", None, 6, 1, 200, 2, 1e-4, 18),
        ("tinyllama-1.1b-qlora", "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", "TinyLlama-1.1B", "lora", 4, 8, 8, 10, 3, 3e-4, 2),
        ("llama-2-7b-qlora", "meta-llama/Llama-2-7b-hf", "Llama-2-7b-hf", "lora", 4, 8, 2, 10, 4, 1e-4, 6),
        ("llama-3-8b-qlora", "meta-llama/Meta-Llama-3-8B", "Meta-Llama-3-8B", "lora", 4, 8, 2, 10, 2, 1e-4, 8),
        ("mistral-7b-qlora", "mistralai/Mistral-7B-v0.1", "Mistral-7B-v0.1", "lora", 4, 8, 2, 10, 4, 1e-4, 6),
        ("phi-2-qlora", "microsoft/phi-2", "phi-2", "lora", 4, 8, 4, 10, 1, 1e-4, 3),
        ("gemma-2b-qlora", "google/gemma-2b", "gemma-2b", "lora", 4, 6, 2, 200, 2, 1e-4, 3),
        ("gemma-7b-qlora", "google/gemma-7b", "gemma-7b", "lora", 4, 6, 1, 200, 2, 1e-4, 6),
        ("tinyllama-1.1b-full", "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", "TinyLlama-1.1B", "full", None, 8, 2, 100, 3, 5e-5, 12),
        ("phi-2-full", "microsoft/phi-2", "phi-2", "full", None, 8, 1, 100, 2, 3e-5, 24),
    ]
    out = []
    for name, model, config, method, quantize, global_batch, micro, warmup, epochs, lr, memory in rows:
        accumulation = global_batch // micro
        kind = {"lora": "LoRA", "full": "full fine-tuning"}[method] if not quantize else "QLoRA (MLX 4-bit)"
        adapter = {} if method == "full" else {"rank": 8, "alpha": 16.0, "dropout": 0.05}
        min_lr = 0.6 if name == "llama-2-7b-qlora" else 0.0  # the recipe's min_lr 6e-5 of 1e-4
        meta = {"model": model, "config": config, "source": f"{S002}, litgpt {name}", "machine": "NVIDIA GPU (CUDA)",
                "memory_gb": memory, "memory_kind": "seed figure (litgpt on CUDA)",
                "note": "litgpt micro/global batch -> batch x accumulation; bnb.nf4 -> MLX affine 4-bit (group 64); "
                        "learning rate from the seed's table where the recipe gives none"}
        out.append(entry(
            name, f"{model.split('/')[-1]} {kind}: litgpt's recipe in MLX terms (seed 002).", meta, model=model,
            quantize=quantize, data={"max_seq_length": 512},
            method={"type": method, "num_layers": -1, **adapter},
            training={"batch_size": micro, "grad_accumulation": accumulation, "iterations": None,
                      "epochs": float(epochs), "learning_rate": lr, "lr_schedule": "cosine", "min_lr_ratio": min_lr,
                      "warmup_steps": warmup},
            eval={"save_every": 48, "eval_every": 48}))
    return out


def _seed003_004() -> list:
    return [
        entry("gemma-3-4b-qlora-translation",
              "Gemma 3 4B (4-bit) LoRA that won seed 003: batch 1, checkpointing, best at iteration 1800.",
              {"model": "mlx-community/gemma-3-4b-it-4bit", "config": "gemma-3-4b-it-4bit",
               "source": f"{S003}, 'Proven Configuration' and Experiments 2-3", "machine": "Mac M1 Ultra, 128 GB",
               "memory_gb": 6.101, "memory_kind": "measured", "feasibility": "ran",
               "speed_it_s": [1.0, 1.0], "tokens_per_second": [350, 350], "duration": "~30 min for 1800 iterations",
               "note": "rank 8 on q_proj and v_proj of 16 blocks (1.049M parameters) and scale 20 (alpha 160) are "
                       "mlx-lm's 2024 defaults the seed ran with; 6.335 GB after 2000 iterations"},
              model="mlx-community/gemma-3-4b-it-4bit",
              method={"type": "lora", "num_layers": 16, "rank": 8, "alpha": 160.0,
                      "target_modules": ["q_proj", "v_proj"]},
              training={"batch_size": 1, "iterations": 1800, "learning_rate": 1e-5, "grad_checkpoint": True},
              eval={"eval_every": 200, "save_every": 200}),
        entry("llama-3.2-3b-qlora-dialogue",
              "Llama 3.2 3B Instruct QLoRA on every linear layer, r 32, batch 8 x 2 (seed 004).",
              {"model": "meta-llama/Llama-3.2-3B-Instruct", "config": "Llama-3.2-3B-Instruct",
               "source": f"{S004}, BitsAndBytesConfig / LoraConfig / SFTConfig", "machine": "NVIDIA L4 (24 GB)",
               "memory_gb": None, "feasibility": "ran on a 24 GB GPU",
               "note": "nf4 with double quantization -> MLX affine 4-bit; bf16 needs no key in MLX; best checkpoint "
                       "at epoch 0.94 (the seed suggests 1 epoch)"},
              model="meta-llama/Llama-3.2-3B-Instruct", quantize=4, data={"max_seq_length": 1024},
              method={"type": "lora", "num_layers": -1, "rank": 32, "alpha": 32.0, "dropout": 0.05},
              training={"batch_size": 8, "grad_accumulation": 2, "iterations": None, "epochs": 2.0,
                        "learning_rate": 2e-4, "lr_schedule": "cosine", "warmup_steps": 200},
              eval={"report_every": 10, "eval_every": 200, "save_every": 200}),
    ]


def catalog() -> list:
    return _seed000() + _seed001() + _seed002() + _seed003_004()


def render(name, description, sections, meta) -> str:
    recipe = recipe_from_dict({"schema": 1, "name": name, "description": description, **sections},
                              file=f"recipes/{name}.yaml")
    source = meta.get("source", "")
    header = (f"{description}\nSource: {source}.\n"
              "Fill in data.path (and model.path if you use another copy of the model), or pass --data / --model.\n"
              "Written by packaging/make_recipes.py; the seed's memory and speed figures are in "
              "resources/estimator/catalog.yaml.")
    return dump_recipe(recipe, header=header)


def catalog_yaml(rows) -> str:
    data = {"provenance": {"recipes": "packaging/make_recipes.py from the seeds named per recipe",
                           "configs": CONFIG_PROVENANCE},
            "models": MODELS,
            "recipes": {name: {k: v for k, v in meta.items() if v is not None} for name, _, _, meta in rows}}
    header = "# The recipe catalog's notes (not training settings), keyed by recipe name. Generated; do not edit.\n"
    return header + yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)


def outputs() -> dict[Path, str]:
    rows = catalog()
    files = {RECIPES / f"{name}.yaml": render(name, d, s, m) for name, d, s, m in rows}
    files[CATALOG] = catalog_yaml(rows)
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    files = outputs()
    stale = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    if args.check:
        print("\n".join(str(p) for p in stale) or "up to date")
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path], encoding="utf-8")
    print(f"wrote {len(stale)} of {len(files)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
