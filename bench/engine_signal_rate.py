"""Engine signal rate: train the tiny model with report_every=1 through the engine and count what
crosses the thread boundary (train reports made, train-carrying signals, signals per second).

    python bench/engine_signal_rate.py [--iterations 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MLX_DISABLE_COMPILE", "1")

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    from PySide6.QtCore import QCoreApplication

    from macfinetune.backend.tinymodel import build_demo_model
    from macfinetune.core.events import (
        JobCancelled,
        JobFailed,
        JobFinished,
        TrainReport,
        TrainReportBatch,
    )
    from macfinetune.core.recipe import Recipe, apply_overrides, with_paths
    from macfinetune.engine import Engine

    app = QCoreApplication(sys.argv)
    tmp = Path(tempfile.mkdtemp(prefix="engine-rate-"))
    model = build_demo_model(tmp / "tiny")
    recipe = apply_overrides(with_paths(Recipe(), str(model), str(ROOT / "resources" / "sample_data")),
                             [f"iterations={args.iterations}", "batch_size=4", "num_layers=-1", "report_every=1",
                              "eval_every=100000", "save_every=100000", "max_seq_length=96"])
    received = []

    def on_event(job_event):
        received.append(job_event)
        if isinstance(job_event.event, JobFinished | JobFailed | JobCancelled):
            app.quit()

    eng = Engine()
    eng.event.connect(on_event)
    eng.start()
    eng.train(recipe, tmp / "run")
    app.exec()
    eng.shutdown()
    carrying = [e for e in received if isinstance(e.event, TrainReport | TrainReportBatch)]
    reports = sum(len(e.event.reports) if isinstance(e.event, TrainReportBatch) else 1 for e in carrying)
    span = carrying[-1].time - carrying[0].time
    print(f"reports made {reports}, train-carrying signals {carrying and len(carrying)}, over {span:.2f} s: "
          f"{reports / span:.1f} reports/s, {len(carrying) / span:.1f} signals/s, "
          f"largest batch {max(len(getattr(e.event, 'reports', (0,))) for e in carrying)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
