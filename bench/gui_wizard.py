"""The New-run wizard with a 100,000-row dataset: does the window stay responsive?

Builds the tiny model offline, writes a chat dataset of ``--rows`` rows (lengths spread from a few
to a few hundred tokens), opens the wizard offscreen, chooses the model and the data, and measures,
side by side in one run:

- a 10 ms GUI-thread timer's lateness while the data is read and tokenized, against the same timer
  with the window idle (p50 / p99 / max, ms);
- seconds until the row counts show, until the first partial histogram, and until the last;
- the cost of one settings change (``WizardPage.set_value``: recipe check, estimate, gauge), median ms.

    QT_QPA_PLATFORM=offscreen python bench/gui_wizard.py --rows 100000

Prints one JSON object. Timings on shared machines drift: compare the idle and busy figures of the
same run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("arr", "matey", "ship", "sail", "wind", "gold", "tide", "captain", "parrot", "rum", "map", "island")


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            answer = " ".join(rng.choice(WORDS) for _ in range(int(rng.lognormvariate(3.0, 0.9)) + 1))
            row = {"messages": [{"role": "user", "content": f"Question {i} about the {rng.choice(WORDS)}?"},
                                {"role": "assistant", "content": answer}]}
            f.write(json.dumps(row) + "\n")


class Lateness:
    """A 10 ms timer on the GUI thread; records how late each tick is."""

    def __init__(self, interval_ms: int = 10):
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.late: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.late.append(max(0.0, now - self._last - self.interval) * 1000)
        self._last = now

    def start(self) -> None:
        self.late, self._last = [], None
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        ordered = sorted(self.late) or [0.0]
        return {"ticks": len(self.late), "p50_ms": round(statistics.median(ordered), 1),
                "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 1), "max_ms": round(ordered[-1], 1)}


def spin(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    from macfinetune.backend.architectures import supported_model_types
    from macfinetune.backend.chat_preview import template_renderer
    from macfinetune.backend.tinymodel import build_demo_model
    from macfinetune.backend.tokens import token_counter
    from macfinetune.core.hardware import machine_from_memory
    from macfinetune.ui.wizard import WizardPage, WizardServices

    work = Path(tempfile.mkdtemp(prefix="bench-wizard-"))
    os.environ["HF_HUB_CACHE"] = str(work / "hf")
    model = build_demo_model(work / "models" / "tiny")
    data = work / "rows.jsonl"
    write_rows(data, args.rows)
    app = QApplication.instance() or QApplication([])
    services = WizardServices(machine_from_memory(16), lambda *a: None, token_counter=token_counter,
                              template_renderer=template_renderer,
                              supported_types=supported_model_types(), model_folders=[model.parent])
    page = WizardPage(services)
    page.resize(1100, 800)
    page.show()
    page.steps["model"].choose_path(str(model))
    page.go("data")
    timer = Lateness()
    timer.start()
    spin(app, args.idle_seconds)
    idle = timer.stop()
    result = measure_reading(app, page, data, timer)
    result.update(rows=args.rows, idle=idle, settings_change_ms=settings_change_ms(page))
    page.shutdown()
    page.close()
    print(json.dumps(result, indent=2))


def measure_reading(app, page, data: Path, timer: Lateness) -> dict:
    step = page.steps["data"]
    marks: dict[str, float] = {}
    timer.start()
    start = time.perf_counter()
    step.choose_path(str(data))
    while "final" not in marks:
        app.processEvents()
        now = time.perf_counter() - start
        if "rows_shown" not in marks and page.state.data is not None:
            marks["rows_shown"] = now
        if "first_histogram" not in marks and step.lengths:
            marks["first_histogram"] = now
        if page.state.data is not None and page.state.data.longest_tokens is not None:
            marks["final"] = now
        time.sleep(0.001)
    busy = timer.stop()
    return {"seconds": {k: round(v, 2) for k, v in marks.items()}, "busy": busy,
            "histogram_text": step.histogram_text.text()}


def settings_change_ms(page, n: int = 200) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        page.set_value("training.batch_size", str(1 + i % 8))
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


if __name__ == "__main__":
    main()
