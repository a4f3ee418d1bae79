"""Memory-light attention, a chunked loss and packed-sequence masks for training (issue 14).

mlx-lm's models call ``scaled_dot_product_attention`` from ``mlx_lm.models.base``, a name each
model module imports. ``training_paths(model, mode)`` points that name, in the modules of the
model's own classes, at ``_sdpa`` for the duration of a run and puts it back afterwards; the
choice is thread-local, so any other thread keeps mlx-lm's function. ``_sdpa`` falls back to
mlx-lm's function whenever there is a KV cache, attention sinks, or queries and keys of different
lengths (generation), so only training's full-sequence attention changes.

Memory-light attention (``_blockwise``, an ``mx.custom_function`` with its own ``vjp``): the
queries are taken ``block`` rows at a time; with a causal mask a block only meets the keys up to
its last row (half the work of the full square). The forward pass keeps only the output and one
float32 log-sum-exp per query row; the backward pass recomputes each block's scores from them
(the FlashAttention-2 backward, written with MLX ops). ``mx.depends`` chains each block to the
previous one, so MLX evaluates one block at a time and never holds every block's scores at once.

Packed sequences (several examples in one row): the loss passes each token's example number
(``segments``) to the attention, which lets a token see only earlier tokens of its own example:
a block-diagonal causal mask. The models' rotary position embeddings are relative, so an example
packed at offset 300 attends exactly as it does alone (tests/test_speed.py proves the loss equal).

Chunked loss: ``token_losses`` computes the cross-entropy ``chunk`` tokens at a time from the
last hidden states and the output head (another custom function: the backward pass recomputes
each chunk's logits), so batch x L x vocab float32 logits never exist at once. It needs the model
split into body and head, which ``split_head`` knows for the llama, mistral, qwen2 and qwen3
modules (other models use the stock loss).
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models import base

from macfinetune.core import memory_light

_ORIGINAL = base.scaled_dot_product_attention
_NEG = -1e30  # a masked score: exp(_NEG - lse) is 0, and a fully masked row stays finite


class _State(threading.local):
    mode: str | None = None  # None: this thread is not training (mlx-lm's attention)
    segments: mx.array | None = None  # (batch, length) example numbers of a packed batch
    window: int | None = None  # no example of the packed batches is longer (core.memory_light.packed_window)


_STATE = _State()


@contextmanager
def training_paths(model, attention: str = "auto"):
    """Within, the model's full-sequence attention on this thread follows ``attention``
    (auto, stock or memory_light; see core/memory_light.py) and honours packed segments."""
    modules = {sys.modules.get(type(m).__module__) for _, m in model.named_modules()}
    patched = [m for m in modules if m is not None and getattr(m, "scaled_dot_product_attention", None) is _ORIGINAL]
    for module in patched:
        module.scaled_dot_product_attention = _sdpa
    _STATE.mode, _STATE.segments, _STATE.window = attention, None, None
    try:
        yield
    finally:
        _STATE.mode, _STATE.segments, _STATE.window = None, None, None
        for module in patched:
            module.scaled_dot_product_attention = _ORIGINAL


def use_segments(segments: mx.array | None, window: int | None = None) -> None:
    """The example number of each input token, for this thread's attention calls from now on: the
    loss sets it for its batch and leaves it set, because gradient checkpointing runs the blocks
    again in the backward pass, after the loss has returned (a test proves the gradients). ``window``:
    no example is longer than that many tokens (a constant of the run, so a compiled step stays right)."""
    _STATE.segments, _STATE.window = segments, (window if segments is not None else None)


def _sdpa(queries, keys, values, cache=None, scale: float = 1.0, mask=None, sinks=None):
    """mlx-lm's ``scaled_dot_product_attention`` with the training paths of this module."""
    length = queries.shape[-2]
    if _STATE.mode is None or cache is not None or sinks is not None or keys.shape[-2] != length or mask is None:
        return _ORIGINAL(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)
    segments = _STATE.segments
    if isinstance(mask, str) and mask != "causal":
        return _ORIGINAL(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)
    if memory_light.light_attention(_STATE.mode, length):
        return blockwise_attention(queries, keys, values, scale, mask, segments)
    window = memory_light.packed_window(_STATE.window or 0, length) if segments is not None else None
    if window is not None and isinstance(mask, str):
        return windowed_attention(queries, keys, values, scale, segments, window)
    if segments is not None:
        mask = segment_mask(segments, mask)
    return _ORIGINAL(queries, keys, values, cache=None, scale=scale, mask=mask)


def segment_mask(segments: mx.array, mask=None) -> mx.array:
    """(batch, 1, L, L): causal, and only within the same example; combined with an array ``mask``."""
    length = segments.shape[-1]
    causal = mx.arange(length)[:, None] >= mx.arange(length)[None]
    allowed = causal & (segments[:, None, :, None] == segments[:, None, None, :])
    if isinstance(mask, mx.array):
        if mask.dtype == mx.bool_:
            return allowed & mask
        return mx.where(allowed, mask, mx.array(_NEG, mask.dtype))
    return allowed


def windowed_attention(queries, keys, values, scale: float, segments: mx.array, window: int,
                       block: int = memory_light.PACKED_BLOCK) -> mx.array:
    """Exact block-diagonal causal attention of a packed batch whose examples are at most ``window`` tokens
    long: query rows ``block`` at a time, each block against only the keys from ``window - 1`` before its first
    row (no token of it can see further back) to its last row. Plain MLX ops, so autodiff gives the backward;
    the work and the scores kept for it shrink from length x length to about length x (window + block)."""
    b, heads, length, dim = queries.shape
    kv_heads = keys.shape[1]
    rep = heads // kv_heads
    qg, kg, vg = queries.reshape(b, kv_heads, rep, length, dim), keys[:, :, None], values[:, :, None]
    outs = []
    for lo in range(0, length, block):
        hi = min(length, lo + block)
        first = max(0, lo - window + 1)
        s = (qg[..., lo:hi, :] @ kg[..., first:hi, :].swapaxes(-1, -2)).astype(mx.float32) * scale
        allowed = (mx.arange(lo, hi)[:, None] >= mx.arange(first, hi)[None]) & (
            segments[:, None, None, lo:hi, None] == segments[:, None, None, None, first:hi])
        p = mx.softmax(mx.where(allowed, s, _NEG), axis=-1).astype(values.dtype)
        outs.append(p @ vg[..., first:hi, :])
    return mx.concatenate(outs, axis=-2).reshape(b, heads, length, dim)


# --- memory-light attention ----------------------------------------------------------------


def blockwise_attention(queries, keys, values, scale: float, mask=None, segments=None) -> mx.array:
    """Exact attention (causal unless ``mask`` is an array) that keeps no L x L scores for backward."""
    b, heads, length, _ = queries.shape
    block = memory_light.attention_block(b, heads, length)
    if isinstance(mask, mx.array):
        if segments is not None:
            mask = segment_mask(segments, mask)
        return _blockwise(float(scale), block, "mask")(queries, keys, values, mask)[0]
    if segments is not None:
        return _blockwise(float(scale), block, "segments")(queries, keys, values, segments)[0]
    return _blockwise(float(scale), block, "causal")(queries, keys, values)[0]


def _grouped(extra: tuple, kind: str, kv_heads: int, rep: int):
    """The mask in the grouped layout (batch, kv heads, rep, L, S); segment ids as they are."""
    if kind != "mask":
        return extra[0] if extra else None
    m = extra[0]
    if m.ndim == 4:
        return m[:, :, None] if m.shape[1] == 1 else m.reshape(m.shape[0], kv_heads, rep, *m.shape[2:])
    if m.ndim == 3:
        return m[:, None, None]
    return m


def _scores(qb, kg, lo: int, hi: int, kind: str, extra, scale: float):
    """float32 scores of query rows lo..hi-1 against the keys they may see, and how many keys that is."""
    keys_end = kg.shape[-2] if kind == "mask" else hi
    s = (qb @ kg[..., :keys_end, :].swapaxes(-1, -2)).astype(mx.float32) * scale
    if kind == "mask":
        m = extra[..., lo:hi, :]
        s = mx.where(m, s, _NEG) if m.dtype == mx.bool_ else s + m.astype(mx.float32)
        return s, keys_end
    allowed = mx.arange(lo, hi)[:, None] >= mx.arange(keys_end)[None]
    if kind == "segments":
        allowed = allowed & (extra[:, None, None, lo:hi, None] == extra[:, None, None, None, :keys_end])
    return mx.where(allowed, s, _NEG), keys_end


@lru_cache(maxsize=64)
def _blockwise(scale: float, block: int, kind: str):
    """The custom function for one (scale, block size, mask kind): returns (output, log-sum-exp)."""

    @mx.custom_function
    def attention(q, k, v, *extra):
        b, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        rep = heads // kv_heads
        qg, kg, vg = q.reshape(b, kv_heads, rep, length, dim), k[:, :, None], v[:, :, None]
        ex = _grouped(extra, kind, kv_heads, rep)
        outs, lses = [], []
        for lo in range(0, length, block):
            hi = min(length, lo + block)
            qb = qg[..., lo:hi, :]
            if outs:  # one block at a time: this block waits for the previous one
                qb = mx.depends(qb, [outs[-1], lses[-1]])
            s, keys_end = _scores(qb, kg, lo, hi, kind, ex, scale)
            lse = mx.logsumexp(s, axis=-1)
            p = mx.exp(s - lse[..., None])
            outs.append(p.astype(v.dtype) @ vg[..., :keys_end, :])
            lses.append(lse)
        out = mx.concatenate(outs, axis=-2).reshape(b, heads, length, dim)
        return out, mx.concatenate(lses, axis=-1)

    @attention.vjp
    def attention_vjp(primals, cotangents, outputs):
        q, k, v, *extra = primals
        d_out = cotangents[0]
        out, lse = outputs
        b, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        rep = heads // kv_heads
        f32 = mx.float32
        qg, kg, vg = q.reshape(b, kv_heads, rep, length, dim), k[:, :, None], v[:, :, None]
        dog = d_out.reshape(b, kv_heads, rep, length, dim)
        og = out.reshape(b, kv_heads, rep, length, dim)
        ex = _grouped(tuple(extra), kind, kv_heads, rep)
        delta = (dog.astype(f32) * og.astype(f32)).sum(-1)  # rowsum(dO * O)
        dk = mx.zeros((b, kv_heads, length, dim), f32)
        dv = mx.zeros((b, kv_heads, length, dim), f32)
        dqs = []
        for lo in range(0, length, block):
            hi = min(length, lo + block)
            qb = qg[..., lo:hi, :]
            if dqs:
                qb = mx.depends(qb, [dqs[-1], dk, dv])
            s, keys_end = _scores(qb, kg, lo, hi, kind, ex, scale)
            p = mx.exp(s - lse[..., lo:hi, None])
            dob = dog[..., lo:hi, :].astype(f32)
            dp = dob @ vg[..., :keys_end, :].astype(f32).swapaxes(-1, -2)
            ds = p * (dp - delta[..., lo:hi, None])
            dqs.append((ds @ kg[..., :keys_end, :].astype(f32)) * scale)
            dv[:, :, :keys_end] = dv[:, :, :keys_end] + (p.swapaxes(-1, -2) @ dob).sum(2)
            dk[:, :, :keys_end] = dk[:, :, :keys_end] + (ds.swapaxes(-1, -2) @ qb.astype(f32)).sum(2) * scale
        dq = mx.concatenate(dqs, axis=-2).reshape(b, heads, length, dim)
        grads = [dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)]
        return grads + [mx.zeros_like(e) for e in extra]

    return attention


# --- the loss ------------------------------------------------------------------------------

_SPLIT_MODULES = ("mlx_lm.models.llama", "mlx_lm.models.mistral", "mlx_lm.models.qwen2", "mlx_lm.models.qwen3")


def split_head(model):
    """(body, head, vocab) with model(x) == head(body(x)), or None where that is not known to hold
    or the head is trained (the chunked loss gives no gradient to the head's weights)."""
    if type(model).__module__ not in _SPLIT_MODULES:
        return None
    args, body = getattr(model, "args", None), getattr(model, "model", None)
    if args is None or body is None:
        return None
    owner = body.embed_tokens if getattr(args, "tie_word_embeddings", False) else getattr(model, "lm_head", None)
    if owner is None or tree_flatten(owner.trainable_parameters()):
        return None
    head = owner.as_linear if owner is body.embed_tokens else owner
    return body, head, int(args.vocab_size)


def token_losses(model, inputs: mx.array, targets: mx.array, mode: str = "auto") -> mx.array:
    """Per-token cross-entropy (batch, length): the stock way (mlx-lm's) or in chunks."""
    split = split_head(model)
    if split is not None and memory_light.chunked_loss(mode, targets.size, split[2]):
        body, head, vocab = split
        hidden = body(inputs)
        n, dim = targets.size, hidden.shape[-1]
        flat = _chunked_ce(head, memory_light.loss_chunk(vocab, n))(hidden.reshape(n, dim), targets.reshape(n))
        return flat.reshape(targets.shape)
    return nn.losses.cross_entropy(model(inputs), targets)


def _chunked_ce(head, chunk: int):
    """Cross-entropy of head(h) against targets, ``chunk`` rows at a time, logits recomputed for backward."""

    def logits_of(h):
        return head(h).astype(mx.float32)

    @mx.custom_function
    def cross_entropy(h, targets):
        parts = []
        for lo in range(0, h.shape[0], chunk):
            hb = h[lo : lo + chunk]
            if parts:
                hb = mx.depends(hb, parts[-1])
            logits = logits_of(hb)
            picked = mx.take_along_axis(logits, targets[lo : lo + chunk, None], axis=-1)[:, 0]
            parts.append(mx.logsumexp(logits, axis=-1) - picked)
        return mx.concatenate(parts)

    @cross_entropy.vjp
    def cross_entropy_vjp(primals, cotangent, output):
        h, targets = primals
        g = cotangent[0] if isinstance(cotangent, (list, tuple)) else cotangent
        parts = []
        for lo in range(0, h.shape[0], chunk):
            hb = h[lo : lo + chunk]
            if parts:
                hb = mx.depends(hb, parts[-1])
            logits = logits_of(hb)
            gb, tb = g[lo : lo + chunk, None], targets[lo : lo + chunk, None]
            onehot = mx.arange(logits.shape[-1])[None] == tb
            d_logits = (mx.softmax(logits, axis=-1) - onehot) * gb
            _, (dh,) = mx.vjp(logits_of, [hb], [d_logits])
            parts.append(dh)
        return mx.concatenate(parts), mx.zeros_like(targets)

    return cross_entropy


def make_loss(mode: str = "auto"):
    """mlx-lm's default_loss (same batches, same mask, same value) with the logits chunked when it helps."""

    def loss(model, batch, lengths):
        use_segments(None)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        ce = token_losses(model, inputs, targets, mode)
        steps = mx.arange(1, targets.shape[1] + 1)
        mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
        ntoks = mask.sum()
        return (ce * mask).astype(mx.float32).sum() / ntoks, ntoks

    return loss


def make_packed_loss(mode: str = "auto", window: int | None = None):
    """The loss of a packed batch (tokens, target mask, segment of each input token): each example's
    own targets only, and attention that stays inside each example (``window``: the longest example of
    the data, which lets the attention skip keys no token can see; ``windowed_attention``)."""

    def loss(model, batch, weights, segments):
        use_segments(segments, window)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        ce = token_losses(model, inputs, targets, mode)
        ntoks = weights.sum()
        return (ce * weights).astype(mx.float32).sum() / ntoks, ntoks

    return loss
