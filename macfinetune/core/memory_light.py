"""When training uses the memory-light attention and the chunked loss (issue 14). Pure Python.

The backend (backend/attention.py) and the estimator both decide here, so the estimate models the
path the run takes. ``auto`` turns each on only where it helps:

- attention: mlx's training attention keeps batch x heads x L^2 scores per adapted block for the
  backward pass. The memory-light one computes blocks of query rows and recomputes them in the
  backward pass, keeping only the output and one float32 log-sum-exp per row. ``auto`` uses it for
  sequences of ``AUTO_ATTENTION_LENGTH`` tokens and more (measured in bench/attention_memory.py).
- loss: the stock loss materialises batch x L x vocab logits (and their float32 softmax) at once.
  The chunked one computes the loss ``loss_chunk(vocab)`` tokens at a time and recomputes the logits
  in the backward pass. ``auto`` chunks when the full float32 logits of a batch would pass
  ``AUTO_LOSS_BYTES``.
"""

from __future__ import annotations

ATTENTION_MODES = ("auto", "stock", "memory_light")
LOSS_MODES = ("auto", "stock", "chunked")

# Model types whose attention is their own (not mlx-lm's base function): the stock path always.
OWN_ATTENTION = ("gemma2",)
# Model types whose output head the chunked loss knows how to split off (backend/attention.split_head).
CHUNKED_LOSS_TYPES = ("llama", "mistral", "qwen2", "qwen3")

AUTO_ATTENTION_LENGTH = 2048
AUTO_LOSS_BYTES = 256 * 2**20
BLOCK_BYTES = 64 * 2**20  # float32 scores of one block of query rows (all heads, all keys)
CHUNK_BYTES = 32 * 2**20  # float32 logits of one chunk of tokens
MIN_BLOCK, MAX_BLOCK = 64, 1024
MIN_CHUNK, MAX_CHUNK = 64, 8192


def light_attention(mode: str, length: int) -> bool:
    """Whether a sequence of ``length`` tokens trains with the memory-light attention."""
    if mode == "memory_light":
        return True
    if mode == "stock":
        return False
    return length >= AUTO_ATTENTION_LENGTH


def chunked_loss(mode: str, tokens: int, vocab: int) -> bool:
    """Whether a batch of ``tokens`` tokens (batch x length) computes its loss in chunks."""
    if mode == "chunked":
        return True
    if mode == "stock":
        return False
    return 4 * tokens * vocab >= AUTO_LOSS_BYTES


def _power_of_two_at_most(n: float) -> int:
    p = 1
    while p * 2 <= n:
        p *= 2
    return p


def attention_block(batch: int, heads: int, length: int) -> int:
    """Query rows per block: at least 8 blocks, and the float32 scores of a block near BLOCK_BYTES."""
    rows = min(_power_of_two_at_most(BLOCK_BYTES / max(1, 4 * batch * heads * length)),
               _power_of_two_at_most(length / 8))
    return max(MIN_BLOCK, min(MAX_BLOCK, rows))


def loss_chunk(vocab: int, tokens: int | None = None) -> int:
    """Tokens per chunk of the chunked loss: at least 8 chunks of a batch of ``tokens``, and the
    float32 logits of a chunk near CHUNK_BYTES."""
    rows = _power_of_two_at_most(CHUNK_BYTES / max(1, 4 * vocab))
    if tokens:
        rows = min(rows, _power_of_two_at_most(tokens / 8))
    return max(MIN_CHUNK, min(MAX_CHUNK, rows))


# --- packed sequences: attention only as far back as the longest example -----------------------------

PACKED_BLOCK = 32  # query rows per block of the windowed packed attention


def packed_window(longest_example: int, length: int) -> int | None:
    """How far back a token of a packed sequence may need to look (the longest example in the data, in tokens),
    when a windowed attention is worth it: each block of ``PACKED_BLOCK`` query rows then meets at most
    ``window + PACKED_BLOCK`` keys instead of all ``length``. None when the examples are so long that the
    dense block-diagonal mask costs about as much (window over half the sequence)."""
    if longest_example <= 0 or 2 * longest_example + PACKED_BLOCK > length:
        return None
    return int(longest_example)
