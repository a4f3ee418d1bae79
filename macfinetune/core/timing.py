"""How long a run takes: tokens per iteration, iterations, and a duration range.

Throughput model: the arithmetic of one token (forward through every block, backward through
the adapted ones, the output head both ways, attention over the sequence, a second forward when
checkpointing) divided by the machine's effective rate. The effective rate is measured: from
past runs on this machine when there are some (``calibration.machine_rates``), otherwise from the
seeds' tokens/s figures on their Macs (resources/estimator/throughput.yaml), scaled by the chips'
published throughput.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import yaml

from macfinetune.core.estimator import Settings, adapted_linears
from macfinetune.core.hardware import Chip, chip
from macfinetune.core.modelshape import ModelShape
from macfinetune.core.paths import shipped


@dataclass(frozen=True)
class Rate:
    """Effective training throughput in FLOP/s: a range, and where it comes from."""

    low: float
    high: float
    source: str


@dataclass(frozen=True)
class TimeEstimate:
    tokens_per_iteration: int
    flops_per_token: float
    iterations: int | None
    iterations_per_epoch: int | None
    tokens_per_second: tuple[float, float]
    seconds_per_iteration: tuple[float, float]
    seconds: tuple[float, float] | None  # whole run, low..high
    source: str


def flops_per_token(shape: ModelShape, s: Settings, length: int | None = None) -> float:
    """Training arithmetic per token (multiply-adds count 2)."""
    length = length or s.max_seq_length
    n = shape.layers if s.num_layers == -1 else s.num_layers
    block = _block_flops(shape, length)
    head = 2 * shape.vocab * shape.hidden
    forward = shape.layers * block + head
    backward = n * block + head  # gradients with respect to the activations
    if s.method == "full":
        backward += n * _linear_flops(shape)  # and to the weights
    else:
        backward += n * 6 * s.rank * sum(x.inputs + x.outputs for x in adapted_linears(shape, s))
    recompute = n * block if s.grad_checkpoint else 0
    return float(forward + backward + recompute)


def _linear_flops(shape: ModelShape) -> int:
    share = shape.experts_per_token or 1
    return 2 * sum(x.inputs * x.outputs * (share if x.copies > 1 else 1) for x in shape.linears)


def _block_flops(shape: ModelShape, length: int) -> int:
    """One block's forward: its matrices, and scores and values over the whole (unfused) sequence."""
    return _linear_flops(shape) + 4 * length * shape.attn_width


@lru_cache(maxsize=1)
def throughput_table() -> dict:
    with open(shipped("resources", "estimator", "throughput.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def seed_rate(target: Chip | None, rows: list[dict] | None = None) -> Rate:
    """The seeds' measured rates (or ``rows`` of them), each scaled from its chip to ``target`` (M1 when unknown)."""
    target = target or chip("m1")
    rows = throughput_table()["measurements"] if rows is None else rows
    rates = [rate * target.gpu_tflops / chip(row["chip"]).gpu_tflops for row in rows for rate in _row_rates(row)]
    return Rate(min(rates), max(rates), f"the seeds' tokens/s on M4 Max and M1 Ultra, scaled to {target.name.upper()}")


def _row_rates(row: dict) -> list[float]:
    from macfinetune.core.modelshape import read_shape

    shape = read_shape(shipped("resources", "estimator", "configs", row["model"]))
    settings = Settings(method=row["method"], num_layers=row["num_layers"], rank=row.get("rank", 8),
                        target_modules=tuple(row.get("keys", ())), batch_size=row["batch_size"],
                        max_seq_length=row["sequence_length"], grad_checkpoint=row.get("grad_checkpoint", False))
    return [flops_per_token(shape, settings) * tps for tps in row["tokens_per_second"]]


def estimate_time(shape: ModelShape, s: Settings, rate: Rate, *, iterations: int | None = None,
                  train_rows: int | None = None, tokens_per_row: float | None = None,
                  epochs: float | None = None) -> TimeEstimate:
    """Tokens per iteration (from the data when known, else full-length rows) and the duration range."""
    row_tokens = min(tokens_per_row or s.max_seq_length, s.max_seq_length)
    tokens = int(s.batch_size * row_tokens * s.sequences_per_row)  # a preference pair is two sequences
    per_epoch = train_rows // s.batch_size if train_rows else None
    if iterations is None and epochs and per_epoch:
        iterations = max(1, math.ceil(epochs * per_epoch))
    flops = flops_per_token(shape, s, length=int(row_tokens))
    tps = (rate.low / flops, rate.high / flops)
    per_it = (tokens / tps[1], tokens / tps[0])
    total = (per_it[0] * iterations, per_it[1] * iterations) if iterations else None
    return TimeEstimate(tokens, flops, iterations, per_epoch, tps, per_it, total, rate.source)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"
