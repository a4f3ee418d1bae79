"""Rules for a run's health: a loss that is not a number or explodes, memory pressure."""

from __future__ import annotations

import math

GB = 1024**3
EXPLODE_FACTOR = 3.0  # loss above 3x the best so far (after a few steps) counts as exploding
MIN_STEPS_FOR_EXPLOSION = 5
DANGER_USED_FRACTION = 0.95  # the seeds: system memory above 95% -> reduce batch or length
DANGER_SWAP_GROWTH = 4 * GB
DANGER_AVAILABLE = 1 * GB


def loss_problem(loss: float, best: float | None, steps: int, learning_rate: float, floor: float = 1e-3) -> str | None:
    """Why training must stop, or None: a NaN/infinite loss, or one that explodes (above EXPLODE_FACTOR times
    the best so far, or ``floor`` when the best is below it: a DPO loss near 0 may rise tenfold on one hard batch)."""
    advice = f"learning rate {learning_rate:.2g} is likely too high; try {learning_rate / 10:.2g}"
    if not math.isfinite(loss):
        return f"the training loss became {loss}; {advice}, or check the data for empty or broken rows"
    if best is not None and steps >= MIN_STEPS_FOR_EXPLOSION and loss > EXPLODE_FACTOR * max(best, floor):
        return f"the training loss exploded from {best:.3f} to {loss:.3f}; {advice}"
    return None


def memory_danger(available: int, total: int, swap_growth: int) -> str | None:
    """A message when the machine is about to swap hard or kill the process, else None."""
    used = 1 - available / total if total else 0.0
    fix = "lower training.batch_size or data.max_seq_length, or turn on training.grad_checkpoint"
    if available < DANGER_AVAILABLE or used > DANGER_USED_FRACTION:
        return f"memory is nearly full ({used:.0%} used, {available / GB:.1f} GB available); {fix}"
    if swap_growth > DANGER_SWAP_GROWTH:
        return f"the system swapped {swap_growth / GB:.1f} GB since training started; {fix}"
    return None
