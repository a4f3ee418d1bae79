"""Measure what one mlx-lm training step keeps in memory, term by term, on small in-memory models.

This is the first half of the estimator's calibration (``bench/calibrate_memory.py`` is the second,
with real runs). It builds small models of each block family straight from a config dict
(random weights, no tokenizer, nothing on disk), runs exactly mlx-lm's compiled training step
(``value_and_grad(default_loss)`` + optimizer update, ``mx.compile`` with the model and optimizer
state, gradient checkpointing through mlx-lm's own ``grad_checkpoint``) and records the peak of
``mx.get_peak_memory()`` above what the process held before the model existed.

The grid varies one mechanism at a time (adapted layers, batch, sequence length, vocabulary,
adapted modules, rank, dtype, quantization, optimizer, checkpointing), so the coefficients that
``bench/fit_memory.py`` derives from it each describe one term of the model in
``macfinetune/core/estimator.py``.

    python bench/probe_memory.py --out resources/estimator/probe.jsonl [--only FAMILY]

Set ``LD_PRELOAD`` to an OpenBLAS on Linux to run it 3-5x faster; it does not change memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import mlx_lm
from mlx.utils import tree_flatten
from mlx_lm.tuner.trainer import default_loss, grad_checkpoint
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import _get_classes

# Small members of each block family; shapes vary hidden, attention width, kv width and MLP width
# independently so the fit can tell them apart.
SHAPES = {
    "A": dict(hidden_size=256, num_attention_heads=4, head_dim=64, num_key_value_heads=2, intermediate_size=704),
    "B": dict(hidden_size=384, num_attention_heads=4, head_dim=64, num_key_value_heads=4, intermediate_size=768),
    "C": dict(hidden_size=256, num_attention_heads=8, head_dim=64, num_key_value_heads=1, intermediate_size=1536),
    # medium shapes, closer to real models' proportions (I = 2.7-4 x hidden, 64-wide heads)
    "M1": dict(hidden_size=768, num_attention_heads=12, head_dim=64, num_key_value_heads=4, intermediate_size=2048),
    "M2": dict(hidden_size=512, num_attention_heads=8, head_dim=64, num_key_value_heads=2, intermediate_size=2048),
}
FAMILY_CONFIGS = {
    "llama": dict(model_type="llama", rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True,
                  max_position_embeddings=4096),
    "gemma3_text": dict(model_type="gemma3_text", rms_norm_eps=1e-6, query_pre_attn_scalar=64, sliding_window=4096,
                        sliding_window_pattern=2, max_position_embeddings=4096),
    "phi": dict(model_type="phi", layer_norm_eps=1e-5, partial_rotary_factor=0.5, max_position_embeddings=4096),
}
KEYS = {
    "all": None,
    "qv": ["self_attn.q_proj", "self_attn.v_proj"],
    "attn": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"],
    "mlp": ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
}
PHI_KEYS = {"attn": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense"],
            "mlp": ["mlp.fc1", "mlp.fc2"]}
OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD, "adafactor": optim.Adafactor}


def model_config(family: str, shape: str, layers: int = 4, vocab: int = 4096) -> dict:
    sizes = dict(SHAPES[shape])
    if family == "phi":  # phi's head width is hidden / heads and it has no grouped kv heads
        sizes.pop("head_dim")
        sizes["num_key_value_heads"] = sizes["num_attention_heads"]
    return {**FAMILY_CONFIGS[family], **sizes, "num_hidden_layers": layers, "vocab_size": vocab}


def build(config: dict, dtype: str, bits: int | None, group: int = 64):
    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    model.set_dtype(getattr(mx, dtype))
    if bits:
        nn.quantize(model, group_size=group, bits=bits)
    mx.eval(model.parameters())
    return model


def prepare(model, case: dict):
    model.freeze()
    n = case["layers"]
    if case["method"] == "full":
        for layer in model.layers[-n:]:
            layer.unfreeze()
        return
    name = case.get("keys", "all")
    keys = PHI_KEYS[name] if case["family"] == "phi" and name in PHI_KEYS else KEYS[name]
    params = {"rank": case.get("rank", 8), "scale": 2.0, "dropout": 0.0}
    if keys:
        params["keys"] = keys
    linear_to_lora_layers(model, n, params, use_dora=case["method"] == "dora")


def measure(case: dict) -> dict:
    """Peak bytes of ``steps`` compiled training steps, above the memory held before the model."""
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    config = model_config(case["family"], case["shape"], vocab=case.get("vocab", 4096))
    model = build(config, case.get("dtype", "bfloat16"), case.get("bits"))
    weights = mx.get_active_memory() - before
    prepare(model, case)
    block_call = type(model.layers[0]).__call__
    try:
        peak = _run_steps(model, case)
    finally:
        type(model.layers[0]).__call__ = block_call  # grad_checkpoint patches the class
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    del model
    return {"weights": weights, "peak": peak - before, "trainable": trainable}


def _run_steps(model, case: dict) -> int:
    optimizer = OPTIMIZERS[case.get("optimizer", "adam")](learning_rate=1e-5)
    if case.get("gc"):
        grad_checkpoint(model.layers[0])
    loss_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, optimizer.state, mx.random.state]
    accumulate = case.get("accum", 1)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, lengths, previous, update):
        (loss, tokens), grad = loss_and_grad(model, batch, lengths)
        if previous is not None:
            grad = _add(grad, previous)
        if update:
            optimizer.update(model, grad)
            grad = None
        return loss, tokens, grad

    batch_size, length = case["batch"], case["length"]
    batch = mx.random.randint(0, 4000, (batch_size, length + 1)).astype(mx.int32)
    lengths = mx.array([[0, length + 1]] * batch_size)
    mx.eval(batch, lengths)
    model.train()
    mx.reset_peak_memory()
    grad = None
    for it in range(1, case.get("steps", 2) + 1):
        loss, tokens, grad = step(batch, lengths, grad, it % accumulate == 0)
        mx.eval(state, loss, tokens, grad)
    return mx.get_peak_memory()


def _add(grad, previous):
    from mlx.utils import tree_map

    return tree_map(lambda x, y: x + y, grad, previous)


# --- the grid ---------------------------------------------------------------------------


def grid(families: list[str]) -> list[dict]:
    """Shape A varies everything; shapes B and C separate the widths; mechanisms are probed on llama."""
    cases = []
    for family in families:
        cases += _shape_cases(family, "A", (("full", "all"), ("lora", "all"), ("lora", "qv"), ("lora", "attn"),
                                             ("lora", "mlp")), ((2, 256), (1, 512)))
        for shape in ("B", "C"):
            cases += _shape_cases(family, shape, (("full", "all"), ("lora", "all"), ("lora", "qv")), ((2, 256),))
        cases += _mechanism_cases(family, full=family == "llama")
    return cases


def medium_grid(families: list[str]) -> list[dict]:
    """Closer to real proportions: the per-token coefficients at scale (vocab 8192, 512-token rows)."""
    cases = []
    for family in families:
        for shape in ("M1", "M2"):
            cases += [{**c, "vocab": 8192} for c in _shape_cases(
                family, shape, (("full", "all"), ("lora", "all"), ("lora", "qv")), ((1, 512),))]
            cases += [{**c, "vocab": 8192} for c in _shape_cases(family, shape, (("lora", "all"),), ((1, 1024),))]
    return cases


def _shape_cases(family: str, shape: str, methods, sizes) -> list[dict]:
    return [dict(family=family, shape=shape, method=method, keys=keys, batch=batch, length=length, layers=layers)
            for method, keys in methods for batch, length in sizes for layers in (1, 3)]


def _mechanism_cases(family: str, full: bool) -> list[dict]:
    base = dict(family=family, shape="A", method="lora", keys="all", batch=2, length=256)
    out = []
    for layers in (1, 3):
        out += [{**base, "layers": layers, "vocab": 16384}, {**base, "layers": layers, "gc": True},
                {**base, "layers": layers, "method": "full", "gc": True}]
        if not full:
            continue
        out += [
            {**base, "layers": layers, "gc": True, "batch": 1, "length": 512},
            {**base, "layers": layers, "method": "dora"},
            {**base, "layers": layers, "bits": 4},
            {**base, "layers": layers, "bits": 8},
            {**base, "layers": layers, "bits": 4, "method": "dora"},
            {**base, "layers": layers, "rank": 64},
            {**base, "layers": layers, "dtype": "float32"},
            {**base, "layers": layers, "method": "full", "dtype": "float32"},
        ]
        for name in ("adam", "adamw", "sgd", "adafactor"):
            out.append({**base, "layers": layers, "method": "full", "optimizer": name, "batch": 1, "length": 64})
        out.append({**base, "layers": layers, "method": "full", "batch": 1, "length": 64, "accum": 2})
    return out


def _done(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line)["case"] for line in path.read_text().splitlines() if line.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=list(FAMILY_CONFIGS))
    parser.add_argument("--medium", action="store_true", help="the medium-shape grid instead of the small one")
    args = parser.parse_args(argv)
    provenance = {"machine": f"{platform.system()} {platform.machine()} {platform.processor() or ''}".strip(),
                  "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__, "device": str(mx.default_device()),
                  "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0]}
    done = _done(args.out)
    with open(args.out, "a", encoding="utf-8") as out:
        cases = medium_grid(args.only) if args.medium else grid(args.only)
        for case in (c for c in cases if c not in done):
            tic = time.perf_counter()
            result = measure(case)
            record = {"case": case, **result, "seconds": round(time.perf_counter() - tic, 2), "provenance": provenance}
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(json.dumps({"case": case, **result}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
