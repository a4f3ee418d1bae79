"""Redraw cost of the Monitor with 100k points per curve (train loss, smoothed, LR, throughput, memory):
median and p95 of a full redraw + paint, offscreen, side by side with 1k points. Two cases: one new
train-loss point per redraw ("loss only"), and one new point in every series per redraw ("every series",
what a train report plus a memory sample do). Wall time and the GUI thread's CPU time (``thread_time``,
less sensitive to other processes on a shared machine) are both reported.

    PYTHONPATH=. .venv/bin/python bench/gui_redraw.py
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


def measure(qapp, monitor, n: int, repeats: int = 20, every: bool = False) -> tuple[list, list, list]:
    """(redraw ms: data into the plot items, incl. smoothing and downsampling; its CPU ms; paint ms: the
    window repaint)."""
    monitor.buffer.reset()
    fill(monitor, n)
    monitor.buffer.version += 1
    monitor.redraw()  # the first draw of a reopened run (smoothing from scratch) is not what is measured
    qapp.processEvents()
    redraws, cpu, paints = [], [], []
    for i in range(repeats):
        for series in monitor.buffer.series.values() if every else [monitor.buffer.series["train_loss"]]:
            series.append(n + i + 1, 1.5)
        monitor.buffer.version += 1
        start, start_cpu = time.perf_counter(), time.thread_time()
        monitor.redraw()
        middle, middle_cpu = time.perf_counter(), time.thread_time()
        qapp.processEvents()  # layout and paint of the window (offscreen: software raster)
        redraws.append((middle - start) * 1000)
        cpu.append((middle_cpu - start_cpu) * 1000)
        paints.append((time.perf_counter() - middle) * 1000)
    return redraws, cpu, paints


def main() -> None:
    qapp = app.make_application()
    settings = QSettings("/tmp/macfinetune-bench.ini", QSettings.Format.IniFormat)
    window = create_main_window(IdleEngine(), settings)
    window.resize(1280, 800)
    window.show_page("monitor")
    window.show()
    monitor = window.pages["monitor"]
    results: dict[tuple, tuple[list, list, list]] = {}
    for n in (1_000, 100_000, 1_000, 100_000):  # alternate: timings drift on shared machines
        for every in (False, True):
            got = measure(qapp, monitor, n, every=every)
            lists = results.setdefault((n, every), ([], [], []))
            for into, values in zip(lists, got, strict=True):
                into.extend(values)
    for (n, every), (redraws, cpu, paints) in results.items():
        print(f"{n:>7} points/curve, {'every series' if every else 'loss only   '}: redraw median "
              f"{statistics.median(redraws):6.1f} ms (p95 {sorted(redraws)[int(0.95 * len(redraws))]:6.1f}; "
              f"CPU median {statistics.median(cpu):6.1f}), window repaint median {statistics.median(paints):6.1f} ms")
    for every in (False, True):
        ratio = statistics.median(results[(100_000, every)][0]) / statistics.median(results[(1_000, every)][0])
        print(f"redraw 100k vs 1k median ratio ({'every series' if every else 'loss only'}): {ratio:.2f}x")
    window.pages["runs"].wait_for_scan()
    window.close()


if __name__ == "__main__":
    main()
