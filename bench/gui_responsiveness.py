"""GUI-thread responsiveness while the tiny model trains from the window with every panel live: a 10 ms
timer's lateness (p50/p99/max) while idle and while training, in one process, side by side.

    .venv/bin/python bench/gui_responsiveness.py [iterations]
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLX_DISABLE_COMPILE", "1")

from PySide6.QtCore import QSettings, QTimer  # noqa: E402

from macfinetune import app  # noqa: E402
from macfinetune.core.recipe import Recipe, apply_overrides, with_paths  # noqa: E402
from macfinetune.engine import Engine  # noqa: E402
from macfinetune.ui.main_window import create_main_window  # noqa: E402

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "resources" / "sample_data"


class Lateness:
    def __init__(self):
        self.samples: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.samples.append(max(0.0, (now - self.last) * 1000 - 10))
        self.last = now

    def take(self) -> list[float]:
        out, self.samples = self.samples, []
        return out


def summary(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    return (f"{name:>9}: p50 {statistics.median(ms):5.1f} ms, p99 {ms[int(0.99 * (len(ms) - 1))]:5.1f} ms, "
            f"max {ms[-1]:6.1f} ms ({len(ms)} ticks)")


def main() -> None:
    from macfinetune.backend.tinymodel import (
        build_demo_model,  # the bench builds its model; the app never does
    )

    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    tmp = Path(tempfile.mkdtemp())
    model = build_demo_model(tmp / "tiny")
    recipe = apply_overrides(with_paths(Recipe(), str(model), str(SAMPLE_DATA)),
                             [f"iterations={iterations}", "batch_size=4", "report_every=1", "eval_every=25",
                              "save_every=50", "val_batches=2", "num_layers=-1", "max_seq_length=96", "learning_rate=1e-3"])
    qapp = app.make_application()
    engine = Engine()
    engine.start()
    window = create_main_window(engine, QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
    window.resize(1280, 800)
    window.show()
    window.show_page("monitor")
    probe = Lateness()
    probe.timer.start()
    end = time.perf_counter() + 3
    while time.perf_counter() < end:
        qapp.processEvents()
        time.sleep(0.001)
    idle = probe.take()
    window.session.prepare(recipe, tmp / "run")
    window.session.start()
    deadline = time.perf_counter() + 600
    while window.session.state != "idle" and time.perf_counter() < deadline:
        qapp.processEvents()
        time.sleep(0.001)
        if os.environ.get("BENCH_DEBUG") and int(time.perf_counter()) % 5 == 0:
            print(window.session.state, window.pages["monitor"].buffer.run.state, flush=True)
    training = probe.take()
    run = window.pages["monitor"].buffer.run
    print(f"run: {run.state} at {run.iteration}/{run.total} {run.message}")
    probe.timer.stop()
    print(summary("idle", idle))
    print(summary("training", training))
    print(f"p99 ratio training/idle: {sorted(training)[int(0.99 * (len(training) - 1))] / max(0.1, sorted(idle)[int(0.99 * (len(idle) - 1))]):.1f}x; "
          f"redraws {window.pages['monitor'].redraws} for {iterations} reports")
    engine.shutdown()
    window.pages["runs"].wait_for_scan()
    window.close()


if __name__ == "__main__":
    main()
