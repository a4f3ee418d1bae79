"""Auto-fit: when a configuration will not fit, the changes that make it fit, cheapest first.

The order is the seeds' (000 "Memory Management Strategies", 001 "Out of Memory Errors", 002
"Out of Memory? Try These", 003 "Memory-Efficient Strategies"): gradient checkpointing, then
macfinetune's memory-light attention and chunked loss (issue 14; before cutting the data), shorter
sequences, a smaller batch with gradient accumulation (same effective batch), fewer adapted layers,
a lower rank, a quantized base, LoRA instead of full fine-tuning. Each step goes only as far as it
must, and each change says what it costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from macfinetune.core import memory_light
from macfinetune.core.estimator import (
    Estimate,
    Settings,
    Verdict,
    estimate,
    judge,
    trainable_parameters,
    weight_bytes,
)
from macfinetune.core.hardware import Machine
from macfinetune.core.modelshape import ModelShape

MIN_SEQUENCE = 512
MIN_RANK = 4


@dataclass(frozen=True)
class Change:
    key: str  # the recipe key: 'training.grad_checkpoint'
    old: object
    new: object
    what: str  # "gradient checkpointing on"
    cost: str  # "about 30% slower: ..."


@dataclass(frozen=True)
class Fit:
    settings: Settings
    changes: tuple[Change, ...]
    estimate: Estimate
    verdict: Verdict

    @property
    def found(self) -> bool:
        return self.verdict.fits

    def summary(self) -> str:
        if not self.changes:
            if self.found:
                return f"fits as it is: {self.verdict.message}"
            return f"no change of settings makes it fit: {self.verdict.message}"
        steps = "; ".join(f"{c.what} ({c.cost})" for c in self.changes)
        ending = "fits" if self.found else "still does not fit"
        return f"{steps}: {ending} in {self.estimate.total_gb:.1f} GB"


Step = Callable[[ModelShape, Settings], Iterator[Settings]]


def _light_attention_on(shape: ModelShape, s: Settings) -> bool:
    return shape.model_type not in memory_light.OWN_ATTENTION and memory_light.light_attention(s.attention,
                                                                                               s.max_seq_length)


def _chunked_loss_on(shape: ModelShape, s: Settings) -> bool:
    return shape.model_type in memory_light.CHUNKED_LOSS_TYPES and memory_light.chunked_loss(
        s.loss, s.batch_size * s.max_seq_length, shape.vocab)


def _memory_light(shape: ModelShape, s: Settings):
    """The memory-light attention, then the chunked loss, where the run would not use them already."""
    if shape.model_type not in memory_light.OWN_ATTENTION and not _light_attention_on(shape, s):
        s = replace(s, attention="memory_light")
        yield s
    if shape.model_type in memory_light.CHUNKED_LOSS_TYPES and not _chunked_loss_on(shape, s):
        yield replace(s, loss="chunked")


def _checkpointing(shape: ModelShape, s: Settings):
    if not s.grad_checkpoint:
        yield replace(s, grad_checkpoint=True)


def _shorter_sequences(shape: ModelShape, s: Settings):
    """Halve the longest sequence, at most twice (long rows matter; the batch step comes next)."""
    length, floor = s.max_seq_length, max(MIN_SEQUENCE, s.max_seq_length // 4)
    while length // 2 >= floor:
        length //= 2
        yield replace(s, max_seq_length=length)


def _smaller_batch(shape: ModelShape, s: Settings):
    batch, effective = s.batch_size, s.batch_size * s.grad_accumulation
    while batch > 1:
        batch //= 2
        yield replace(s, batch_size=batch, grad_accumulation=max(1, effective // batch))


def _fewer_layers(shape: ModelShape, s: Settings):
    layers = shape.layers if s.num_layers == -1 else s.num_layers
    while layers > 2:
        layers //= 2
        yield replace(s, num_layers=layers)


def _lower_rank(shape: ModelShape, s: Settings):
    rank = s.rank
    while s.method != "full" and rank // 2 >= MIN_RANK:
        rank //= 2
        yield replace(s, rank=rank)


def _quantized_base(shape: ModelShape, s: Settings):
    if s.method == "full" or shape.quant_bits or s.quantize == 4:
        return
    for bits in (8, 4) if s.quantize is None else (4,):
        yield replace(s, quantize=bits)


def _lora_instead(shape: ModelShape, s: Settings):
    if s.method != "lora":
        yield replace(s, method="lora")


LADDER: tuple[Step, ...] = (_checkpointing, _memory_light, _shorter_sequences, _smaller_batch, _fewer_layers, _lower_rank,
                            _quantized_base, _lora_instead, _lower_rank, _quantized_base)


def auto_fit(shape: ModelShape, settings: Settings, machine: Machine, target: str = "fits",
             factor: float = 1.0) -> Fit:
    """The settings that fit ``machine`` with the cheapest changes (see the module docstring).

    1. Walk the ladder in the seeds' order, each step only as far as needed.
    2. Then give back what is no longer needed: each compromise, costliest first, is undone
       (or undone part of the way) when the run still fits without it.
    ``target`` is 'fits' (under 90% of the usable memory) or 'tight' (under all of it). ``factor`` is this
    Mac's correction (``calibration.Correction.factor``): every candidate is judged as the gate will judge it."""
    current = settings
    for step in LADDER:
        if _reached(shape, current, machine, target, factor):
            break
        for candidate in step(shape, current):
            current = candidate
            if _reached(shape, current, machine, target, factor):
                break
    current = _relax(shape, settings, current, machine, target, factor)
    est = _scaled(estimate(shape, current), factor)
    return Fit(current, describe(shape, settings, current), est, judge(est, machine))


def _scaled(est, factor: float):
    """The estimate with every term scaled alike (how this Mac's correction scales it)."""
    if factor == 1.0:
        return est
    return replace(est, terms=tuple(replace(t, bytes=int(t.bytes * factor)) for t in est.terms))


def _reached(shape: ModelShape, s: Settings, machine: Machine, target: str, factor: float = 1.0) -> bool:
    status = judge(_scaled(estimate(shape, s), factor), machine).status
    return status == "fits" or (target == "tight" and status == "tight")


def _relax(shape: ModelShape, original: Settings, current: Settings, machine: Machine, target: str,
           factor: float = 1.0) -> Settings:
    if not _reached(shape, current, machine, target, factor):
        return current
    for candidates in (_back_quantize, _back_rank, _back_layers, _back_batch, _back_sequences, _back_memory_light):
        for candidate in candidates(shape, original, current):
            if _reached(shape, candidate, machine, target, factor):
                current = candidate
                break
    return current


def _back_quantize(shape, original, current):
    if current.quantize != original.quantize and current.method != "full":
        yield from [replace(current, quantize=b) for b in (original.quantize, 8) if b != current.quantize]


def _back_rank(shape, original, current):
    yield from [replace(current, rank=r) for r in _halvings(original.rank, current.rank)]


def _back_layers(shape, original, current):
    if current.num_layers == original.num_layers:
        return
    if original.num_layers == -1:
        yield replace(current, num_layers=-1)
    first = shape.layers if original.num_layers == -1 else original.num_layers
    now = shape.layers if current.num_layers == -1 else current.num_layers
    yield from [replace(current, num_layers=n) for n in _halvings(first, now)]


def _back_batch(shape, original, current):
    effective = original.batch_size * original.grad_accumulation
    for batch in _halvings(original.batch_size, current.batch_size):
        yield replace(current, batch_size=batch, grad_accumulation=max(1, effective // batch))


def _back_memory_light(shape, original, current):
    if current.loss != original.loss:
        yield replace(current, loss=original.loss)
    if current.attention != original.attention:
        yield replace(current, attention=original.attention)


def _back_sequences(shape, original, current):
    yield from [replace(current, max_seq_length=n) for n in _halvings(original.max_seq_length, current.max_seq_length)]


def _halvings(start: int, floor: int) -> list[int]:
    """start, start/2, ... down to (not including) ``floor``: the values between the original and the fit."""
    out, value = [], start
    while value > max(floor, 0):
        out.append(value)
        value //= 2
    return out


# --- a copy quantized beforehand -----------------------------------------------------------


@dataclass(frozen=True)
class Prequantized:
    """Train on a copy of the model quantized beforehand: the loading phase never holds the full weights."""

    repo: str  # the mlx-community repository that usually holds it
    bits: int
    download_gb: float  # the quantized weights, GB = 1e9 bytes (download and disk)
    convert_gb: float  # memory a local conversion needs (load + quantize), GB
    full_gb: float  # disk for the full-precision download a local conversion starts from, GB
    estimate: Estimate
    verdict: Verdict

    def summary(self) -> str:
        return (f"use a {self.bits}-bit copy quantized beforehand: {self.repo} (about {self.download_gb:.1f} GB to "
                f"download and keep on disk), or convert one where {self.convert_gb:.1f} GB of memory is free "
                f"(`macfinetune models convert --quantize {self.bits} MODEL`, from the {self.full_gb:.1f} GB "
                f"full-precision download); "
                f"training then needs {self.estimate.total_gb:.1f} GB: {self.verdict.status}")


def prequantized_repo(model_id: str, bits: int) -> str:
    """The mlx-community repository id that usually holds a ``bits``-bit copy of ``model_id``."""
    name = model_id.rstrip("/").split("/")[-1]
    for suffix in ("-bf16", "-fp16", "-float16"):
        name = name.removesuffix(suffix)
    return f"mlx-community/{name}-{bits}bit"


def prequantized(model_id: str, shape: ModelShape, settings: Settings, machine: Machine) -> Prequantized | None:
    """The pre-quantized copy, when quantizing on the fly is what sets the peak (the loading phase)."""
    bits = settings.quantize
    if not bits or shape.quant_bits:
        return None
    plain = estimate(shape, settings)
    if plain.phase != "loading":
        return None
    qshape = replace(shape, quant_bits=bits, quant_group=settings.quantize_group_size)
    qsettings = replace(settings, quantize=None)
    est = estimate(qshape, qsettings)
    return Prequantized(prequantized_repo(model_id, bits), bits,
                        weight_bytes(shape, bits, settings.quantize_group_size) / 1e9,
                        plain.total_bytes / 1e9, weight_bytes(shape, None) / 1e9, est, judge(est, machine))


# --- what changed, in words -----------------------------------------------------------------


def describe(shape: ModelShape, old: Settings, new: Settings) -> tuple[Change, ...]:
    """One Change per setting that differs, in the ladder's order, each with its cost."""
    texts = (_say_checkpoint, _say_attention, _say_loss, _say_sequences, _say_batch, _say_layers, _say_rank, _say_quantize, _say_method)
    return tuple(change for say in texts if (change := say(shape, old, new)) is not None)


def _say_attention(shape, old, new):
    if new.attention == old.attention or _light_attention_on(shape, old) == _light_attention_on(shape, new):
        return None
    return Change("training.attention", old.attention, new.attention, "memory-light attention",
                  "no L x L attention scores kept for the backward pass (recomputed): about the same speed from "
                  f"{memory_light.AUTO_ATTENTION_LENGTH} tokens, slower on shorter sequences (docs/benchmarks.md)")


def _say_loss(shape, old, new):
    if new.loss == old.loss or _chunked_loss_on(shape, old) == _chunked_loss_on(shape, new):
        return None
    return Change("training.loss", old.loss, new.loss, "chunked loss",
                  "the logits are computed a chunk of tokens at a time and again in the backward pass: "
                  "a few percent slower (docs/benchmarks.md)")


def _say_checkpoint(shape, old, new):
    if new.grad_checkpoint and not old.grad_checkpoint:
        return Change("training.grad_checkpoint", False, True, "gradient checkpointing on",
                      "about 30% slower: activations are recomputed in the backward pass (seed 003)")
    return None


def _say_sequences(shape, old, new):
    if new.max_seq_length == old.max_seq_length:
        return None
    return Change("data.max_seq_length", old.max_seq_length, new.max_seq_length,
                  f"sequences cut at {new.max_seq_length} tokens",
                  f"rows longer than {new.max_seq_length} tokens are truncated (was {old.max_seq_length}): "
                  "less context per row")


def _say_batch(shape, old, new):
    if new.batch_size == old.batch_size:
        return None
    return Change("training.batch_size", old.batch_size, new.batch_size,
                  f"batch {new.batch_size} with gradient accumulation {new.grad_accumulation}",
                  f"same effective batch of {new.batch_size * new.grad_accumulation}; slower: fewer rows per step "
                  "(seed 001)")


def _say_layers(shape, old, new):
    if new.num_layers == old.num_layers:
        return None
    before = shape.layers if old.num_layers == -1 else old.num_layers
    return Change("method.num_layers", old.num_layers, new.num_layers, f"{new.num_layers} adapted blocks",
                  f"trains the last {new.num_layers} of {shape.layers} blocks instead of {before}: less capacity")


def _say_rank(shape, old, new):
    if new.rank == old.rank or new.method == "full":
        return None
    return Change("method.rank", old.rank, new.rank, f"rank {new.rank}",
                  f"a smaller update than rank {old.rank}: less capacity (seed 002: rank 8 is a good default)")


def _say_quantize(shape, old, new):
    if new.quantize == old.quantize:
        return None
    loss = "little" if new.quantize == 8 else "a small"
    return Change("model.quantize", old.quantize, new.quantize, f"{new.quantize}-bit base (QLoRA)",
                  f"trains on a {new.quantize}-bit copy of the base: {loss} quality loss")


def _say_method(shape, old, new):
    if new.method == old.method:
        return None
    if old.method == "full":
        cost = (f"trains {trainable_parameters(shape, new):,} adapter parameters instead of "
                f"{trainable_parameters(shape, old):,} weights: less capacity")
    else:
        cost = "DoRA converges better (seed 000: 15-25%); LoRA builds no dense weights in the forward pass"
    return Change("method.type", old.method, new.method, f"LoRA instead of {old.method}", cost)
