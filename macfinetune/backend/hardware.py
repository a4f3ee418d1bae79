"""The machine as MLX sees it, the memory budget, and keeping a Mac awake while it trains."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

BUDGET_SHARE = 0.9  # of the Metal working set (macOS) or of physical memory (elsewhere)


def memory_budget_bytes() -> int:
    """What MLX may allocate: the Metal working-set limit on a Mac, physical memory elsewhere."""
    import mlx.core as mx
    import psutil

    info = mx.device_info() if hasattr(mx, "device_info") else {}
    limit = info.get("max_recommended_working_set_size") or psutil.virtual_memory().total
    return int(limit * BUDGET_SHARE)


def apply_memory_limit() -> int:
    """Set MLX's memory limit to the budget. It is a guideline, not a wall: MLX allocates past it and
    fails only when memory including swap is exhausted; the gate and the pressure watch protect the run."""
    import mlx.core as mx

    budget = memory_budget_bytes()
    mx.set_memory_limit(budget)
    return budget


def apply_cache_limit(budget: int, estimate: dict | None) -> int | None:
    """Hold MLX's buffer cache to what the budget leaves beside the estimated peak, so that what macOS
    sees (active memory + the cache of freed buffers, which get_peak_memory does not count) stays within
    the budget. Without it the Metal allocator caches freed buffers up to its memory limit (allocator.cpp:
    max_pool_size_ = block_limit_) and a run that fits by its peak can still push the Mac into swap.
    Returns the limit set, or None without an estimate."""
    import mlx.core as mx

    if not estimate or not estimate.get("total_gb"):
        return None
    limit = max(0, int(budget - float(estimate["total_gb"]) * 1e9))
    mx.set_cache_limit(limit)
    return limit


@contextmanager
def keep_awake():
    """Keep the Mac from idle sleep while training, without forcing the display on.

    ``caffeinate -i`` holds only an idle-sleep assertion (a display assertion has been reported
    to trigger the GPU watchdog); ``-w`` ties it to this process so a crash releases it too."""
    proc = None
    if sys.platform == "darwin":
        import os

        try:
            proc = subprocess.Popen(["caffeinate", "-i", "-w", str(os.getpid())])
        except OSError:
            proc = None
    try:
        yield proc
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=5)
