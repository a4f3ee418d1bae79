"""Derive the estimator's coefficients from the probe measurements (bench/probe_memory.py).

The estimator's peak is linear in its coefficients, so each coefficient's "feature" for a probe
case is the estimate with that coefficient set to one and every other to zero. A non-negative
least-squares fit on relative error gives the number of copies of each tensor kind mlx keeps.
Coefficients that theory fixes (a boolean mask is 1 byte, x @ A in float32 is 4 bytes per rank, a
float32 cast is 4 bytes) stay fixed. The result is written to resources/estimator/memory_model.yaml
with the probe's provenance.

    python bench/fit_memory.py resources/estimator/probe.jsonl --write resources/estimator/memory_model.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from macfinetune.core import estimator
from macfinetune.core.modelshape import shape_from_config

try:  # run as a script from the repository root or as bench.fit_memory
    from probe_memory import model_config
except ImportError:  # pragma: no cover
    from bench.probe_memory import model_config

FAMILIES = ("llama", "qwen3", "gemma3_text", "phi")
BLOCK_PARTS = ("hidden", "attn", "kv", "mlp", "checkpoint")
FITTED_PARTS = ("hidden", "mlp")  # attention and kv widths follow hidden in small models: not separable
# With checkpointing a block keeps its input per token: measured directly as the per-block slope of the
# probe's checkpointed cases (1 vs 3 blocks, shape A, bf16), in hidden-size dtype copies.
CHECKPOINT = {"llama": 2.3, "qwen3": 2.3, "gemma3_text": 2.9, "phi": 2.3}
# Fixed by theory or measured directly: a boolean mask is 1 byte; x @ A is float32 (4 bytes per rank);
# the loss keeps 4 dtype copies of batch x L x vocab (the vocab 4096 -> 16384 pairs of the probe give
# 3.96-4.12 in every family); quantizing on the fly holds one full-precision copy beside the quantized one
# (measured by bench/probe_loading.py: resources/estimator/loading.jsonl).
FIXED = {"mask": 1.0, "lora_rank": 4.0, "load_full_copies": 1.0,
         # the backward pass of one block holds about one block's worth of activation gradients in flight
         "transient_blocks": 1.0,
         # CPU: the loss keeps 4 copies of batch x L x vocab (measured: vocab 4096 -> 16384 pairs, 3.96-4.12 in every
         # family); Metal: mx.fast.cross_entropy keeps the logits and writes one gradient (2; mlx nn.losses, fast.h)
         "logits": {"cpu": 4.0, "gpu": 2.0},
         # CPU: rms_norm has no CPU kernel; its fallback keeps a float32 copy of the input (4 bytes per element,
         # measured); Metal's RMSNorm/LayerNorm VJP kernels keep the input itself
         "norm_copy_bytes": {"cpu": 4.0, "gpu": 0.0}}
SHARED = ("lora_input", "full_input", "dora_output", "attention", "head", "token_bytes", "update", "overhead_bytes")


def free_names() -> list[str]:
    return [f"{f}.{p}" for f in FAMILIES for p in FITTED_PARTS] + list(SHARED)


def make_coefficients(values: dict[str, float]) -> estimator.Coefficients:
    block = {f: {p: values.get(f"{f}.{p}", 0.0) for p in BLOCK_PARTS} for f in FAMILIES}
    for f in FAMILIES:
        block[f]["checkpoint"] = CHECKPOINT[f]
    block["default"] = block["llama"]
    scalars = {k: values.get(k, FIXED.get(k, 0.0)) for k in SHARED + tuple(FIXED)}
    return estimator.Coefficients(block=block, provenance={}, **scalars)


def case_settings(case: dict) -> estimator.Settings:
    keys = {"all": (), "qv": ("q_proj", "v_proj"), "attn": ("q_proj", "k_proj", "v_proj", "o_proj", "dense"),
            "mlp": ("gate_proj", "up_proj", "down_proj", "fc1", "fc2")}[case.get("keys", "all")]
    return estimator.Settings(
        method=case["method"], num_layers=case["layers"], rank=case.get("rank", 8), target_modules=keys,
        batch_size=case["batch"], max_seq_length=case["length"], grad_checkpoint=bool(case.get("gc")),
        optimizer=case.get("optimizer", "adam"), grad_accumulation=case.get("accum", 1), device="cpu",
    )


def case_shape(case: dict):
    config = model_config(case["family"], case["shape"], vocab=case.get("vocab", 4096))
    config = {**config, "torch_dtype": case.get("dtype", "bfloat16")}
    if case.get("bits"):
        config["quantization"] = {"bits": case["bits"], "group_size": 64}
    return shape_from_config(config)


PHASES = ("training step", "optimizer update")


def phase_peaks(shape, settings, coeffs) -> dict[str, float]:
    """The training phases' totals (the backward pass and, for full fine-tuning, the update)."""
    ctx = estimator._Context.make(shape, _known_targets(shape, settings), coeffs)
    phases = estimator.phase_terms(ctx)
    return {name: float(sum(phases[name].values())) for name in PHASES if name in phases}


def _known_targets(shape, settings):
    names = {x.name.rsplit(".", 1)[-1] for x in shape.linears}
    keep = tuple(t for t in settings.target_modules if t in names)
    return replace(settings, target_modules=keep)


def design(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per phase: the feature matrix (one column per free coefficient) and the fixed part."""
    names = free_names()
    zero = make_coefficients({})
    out = {phase: ([], []) for phase in PHASES}
    for row in rows:
        shape, settings = case_shape(row["case"]), case_settings(row["case"])
        fixed = phase_peaks(shape, settings, zero)
        unit = [phase_peaks(shape, settings, make_coefficients({n: 1.0})) for n in names]
        for phase in PHASES:
            base = fixed.get(phase, 0.0)
            out[phase][0].append([u.get(phase, 0.0) - base for u in unit])
            out[phase][1].append(base)
    return {phase: (np.array(X), np.array(b)) for phase, (X, b) in out.items()}


def nnls(A: np.ndarray, b: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Least squares with x >= 0 (active set: drop negative coefficients and refit)."""
    free = np.ones(A.shape[1], dtype=bool)
    x = np.zeros(A.shape[1])
    for _ in range(iterations):
        sol, *_ = np.linalg.lstsq(A[:, free], b, rcond=None)
        if (sol >= 0).all():
            x[:] = 0
            x[free] = sol
            return x
        idx = np.flatnonzero(free)[sol < 0]
        free[idx[np.argmin(sol[sol < 0])]] = False
    return x


def fit(rows: list[dict], rounds: int = 8) -> tuple[dict[str, float], list[float]]:
    """Fit on each row's peak phase; the phase of each row follows the coefficients (a few rounds)."""
    matrices = design(rows)
    y = np.array([row["peak"] for row in rows], dtype=float)
    phase = np.zeros(len(rows), dtype=int)  # 0: backward pass, 1: optimizer update
    for _ in range(rounds):
        X = np.where(phase[:, None] == 0, matrices[PHASES[0]][0], matrices[PHASES[1]][0])
        base = np.where(phase == 0, matrices[PHASES[0]][1], matrices[PHASES[1]][1])
        solution = nnls(X / y[:, None], (y - base) / y)
        totals = np.stack([matrices[p][0] @ solution + matrices[p][1] for p in PHASES], axis=1)
        new_phase = totals.argmax(axis=1)
        if (new_phase == phase).all():
            break
        phase = new_phase
    predicted = totals.max(axis=1)
    values = dict(zip(free_names(), solution.tolist(), strict=True))
    return values, ((predicted - y) / y).tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", type=Path, nargs="+")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for path in args.probe for line in path.read_text().splitlines() if line.strip()]
    values, errors = fit(rows)
    worst = max(range(len(rows)), key=lambda i: abs(errors[i]))
    print(json.dumps({k: round(v, 4) for k, v in values.items()}, indent=1))
    print(f"{len(rows)} cases: median |error| {statistics.median(map(abs, errors)):.1%}, "
          f"worst {abs(errors[worst]):.1%} ({rows[worst]['case']})")
    if args.write:
        write_model(args.write, values, rows, errors)
    return 0


def write_model(path: Path, values: dict[str, float], rows: list[dict], errors: list[float]) -> None:
    block = {f: {p: round(values.get(f"{f}.{p}", CHECKPOINT[f] if p == "checkpoint" else 0.0), 3) for p in BLOCK_PARTS}
             for f in FAMILIES}
    block["default"] = dict(block["llama"])
    coefficients = {"block": block, **{k: round(values[k], 3) for k in SHARED}, **FIXED}
    coefficients["overhead_bytes"] = round(values["overhead_bytes"])
    provenance = dict(rows[0].get("provenance", {}))
    provenance.update({"source": "bench/probe_memory.py + bench/fit_memory.py", "cases": len(rows),
                       "fit_median_error": round(statistics.median(map(abs, errors)), 4),
                       "fit_worst_error": round(max(map(abs, errors)), 4), "fitted": time.strftime("%Y-%m-%d")})
    _dump(path, {"provenance": provenance, "coefficients": coefficients})


def _dump(path: Path, data: dict) -> None:
    import yaml

    header = ("# The estimator's coefficients: how many copies of each tensor kind mlx keeps at the peak of a\n"
              "# training step. Written by bench/fit_memory.py from bench/probe_memory.py's measurements;\n"
              "# see docs/estimator.md. Edit by re-running the probe and the fit, not by hand.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
