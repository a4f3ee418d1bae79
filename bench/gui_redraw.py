"""Redraw cost of the Monitor with 100k points per curve (train loss, smoothed, LR, throughput, memory):
median and p95 of a full redraw + paint, offscreen, side by side with 1k points.

    .venv/bin/python bench/gui_redraw.py
"""

import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from macfinetune import app  # noqa: E402
from macfinetune.ui.main_window import create_main_window  # noqa: E402
from macfinetune.ui.screenshot import IdleEngine  # noqa: E402


def fill(monitor, n: int) -> None:
    x = np.arange(1, n + 1, dtype=float)
    rng = np.random.default_rng(0)
    for series in monitor.buffer.series.values():
        series.set(x, 2 + np.sin(x / 700) + rng.normal(0, 0.05, n))
    monitor.buffer.run.state = "running"


def measure(qapp, monitor, n: int, repeats: int = 20) -> tuple[list[float], list[float]]:
    """(redraw ms: data into the plot items, incl. smoothing and downsampling; paint ms: the window repaint)."""
    monitor.buffer.reset()
    fill(monitor, n)
    redraws, paints = [], []
    for i in range(repeats):
        monitor.buffer.series["train_loss"].append(n + i + 1, 1.5)
        monitor.buffer.version += 1
        start = time.perf_counter()
        monitor.redraw()
        middle = time.perf_counter()
        qapp.processEvents()  # layout and paint of the window (offscreen: software raster)
        redraws.append((middle - start) * 1000)
        paints.append((time.perf_counter() - middle) * 1000)
    return redraws, paints


def main() -> None:
    qapp = app.make_application()
    settings = QSettings("/tmp/macfinetune-bench.ini", QSettings.Format.IniFormat)
    window = create_main_window(IdleEngine(), settings)
    window.resize(1280, 800)
    window.show_page("monitor")
    window.show()
    monitor = window.pages["monitor"]
    results: dict[int, tuple[list, list]] = {}
    for n in (1_000, 100_000, 1_000, 100_000):  # alternate: timings drift on shared machines
        redraws, paints = measure(qapp, monitor, n)
        results.setdefault(n, ([], []))
        results[n][0].extend(redraws)
        results[n][1].extend(paints)
    for n, (redraws, paints) in results.items():
        print(f"{n:>7} points/curve: redraw median {statistics.median(redraws):6.1f} ms "
              f"(p95 {sorted(redraws)[int(0.95 * len(redraws))]:6.1f}), window repaint median "
              f"{statistics.median(paints):6.1f} ms")
    ratio = statistics.median(results[100_000][0]) / statistics.median(results[1_000][0])
    print(f"redraw 100k vs 1k median ratio: {ratio:.2f}x")
    window.pages["runs"].wait_for_scan()
    window.close()


if __name__ == "__main__":
    main()
