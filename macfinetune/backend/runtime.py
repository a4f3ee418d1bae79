"""Per-thread MLX housekeeping for the engine thread."""

from __future__ import annotations

import sys


def release_thread_resources() -> None:
    """Call last on a thread that ran MLX work: frees its thread-local streams (avoids a rare abort at exit)."""
    import mlx.core as mx

    clear = getattr(mx, "clear_streams", None)
    if clear is not None:
        clear()


def begin_job() -> None:
    """Call at the start of every job: its peak memory is its own, not that of an earlier job.
    When MLX is not imported yet there is nothing to reset (and a job without MLX stays light)."""
    mx = sys.modules.get("mlx.core")
    if mx is not None:
        mx.reset_peak_memory()


def end_job() -> None:
    """Call at the end of every job: give the buffers MLX cached back to the system."""
    mx = sys.modules.get("mlx.core")
    if mx is not None:
        mx.clear_cache()


def peak_memory_gb() -> float:
    """MLX's peak memory since the current job began, GB (1e9 bytes)."""
    import mlx.core as mx

    return mx.get_peak_memory() / 1e9
