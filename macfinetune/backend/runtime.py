"""Per-thread MLX housekeeping for the engine thread."""

from __future__ import annotations


def release_thread_resources() -> None:
    """Call last on a thread that ran MLX work: frees its thread-local streams (avoids a rare abort at exit)."""
    import mlx.core as mx

    clear = getattr(mx, "clear_streams", None)
    if clear is not None:
        clear()
