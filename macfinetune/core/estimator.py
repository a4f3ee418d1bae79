"""Peak MLX memory of a fine-tuning run, from config.json and the recipe alone.

The model follows what mlx-lm does (checked in its source and measured, see docs/estimator.md):

1. Base weights: every parameter in the model's dtype; a quantized linear or embedding stores
   ``bits`` per weight plus a scale and a bias per group (4.5 bits at 4-bit, 8.5 at 8-bit, group 64).
2. Trainable state: LoRA/DoRA A and B (and DoRA's magnitude) are float32: 4 bytes of weight,
   4 of gradient and the optimizer's state (Adam: 8), 16 bytes per parameter. Full fine-tuning trains
   every weight of the last ``num_layers`` blocks in their own dtype; the optimizer state has that
   dtype too (Adam on bf16: 4 bytes), SGD always keeps a buffer, Adafactor keeps factored rows and
   columns; the update briefly holds new and old values side by side.
3. Activations: gradients stop below the lowest adapted block, so only adapted blocks keep their
   activations: a per-token set that depends on the block's layout, plus the input of every adapted
   linear layer (cast to float32 for LoRA, whose A and B are float32).
4. Attention: mlx's training path is unfused, so each adapted block keeps batch x heads x L^2 scores
   (and its L x L causal mask): quadratic in the sequence length.
5. Logits and loss: batch x L x vocab, kept for the loss and again for its gradient.
6. Gradient checkpointing keeps one hidden-size tensor per token per block and recomputes one block
   at a time in the backward pass.
7. The longest batch sets the peak; validation (forward only) and loading are phases of their own.
8. The memory-light paths (core/memory_light.py decides, as the run does): memory-light attention
   keeps one float32 log-sum-exp per query row per adapted block, and one block of query rows'
   float32 scores at a time; the chunked loss keeps a float32 loss per token and one chunk's
   float32 logits at a time. Terms 4 and 5 then use these instead (their detail says which path).

Coefficients (how many copies of each tensor mlx really keeps) are measured on small models and
stored with their provenance in ``resources/estimator/memory_model.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import yaml

from macfinetune.core import memory_light
from macfinetune.core.hardware import GB, GIB, Machine
from macfinetune.core.modelshape import Linear, ModelShape
from macfinetune.core.paths import shipped
from macfinetune.core.problems import Problem, ProblemError

METHODS = ("lora", "dora", "full")
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")
TERMS = ("weights", "trainable", "activations", "attention", "logits", "overhead")
TERM_LABELS = {
    "weights": "base weights",
    "trainable": "trainable parameters, gradients and optimizer state",
    "activations": "activations",
    "attention": "attention scores",
    "logits": "logits and loss",
    "overhead": "runtime overhead",
}
# Optimizer state per trained parameter, in units of the parameter's own size.
_OPTIMIZER_STATE = {"adam": 2.0, "adamw": 2.0, "sgd": 1.0, "adafactor": 0.0}


@dataclass(frozen=True)
class Settings:
    """The recipe's settings that memory depends on (``settings_from_recipe`` makes one)."""

    method: str = "lora"
    num_layers: int = 16  # -1: all blocks
    rank: int = 8
    target_modules: tuple[str, ...] = ()  # (): every linear layer (mlx-lm's default since 2025)
    batch_size: int = 4
    max_seq_length: int = 2048
    grad_checkpoint: bool = False
    optimizer: str = "adam"
    grad_accumulation: int = 1
    quantize: int | None = None  # quantize a full-precision base on the fly (QLoRA)
    quantize_group_size: int = 64
    val_batch_size: int | None = None  # None: the training batch size
    device: str = "gpu"  # 'gpu' (Metal's fused norm and loss kernels) or 'cpu' (MLX's CPU backend)
    attention: str = "stock"  # training.attention: auto, stock or memory_light (mlx-lm's own is stock)
    loss: str = "stock"  # training.loss: auto, stock or chunked
    # sequences each batch row puts through the model: 2 for preference pairs (DPO, ORPO), whose chosen and
    # rejected answers are one batch of 2 x batch_size sequences; the reference is precomputed (no copy)
    sequences_per_row: int = 1
    # packing (data.packing): the longest example in tokens; the stock attention then meets at most that many
    # keys plus one block per query (backend/attention.windowed_attention) when core.memory_light.packed_window
    # says the window is worth it. None: not packed, or the longest example is not known (full rows assumed)
    packed_window: int | None = None


@dataclass(frozen=True)
class Term:
    key: str  # one of TERMS
    bytes: int
    detail: str = ""  # how it was computed, in words

    @property
    def label(self) -> str:
        return TERM_LABELS[self.key]


@dataclass(frozen=True)
class Estimate:
    """Predicted peak of ``mx.get_peak_memory()`` and what makes it up."""

    terms: tuple[Term, ...]
    phase: str  # what sets the peak: 'training step', 'validation' or 'loading'
    phases: tuple[tuple[str, int], ...]  # each phase's own peak, bytes
    trainable_params: int
    total_params: int
    adapted_layers: int
    sequence_length: int
    settings: Settings
    uncertain: tuple[str, ...] = ()  # terms that rest on a guess, with the reason
    family: str = ""  # the model's block family ('llama', 'qwen3', ...): what this Mac's correction matches on
    correction: str = ""  # this Mac's correction, in words, when one was applied (core.calibration.correct)
    uncorrected_bytes: int = 0  # the model's own figure before that correction (0: none applied)

    @property
    def mode(self) -> str:
        """'metal' or 'cpu': which backend's memory behaviour the estimate models (the machine chooses)."""
        return "cpu" if self.settings.device == "cpu" else "metal"

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.terms)

    @property
    def total_gb(self) -> float:
        return self.total_bytes / GB

    def breakdown_gb(self) -> dict[str, float]:
        return {t.key: round(t.bytes / GB, 3) for t in self.terms}

    def term(self, key: str) -> Term:
        return next(t for t in self.terms if t.key == key)


@dataclass(frozen=True)
class Verdict:
    status: str  # 'fits', 'tight' or 'will not fit'
    total_bytes: int
    usable_bytes: int
    message: str

    @property
    def fits(self) -> bool:
        return self.status != "will not fit"


# --- coefficients -----------------------------------------------------------------------


@dataclass(frozen=True)
class Coefficients:
    """How many bytes mlx keeps per element of each tensor kind (memory_model.yaml)."""

    block: dict  # family -> {hidden, attn, kv, mlp}: dtype copies per token of a block's pass-through set,
    #              and checkpoint: hidden-size dtype copies per token per block with checkpointing
    lora_input: float  # bytes per element of an adapted layer's input (kept in float32 for x @ A)
    full_input: float  # dtype copies of a trained layer's input (weight gradient)
    lora_rank: float  # bytes per rank per adapted module per token (x @ A in float32)
    dora_output: float  # dtype copies of a DoRA layer's output (the magnitude's gradient)
    attention: float  # dtype copies of batch x heads x L^2 per adapted block
    mask: float  # bytes per L^2 element per adapted block (the causal mask)
    logits: dict  # device -> dtype copies of batch x L x vocab at the peak
    norm_copy_bytes: dict  # device -> bytes per element a norm keeps beyond its input (CPU: a float32 copy)
    head: float  # dtype copies of batch x L x hidden outside the blocks (embedding output, final norm)
    transient_blocks: float  # blocks' worth of activations the backward pass of one block holds on top
    token_bytes: float  # bytes per token outside the blocks (targets, mask, per-token loss)
    update: float  # extra copies of the trained weights during a full fine-tuning update
    overhead_bytes: float
    load_full_copies: float  # full-precision copies held while quantizing on the fly
    provenance: dict
    metal: dict = None  # the Metal mode's terms, each with its mechanism and source (memory_model.yaml 'metal')
    light_lse: float = 4.0  # bytes per query row per head per adapted block kept by the memory-light attention
    light_transient: float = 4.0  # float32 copies of one block's scores alive in its backward pass
    chunk_token_bytes: float = 4.0  # bytes per token the chunked loss keeps (its float32 loss)
    chunk_transient: float = 3.0  # float32 copies of one chunk's logits alive in its backward pass

    def block_for(self, family_name: str) -> dict:
        return self.block.get(family_name) or self.block["default"]


@lru_cache(maxsize=1)
def coefficients() -> Coefficients:
    with open(shipped("resources", "estimator", "memory_model.yaml"), encoding="utf-8") as f:
        data = yaml.safe_load(f)
    values = {k: (dict(v) if isinstance(v, dict) else float(v)) for k, v in data["coefficients"].items()}
    values["block"] = {k: dict(v) for k, v in values["block"].items()}
    metal = {k: float(v["value"]) for k, v in data["metal"]["terms"].items()}
    return Coefficients(provenance=data.get("provenance", {}), metal=metal, **values)


# --- checks -------------------------------------------------------------------------------


def check_settings(shape: ModelShape, s: Settings) -> list[Problem]:
    """Settings that cannot run on this model, each with the value and the allowed range."""
    rules = [
        (s.method not in METHODS, "method", f"one of {', '.join(METHODS)}", s.method),
        (s.optimizer not in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}", s.optimizer),
        (s.device not in ("gpu", "cpu"), "device", "gpu or cpu", s.device),
        (s.batch_size < 1, "batch_size", "1 or more", s.batch_size),
        (s.rank < 1 and s.method != "full", "rank", f"1 to {min(shape.hidden, 4096)}", s.rank),
        (s.rank > min(shape.hidden, 4096) and s.method != "full", "rank", f"1 to {min(shape.hidden, 4096)}", s.rank),
        (not (s.num_layers == -1 or 1 <= s.num_layers <= shape.layers), "num_layers",
         f"1 to {shape.layers} (the model's blocks) or -1 for all", s.num_layers),
        (s.max_seq_length < 8, "max_seq_length", f"8 to {shape.max_positions or 'the model maximum'}", s.max_seq_length),
        (bool(shape.max_positions) and s.max_seq_length > (shape.max_positions or 0), "max_seq_length",
         f"8 to {shape.max_positions} (the model's max_position_embeddings)", s.max_seq_length),
        (s.grad_accumulation < 1, "grad_accumulation", "1 or more", s.grad_accumulation),
        (s.quantize not in (None, 4, 8), "quantize", "4, 8 or none", s.quantize),
        (s.quantize is not None and s.method == "full", "quantize",
         "none for full fine-tuning (quantized weights cannot be trained; use lora for QLoRA)", s.quantize),
        (s.method == "full" and shape.quant_bits is not None, "method",
         f"lora or dora: the model is {shape.quant_bits}-bit quantized and full fine-tuning needs full precision",
         s.method),
    ]
    problems = [Problem(f"{value!r} is not allowed; allowed: {allowed}", field=key, value=value)
                for bad, key, allowed, value in rules if bad]
    return problems + _check_targets(shape, s)


def _check_targets(shape: ModelShape, s: Settings) -> list[Problem]:
    if s.method == "full" or not s.target_modules:
        return []
    missing = [t for t in s.target_modules if not _matching(shape.linears, t)]
    if not missing:
        return []
    names = ", ".join(shape.names())
    return [Problem(f"no linear layer named {', '.join(missing)} in this model's blocks; available: {names}",
                    field="target_modules", value=list(s.target_modules))]


def _matching(linears: tuple[Linear, ...], name: str) -> list[Linear]:
    return [x for x in linears if x.name == name or x.name.endswith("." + name)]


def adapted_linears(shape: ModelShape, s: Settings) -> tuple[Linear, ...]:
    """The linear layers of each adapted block that get LoRA/DoRA (every one for full)."""
    if s.method == "full" or not s.target_modules:
        return shape.linears
    chosen = {x for name in s.target_modules for x in _matching(shape.linears, name)}
    return tuple(x for x in shape.linears if x in chosen)


# --- the estimate -------------------------------------------------------------------------


def estimate(shape: ModelShape, s: Settings) -> Estimate:
    """Predicted peak memory; raises ProblemError for settings that cannot run."""
    problems = check_settings(shape, s)
    if problems:
        raise ProblemError(problems)
    ctx = _Context.make(shape, _forward_settings(s), coefficients())
    phases = phase_terms(ctx)
    phase = max(phases, key=lambda name: sum(phases[name].values()))
    terms = tuple(Term(k, v, _detail(ctx, k) if phase in _TRAINING else _PHASE_DETAIL[phase])
                  for k, v in phases[phase].items())
    return Estimate(
        terms=terms, phase=phase, phases=tuple((k, sum(v.values())) for k, v in phases.items()),
        trainable_params=ctx.trainable,
        total_params=shape.total_params, adapted_layers=ctx.n, sequence_length=ctx.length, settings=s,
        uncertain=_uncertain(shape), family=shape.family.kind,
    )


def _forward_settings(s: Settings) -> Settings:
    """The settings as the model sees them: preference pairs are two sequences per batch row."""
    k = s.sequences_per_row
    if k == 1:
        return s
    return replace(s, batch_size=s.batch_size * k, val_batch_size=(s.val_batch_size or s.batch_size) * k,
                   sequences_per_row=1)


@dataclass(frozen=True)
class _Context:
    """Numbers every term needs, computed once."""

    shape: ModelShape
    s: Settings
    c: Coefficients
    n: int  # adapted blocks
    length: int
    tokens: int
    dtype: int  # bytes per activation element
    bits: int | None  # quantization of the trained base
    group: int
    linears: tuple[Linear, ...]
    trainable: int

    @property
    def keys(self) -> int:
        """Keys each query row of the stock attention meets: the whole row, or a packed run's window."""
        window = memory_light.packed_window(self.s.packed_window or 0, self.length)
        return self.length if window is None else min(self.length, window + memory_light.PACKED_BLOCK)

    @property
    def mask_bytes(self) -> int:
        """The causal mask MLX builds per block (a byte per query x key); a windowed packed attention builds one
        block's at a time (batch x block x keys)."""
        if self.keys == self.length:
            return self.length * self.length
        return self.s.batch_size * memory_light.PACKED_BLOCK * self.keys

    @staticmethod
    def make(shape: ModelShape, s: Settings, c: Coefficients) -> _Context:
        n = shape.layers if s.num_layers == -1 else s.num_layers
        bits = shape.quant_bits or s.quantize
        group = shape.quant_group if shape.quant_bits else s.quantize_group_size
        linears = adapted_linears(shape, s)
        ctx = _Context(shape, s, c, n, s.max_seq_length, s.batch_size * s.max_seq_length, shape.dtype_bytes,
                       bits, group, linears, 0)
        return replace(ctx, trainable=trainable_parameters(shape, s))


def trainable_parameters(shape: ModelShape, s: Settings) -> int:
    """Exactly what mlx-lm makes trainable: LoRA A and B (+ DoRA's magnitude), or whole blocks."""
    n = shape.layers if s.num_layers == -1 else s.num_layers
    if s.method == "full":
        return n * shape.block_params
    per_block = sum(x.copies * s.rank * (x.inputs + x.outputs) for x in adapted_linears(shape, s))
    if s.method == "dora":
        per_block += sum(x.copies * x.outputs for x in adapted_linears(shape, s))
    return n * per_block


# Phases: each is a full breakdown; the largest sets the peak ---------------------------------
#
# 1. backward pass: weights, optimizer state, saved activations, attention, logits. The gradients of
#    full fine-tuning grow while the activations they replace are freed, so they are not added here.
# 2. optimizer update (full fine-tuning): weights, optimizer state, every gradient, and the new
#    values the update writes beside the old ones.
# 3. validation: forward only, one block at a time.
# 4. loading: quantizing on the fly holds the full-precision weights while the quantized copy is made.

_TRAINING = ("training step", "optimizer update")
_PHASE_DETAIL = {"validation": "forward pass of the validation batch",
                 "loading": "full-precision model held while quantizing on the fly"}


def phase_terms(ctx: _Context) -> dict[str, dict[str, int]]:
    phases = {"training step": _backward_terms(ctx)}
    if ctx.s.method == "full":
        phases["optimizer update"] = _update_terms(ctx)
    phases["validation"] = _validation_terms(ctx)
    if ctx.s.quantize and not ctx.shape.quant_bits:
        phases["loading"] = _loading_terms(ctx)
    return phases


def _terms(**values) -> dict[str, int]:
    return {key: int(values.get(key, 0)) for key in TERMS}


def _backward_terms(ctx: _Context) -> dict[str, int]:
    if ctx.s.device == "gpu":
        return _metal_backward_terms(ctx)
    return _terms(
        weights=weight_bytes(ctx.shape, ctx.bits, ctx.group),
        trainable=_state_bytes(ctx) + (0 if ctx.s.method == "full" else _adapter_gradients(ctx)),
        activations=_activation_bytes(ctx),
        attention=_attention_bytes(ctx, ctx.s.batch_size, saved_blocks=_saved_blocks(ctx)),
        logits=_logits_bytes(ctx, ctx.tokens),
        overhead=ctx.c.overhead_bytes,
    )


def _metal_backward_terms(ctx: _Context) -> dict[str, int]:
    """The training step on Metal (docs/estimator.md, "CPU versus Metal"), in three parts:

    1. kept through the step: weights, optimizer state, and what the backward pass needs from the forward pass:
       every adapted block's activations and its attention probabilities (MLX trains with the unfused attention
       on Metal), or with checkpointing only each block's input;
    2. then the larger of two moments that never overlap: the loss's backward (logits and their gradient,
       freed before the first block's backward starts) and one block's backward (its attention gradient,
       and with checkpointing the block's recomputed activations);
    3. the runtime overhead.
    """
    m, s, d = ctx.c.metal, ctx.s, ctx.dtype
    scores = s.batch_size * ctx.shape.heads * ctx.length * ctx.keys
    mask = ctx.mask_bytes  # the causal mask MLX builds per block: one byte per query x key
    block = per_token_block_bytes(ctx) * ctx.tokens
    light = light_attention(ctx)  # the memory-light attention keeps a float32 log-sum-exp per query row
    if light:
        rows = s.batch_size * ctx.shape.heads * ctx.length
        block_rows = memory_light.attention_block(s.batch_size, ctx.shape.heads, ctx.length)
        kept_scores = ctx.c.light_lse * rows
        backward_scores = ctx.c.light_transient * 4 * s.batch_size * ctx.shape.heads * block_rows * ctx.length
    else:
        kept_scores = m["attention_kept"] * d * scores + mask
        backward_scores = m["attention_backward"] * d * scores + mask
    if s.grad_checkpoint:
        kept_acts = m["checkpoint"] * d * ctx.shape.hidden * ctx.tokens * ctx.n
        kept_attention, block_acts = 0, block
    else:
        kept_acts, kept_attention, block_acts = ctx.n * block, ctx.n * kept_scores, 0
    if chunked_loss(ctx, ctx.tokens):  # one chunk of logits at a time, a float32 loss per token kept
        chunk = memory_light.loss_chunk(ctx.shape.vocab, ctx.tokens)
        loss = ((ctx.c.head * ctx.shape.hidden * d + ctx.c.chunk_token_bytes) * ctx.tokens
                + ctx.c.chunk_transient * 4 * chunk * ctx.shape.vocab)
    else:
        loss = (m["logits"] * ctx.shape.vocab + ctx.c.head * ctx.shape.hidden) * d * ctx.tokens
    block_backward = block_acts + backward_scores
    in_loss = loss >= block_backward
    return _terms(
        weights=weight_bytes(ctx.shape, ctx.bits, ctx.group),
        trainable=_state_bytes(ctx) + (0 if s.method == "full" else _adapter_gradients(ctx)),
        activations=kept_acts + (0 if in_loss else block_acts) + _dora_weights(ctx),
        attention=kept_attention + (0 if in_loss else block_backward - block_acts),
        logits=loss if in_loss else 0,
        overhead=ctx.c.overhead_bytes,
    )


def _update_terms(ctx: _Context) -> dict[str, int]:
    gradients = ctx.trainable * ctx.dtype
    return _terms(weights=weight_bytes(ctx.shape, ctx.bits, ctx.group),
                  trainable=_state_bytes(ctx) + gradients * (1 + ctx.c.update), overhead=ctx.c.overhead_bytes)


def _state_bytes(ctx: _Context) -> int:
    """What stays between steps: optimizer state (+ LoRA weights, + accumulated gradients)."""
    s, p = ctx.s, ctx.trainable
    size = ctx.dtype if s.method == "full" else 4  # LoRA A/B are float32; full trains the weights' dtype
    adapters = 0 if s.method == "full" else p * 4  # full fine-tuning's weights are in 'weights'
    state = p * size * _OPTIMIZER_STATE[s.optimizer] + (_adafactor_state(ctx) if s.optimizer == "adafactor" else 0)
    accumulated = p * size if s.grad_accumulation > 1 else 0
    return int(adapters + state + accumulated)


def _adapter_gradients(ctx: _Context) -> int:
    return ctx.trainable * 4


def light_attention(ctx: _Context) -> bool:
    """Whether the run trains its longest batch with the memory-light attention."""
    if ctx.shape.model_type in memory_light.OWN_ATTENTION:
        return False
    return memory_light.light_attention(ctx.s.attention, ctx.length)


def chunked_loss(ctx: _Context, tokens: int) -> bool:
    """Whether the run computes the loss of its longest batch in chunks."""
    if ctx.shape.model_type not in memory_light.CHUNKED_LOSS_TYPES:
        return False
    return memory_light.chunked_loss(ctx.s.loss, tokens, ctx.shape.vocab)


def _logits_bytes(ctx: _Context, tokens: int) -> int:
    """The output head's logits and the loss (and what surrounds the blocks per token)."""
    c, shape = ctx.c, ctx.shape
    final_norm = _norm_copy(ctx) * shape.hidden
    if chunked_loss(ctx, tokens):
        chunk = memory_light.loss_chunk(shape.vocab, tokens)
        per_token = ctx.dtype * c.head * shape.hidden + c.token_bytes + c.chunk_token_bytes
        return int((per_token + final_norm) * tokens + c.chunk_transient * 4 * chunk * shape.vocab)
    per_token = ctx.dtype * (c.logits[ctx.s.device] * shape.vocab + c.head * shape.hidden) + c.token_bytes
    return int((per_token + final_norm) * tokens)


def _norm_copy(ctx: _Context) -> float:
    """Bytes per normalised element beyond what Metal's fused norm keeps: MLX's CPU backend has no norm
    kernel and keeps a float32 copy of the input for the backward pass (4 bytes instead of 2 for bf16)."""
    extra = ctx.c.norm_copy_bytes[ctx.s.device]
    return max(0.0, extra - ctx.dtype) if extra else 0.0


def weight_bytes(shape: ModelShape, bits: int | None, group: int = 64) -> int:
    """All parameters as stored: quantized linears and embeddings with their scales and biases."""
    per_weight = _bytes_per_weight(shape.dtype_bytes, bits, group)
    dense = per_weight(1) if bits else shape.dtype_bytes
    linear = sum(x.copies * x.inputs * x.outputs for x in shape.linears)
    biases = sum(x.copies * x.outputs for x in shape.linears if x.bias)
    tables = shape.embedding_params + (shape.vocab * shape.hidden if not shape.tied else 0)
    small = shape.norm_params * shape.layers + biases * shape.layers + shape.hidden * 2
    return int(dense * (linear * shape.layers + tables) + shape.dtype_bytes * small)


def _bytes_per_weight(scale_bytes: int, bits: int | None, group: int):
    """Bytes per weight: ``bits``/8 plus a scale and a bias (model dtype) per group."""
    return lambda count: count * ((bits or 16) / 8 + 2 * scale_bytes / group)


def _adafactor_state(ctx: _Context) -> int:
    """Adafactor keeps a row and a column average per matrix (float32)."""
    if ctx.s.method == "full":
        per_block = sum(x.copies * (x.inputs + x.outputs) for x in ctx.shape.linears)
    else:
        per_block = sum(x.copies * 2 * (x.inputs + x.outputs + ctx.s.rank) for x in ctx.linears)
    return 4 * ctx.n * per_block


def _saved_blocks(ctx: _Context) -> int:
    """Blocks whose full activations are alive at the peak: all adapted ones, or one when checkpointing."""
    return 1 if ctx.s.grad_checkpoint else ctx.n


def per_token_block_bytes(ctx: _Context) -> float:
    """Bytes one adapted block keeps per token for the backward pass (no checkpointing)."""
    shape, c, d = ctx.shape, ctx.c, ctx.dtype
    b = c.block_for(shape.family.kind)
    base = d * (b["hidden"] * shape.hidden + b["attn"] * shape.attn_width + b["kv"] * shape.kv_width
                + b["mlp"] * shape.intermediate * _mlp_share(shape))
    normed = shape.family.norms * shape.hidden + (shape.attn_width + shape.kv_width if shape.family.qk_norm else 0)
    return base + _input_bytes(ctx) + _adapter_bytes(ctx) + _norm_copy(ctx) * normed


def _mlp_share(shape: ModelShape) -> float:
    """Mixture of experts: each token goes through its routed experts only."""
    return shape.experts_per_token or 1


def _input_bytes(ctx: _Context) -> float:
    """The inputs of trained/adapted linear layers, kept for their weight gradients."""
    widths = {x.group: x.inputs for x in ctx.linears}
    total = sum(widths.values())
    if ctx.s.method == "full":
        return ctx.c.full_input * ctx.dtype * total
    return total * ctx.c.lora_input


def _adapter_bytes(ctx: _Context) -> float:
    if ctx.s.method == "full":
        return 0.0
    modules = sum(x.copies for x in ctx.linears)
    dora = ctx.c.dora_output * ctx.dtype * sum(x.outputs for x in ctx.linears) if ctx.s.method == "dora" else 0.0
    return ctx.c.lora_rank * ctx.s.rank * modules + dora


def _activation_bytes(ctx: _Context) -> int:
    tokens, shape = ctx.tokens, ctx.shape
    per_block = per_token_block_bytes(ctx)
    transient = ctx.c.transient_blocks * per_block * tokens
    if ctx.s.grad_checkpoint:
        kept = ctx.c.block_for(shape.family.kind)["checkpoint"] * ctx.dtype * shape.hidden * tokens * ctx.n
        return int(kept + per_block * tokens + transient + _dora_weights(ctx))
    return int(per_block * tokens * ctx.n + transient + _dora_weights(ctx))


def _dora_weights(ctx: _Context) -> int:
    """DoRA materialises each adapted layer's dense weight in the forward pass: a quantized base keeps
    the dequantized copy for the backward pass; every base builds a float32 adapted weight, one at a time."""
    if ctx.s.method != "dora":
        return 0
    dense = [x.copies * x.inputs * x.outputs for x in ctx.linears]
    kept = ctx.n * sum(dense) * ctx.dtype if ctx.bits else 0
    return int(kept + 4 * max(dense))


def _attention_bytes(ctx: _Context, batch: int, saved_blocks: int) -> int:
    shape, length = ctx.shape, ctx.length
    if light_attention(ctx):
        rows = batch * shape.heads * length  # query rows of all heads
        block = memory_light.attention_block(batch, shape.heads, length)
        transient = ctx.c.light_transient * 4 * batch * shape.heads * block * length
        return int(saved_blocks * ctx.c.light_lse * rows + transient)
    scores = batch * shape.heads * length * ctx.keys
    return int(saved_blocks * (ctx.c.attention * ctx.dtype * scores + ctx.c.mask * ctx.mask_bytes))


# Other phases -----------------------------------------------------------------------------


def _validation_terms(ctx: _Context) -> dict[str, int]:
    """Validation runs forward only: weights, trainable state, one block at a time and the logits."""
    batch = ctx.s.val_batch_size or ctx.s.batch_size
    tokens = batch * ctx.length
    return _terms(
        weights=weight_bytes(ctx.shape, ctx.bits, ctx.group),
        trainable=_state_bytes(ctx),
        activations=per_token_block_bytes(ctx) * tokens,
        attention=_attention_bytes(ctx, batch, saved_blocks=1),
        logits=_validation_logits(ctx, tokens),
        overhead=ctx.c.overhead_bytes,
    )


def _validation_logits(ctx: _Context, tokens: int) -> int:
    """The logits and the loss's float32 reduction of a forward pass (one chunk of them when chunked)."""
    if chunked_loss(ctx, tokens):
        chunk = memory_light.loss_chunk(ctx.shape.vocab, tokens)
        return int(chunk * ctx.shape.vocab * (ctx.dtype + 4) + ctx.c.chunk_token_bytes * tokens)
    return tokens * ctx.shape.vocab * (ctx.dtype + 4)


def _loading_terms(ctx: _Context) -> dict[str, int]:
    full = ctx.c.load_full_copies * weight_bytes(ctx.shape, None)
    return _terms(weights=full + weight_bytes(ctx.shape, ctx.bits, ctx.group))


def _detail(ctx: _Context, key: str) -> str:
    s, shape = ctx.s, ctx.shape
    texts = {
        "weights": f"{format_params(shape.total_params)} parameters, "
                   + (f"{ctx.bits}-bit, group {ctx.group}" if ctx.bits else shape.dtype),
        "trainable": f"{ctx.trainable:,} trainable ({s.method}, {s.optimizer})",
        "activations": f"{ctx.n} adapted blocks x {ctx.tokens:,} tokens"
                       + (" (checkpointed)" if s.grad_checkpoint else ""),
        "attention": (f"memory-light attention: batch {s.batch_size} x {shape.heads} heads x {ctx.length} "
                      f"log-sum-exps per block kept, one block of "
                      f"{memory_light.attention_block(s.batch_size, shape.heads, ctx.length)} query rows at a time"
                      if light_attention(ctx) else
                      f"batch {s.batch_size} x {shape.heads} heads x {ctx.length}^2 per block kept"),
        "logits": (f"chunked loss: {memory_light.loss_chunk(shape.vocab, ctx.tokens):,} tokens x vocab "
                   f"{shape.vocab:,} at a time" if chunked_loss(ctx, ctx.tokens) else
                   f"batch {s.batch_size} x {ctx.length} x vocab {shape.vocab:,}"),
        "overhead": "MLX runtime and batch arrays",
    }
    return texts[key]


def _uncertain(shape: ModelShape) -> tuple[str, ...]:
    return tuple(shape.uncertain)


# --- verdict ------------------------------------------------------------------------------

TIGHT_SHARE = 0.9  # above this share of the usable memory, a run is tight


def format_params(n: int) -> str:
    """'7.3M parameters' below a billion, '8.03B' above: small models never show as 0.00B."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def judge(est: Estimate, machine: Machine) -> Verdict:
    """fits / tight / will not fit against the Metal working-set limit and the system's reserve."""
    usable, total = machine.usable_bytes, est.total_bytes
    if total > usable:
        status = "will not fit"
    elif total > TIGHT_SHARE * usable:
        status = "tight"
    else:
        status = "fits"
    message = (f"needs {total / GB:.1f} GB of {usable / GB:.1f} GB usable (GB = 10^9 bytes; "
               f"{'Metal working-set limit' if machine.device == 'gpu' else 'memory limit'} "
               f"{machine.working_set_bytes / GB:.1f} GB of {machine.memory_bytes / GB:.1f} GB "
               f"= {machine.memory_bytes / GIB:.0f} GiB of memory; "
               f"the system keeps {machine.reserve_bytes / GB:.0f} GB)")
    return Verdict(status, total, usable, message)


def fitted_to(shape: ModelShape, s: Settings, length: bool = True, layers: bool = True) -> Settings:
    """Default settings fitted to a model the way ``macfinetune estimate`` fits them when nobody chose them:
    the sequence length capped by the model's positions (``length``), and the default block count beyond a
    smaller model's blocks turned into all of them (``layers``)."""
    if length and shape.max_positions:
        s = replace(s, max_seq_length=min(s.max_seq_length, shape.max_positions))
    if layers and s.num_layers > shape.layers:
        s = replace(s, num_layers=-1)
    return s


def settings_from_recipe(recipe) -> Settings:
    """The estimator's view of a ``Recipe``."""
    m, t, d = recipe.method, recipe.training, recipe.data
    return Settings(
        method=m.type, num_layers=m.num_layers, rank=m.rank, target_modules=tuple(m.target_modules),
        batch_size=t.batch_size, max_seq_length=d.max_seq_length, grad_checkpoint=t.grad_checkpoint,
        optimizer=t.optimizer, grad_accumulation=t.grad_accumulation, quantize=recipe.model.quantize,
        quantize_group_size=recipe.model.quantize_group_size, attention=t.attention, loss=t.loss,
        sequences_per_row=1 if getattr(t, "objective", "sft") == "sft" else 2,
    )
