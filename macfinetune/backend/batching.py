"""Batch sources for mlx-lm's trainer beside its own ``iterate_batches`` (issue 14).

Both take mlx-lm's arguments (``dataset, batch_size, max_seq_length, loop, comm_group``), draw
everything from their own NumPy generator seeded with (seed, epoch) (never NumPy's global state),
and so give the same batches in the same order every time: exact resume fast-forwards through
them like through mlx-lm's.

``bucketed_batches``: rows of similar length together. Each epoch the rows are shuffled, cut into
windows of ``WINDOW_BATCHES`` batches, sorted by length inside each window and cut into batches;
the batches of the epoch are shuffled. Each batch is padded to its own longest row (rounded up to
a multiple of ``BUCKET_PAD_TO`` plus one, as mlx-lm rounds to 32 plus one, to bound the number of
distinct shapes the compiled step sees). Batches are mlx-lm's
``(tokens, [[offset, length], ...])``, so mlx-lm's loss and prompt masking work unchanged.

``packed_batches``: several rows in each sequence of up to ``max_seq_length`` tokens. Rows are
taken in a shuffled order, epoch after epoch, and placed first-fit into a few open sequences; a
sequence leaves when more than ``OPEN_SEQUENCES`` are open (the fullest first). A packed batch is
``PackedBatch((tokens, weights, segments))``: ``weights`` marks the targets each row trains alone
(its own tokens after the first, after its masked prompt), ``segments`` the row each input token
belongs to, which the attention turns into a block-diagonal causal mask
(backend/attention.make_packed_loss). Text rows end in EOS (mlx-lm appends it), so a packed
sequence reads "doc EOS doc EOS ..."; chat rows are packed as they are rendered, adding nothing.
A row longer than ``max_seq_length`` is truncated, as mlx-lm does.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

PAD_TO = 32  # mlx-lm's rounding of a batch's length (packed sequences are nearly full anyway)
BUCKET_PAD_TO = 8  # length buckets: closer to the longest row, at the cost of more distinct shapes to compile
WINDOW_BATCHES = 16
OPEN_SEQUENCES = 8


class PackedBatch(tuple):
    """(tokens, weights, segments) with ``real_tokens`` (the targets the loss trains on) and
    ``filled`` (token positions holding a row's token, not padding)."""

    real_tokens: int = 0
    filled: int = 0


def _rows(dataset, max_seq_length: int) -> list[tuple[list[int], int]]:
    out = []
    for i in range(len(dataset)):
        item = dataset[i]
        tokens, offset = item if len(item) == 2 and not isinstance(item[1], list) else (item, 0)
        out.append((list(tokens)[:max_seq_length], int(offset)))
    return out


def _width(longest: int, max_seq_length: int, pad_to: int = PAD_TO) -> int:
    return min(1 + pad_to * ((longest + pad_to - 1) // pad_to), max_seq_length)


def _generator(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _check(dataset, batch_size: int, comm_group) -> None:
    if comm_group is not None and comm_group.size() > 1:
        raise ValueError("packing and length buckets train on one machine; turn them off for multi-host runs")
    if len(dataset) < batch_size:
        raise ValueError(f"Dataset must have at least batch_size={batch_size} examples but only has {len(dataset)}.")


# --- length buckets -------------------------------------------------------------------------


def bucket_order(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (row indices) of one epoch: similar lengths together, in a shuffled order."""
    rng = _generator(seed, epoch)
    order = rng.permutation(len(lengths))
    window = batch_size * WINDOW_BATCHES
    batches = []
    for start in range(0, len(order) - batch_size + 1, window):
        part = order[start : start + window]
        part = sorted(part.tolist(), key=lambda i: (lengths[i], i))
        batches += [part[i : i + batch_size] for i in range(0, len(part) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def bucketed_batches(dataset, batch_size: int, max_seq_length: int, loop: bool = False, seed: int = 0,
                     comm_group=None, **_):
    import mlx.core as mx

    _check(dataset, batch_size, comm_group)
    rows = _rows(dataset, max_seq_length)
    lengths = [len(t) for t, _ in rows]
    epoch = 0
    while True:
        for idx in bucket_order(lengths, batch_size, seed, epoch):
            width = _width(max(lengths[i] for i in idx), max_seq_length, BUCKET_PAD_TO)
            arr = np.zeros((batch_size, width), np.int32)
            for j, i in enumerate(idx):
                arr[j, : lengths[i]] = rows[i][0]
            yield mx.array(arr), mx.array([[rows[i][1], lengths[i]] for i in idx])
        epoch += 1
        if not loop:
            return


# --- packing ----------------------------------------------------------------------------------


def _stream(n: int, seed: int, loop: bool):
    epoch = 0
    while True:
        yield from _generator(seed, epoch).permutation(n).tolist()
        epoch += 1
        if not loop:
            return


def _fullest(open_: list[tuple[list[int], int]]) -> int:
    return max(range(len(open_)), key=lambda k: (open_[k][1], -k))


def pack_sequences(lengths: list[int], capacity: int, order) -> Iterator[list[int]]:
    """Row indices per packed sequence, in the order the sequences leave (first-fit, a few open)."""
    open_: list[tuple[list[int], int]] = []  # (rows, tokens used)
    for i in order:
        need = min(lengths[i], capacity)
        for k, (members, used) in enumerate(open_):
            if used + need <= capacity:
                members.append(i)
                open_[k] = (members, used + need)
                break
        else:
            open_.append(([i], need))
        if len(open_) > OPEN_SEQUENCES:
            yield open_.pop(_fullest(open_))[0]
    while open_:
        yield open_.pop(_fullest(open_))[0]


def packed_arrays(rows: list[tuple[list[int], int]], sequences: list[list[int]], max_seq_length: int):
    """(tokens, weights, segments) as NumPy arrays for a batch of packed sequences."""
    used = [sum(len(rows[i][0]) for i in seq) for seq in sequences]
    width = _width(max(used), max_seq_length)
    tokens = np.zeros((len(sequences), width), np.int32)
    weights = np.zeros((len(sequences), width - 1), bool)
    segments = np.zeros((len(sequences), width - 1), np.int32)  # 0: padding
    for r, seq in enumerate(sequences):
        start = 0
        for number, i in enumerate(seq, start=1):
            toks, offset = rows[i]
            n = len(toks)
            tokens[r, start : start + n] = toks
            segments[r, start : start + n] = number  # input positions (the last one is cut by width - 1)
            # targets of this row alone: its positions max(offset, 1) .. n - 1, shifted by one
            weights[r, start + max(offset, 1) - 1 : start + n - 1] = True
            start += n
    return tokens, weights, segments


def packed_batches(dataset, batch_size: int, max_seq_length: int, loop: bool = False, seed: int = 0,
                   comm_group=None, **_):
    import mlx.core as mx

    _check(dataset, batch_size, comm_group)
    rows = _rows(dataset, max_seq_length)
    lengths = [len(t) for t, _ in rows]
    pending: list[list[int]] = []
    for seq in pack_sequences(lengths, max_seq_length, _stream(len(rows), seed, loop)):
        pending.append(seq)
        if len(pending) == batch_size:
            tokens, weights, segments = packed_arrays(rows, pending, max_seq_length)
            batch = PackedBatch((mx.array(tokens), mx.array(weights), mx.array(segments)))
            batch.real_tokens = int(weights.sum())
            batch.filled = sum(lengths[i] for seq in pending for i in seq)
            yield batch
            pending = []


def longest_row(dataset, max_seq_length: int) -> int:
    """The longest training row in tokens (cut at ``max_seq_length``): no token of a packed sequence needs to
    look further back than that (backend/attention.windowed_attention)."""
    return max((len(t) for t, _ in _rows(dataset, max_seq_length)), default=0)


def describe(dataset, recipe, seed: int) -> str | None:
    """What packing or length buckets make of the training rows, in words (None when neither is on)."""
    d, batch = recipe.data, recipe.training.batch_size
    if not (d.packing or d.length_buckets):
        return None
    rows = _rows(dataset, d.max_seq_length)
    lengths = [len(t) for t, _ in rows]
    if d.packing:
        sequences = sum(1 for _ in pack_sequences(lengths, d.max_seq_length, _stream(len(rows), seed, False)))
        return (f"Packing {len(rows)} rows into {sequences} sequences of up to {d.max_seq_length} tokens "
                f"({len(rows) / max(sequences, 1):.1f} rows each): an iteration trains {batch} sequences, so an "
                f"epoch is about {max(1, sequences // batch)} iterations")
    padding = padding_fraction(bucketed_batches(dataset, batch, d.max_seq_length, seed=seed))
    return f"Length buckets: batches of rows of similar length, {padding:.0%} padding"


def batch_source(recipe, seed: int):
    """The batch source a recipe asks for (None: mlx-lm's iterate_batches), bound to ``seed``."""
    from functools import partial

    if recipe.data.packing:
        return partial(packed_batches, seed=seed)
    if recipe.data.length_buckets:
        return partial(bucketed_batches, seed=seed)
    return None


def padding_fraction(batches) -> float:
    """Share of the token positions of mlx-lm-style or packed batches that are padding."""
    total = real = 0
    for batch in batches:
        tokens = np.array(batch[0])
        total += tokens.size
        if isinstance(batch, PackedBatch):
            real += batch.filled
        else:
            real += int(np.minimum(np.array(batch[1])[:, 1], tokens.shape[1]).sum())
    return 1.0 - real / total if total else 0.0
