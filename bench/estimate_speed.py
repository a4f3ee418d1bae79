"""How long one memory estimate takes (pure Python, no MLX): the wizard recomputes it on every change.

Run: .venv/bin/python bench/estimate_speed.py
Prints the median and p99 time per estimate for the largest shipped model shape, and the ratio to
a 16 ms frame (the budget for a keystroke to show its effect without a visible lag).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from macfinetune.core import catalog
from macfinetune.core.estimator import Settings, estimate

FRAME_S = 0.016


def main(rounds: int = 2000) -> None:
    shape = catalog.find_shape("google/gemma-3-27b-it")
    base = Settings()
    estimate(shape, base)
    times = []
    for n in range(rounds):
        tic = time.perf_counter()
        estimate(shape, replace(base, batch_size=1 + n % 4, rank=8 * (1 + n % 3)))
        times.append(time.perf_counter() - tic)
    times.sort()
    median, p99 = statistics.median(times), times[int(0.99 * len(times))]
    print(f"estimate: median {median * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms over {rounds} calls; "
          f"median / 16 ms frame = {median / FRAME_S:.4f}")


if __name__ == "__main__":
    main()
