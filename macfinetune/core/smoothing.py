"""Debiased exponential moving average, the same as TensorBoard's scalar smoothing."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class EmaState:
    """Where a running EMA stands, so a growing curve is smoothed only for its new points."""

    last: float = 0.0
    count: int = 0


def ema(values: Iterable[float], weight: float, state: EmaState = EmaState()) -> tuple[list[float], EmaState]:
    """Smoothed values and the state to continue from.

    ``weight`` is in [0, 1): 0 returns the values unchanged. The zero start is debiased by
    dividing by ``1 - weight**count`` (TensorBoard's correction), so early points are not
    pulled towards 0. A non-finite value (NaN loss) passes through unsmoothed and does not
    disturb the average, so it still shows as a gap.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    last, count = state.last, state.count
    out = []
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1.0 - weight) * value
        count += 1
        out.append(last / (1.0 - weight**count))
    return out, EmaState(last, count)
