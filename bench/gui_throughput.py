"""Training throughput with the app's Monitor open versus `macfinetune train` headless, same recipe and settings.

Each run is a fresh process, alternated for N pairs (timings on shared machines drift; side by side is fair):
the headless one is the CLI (bench/throughput.py's run); the app one opens the main window offscreen, starts the
same recipe through the session and keeps the Monitor shown, every panel live, until the run ends. Tokens/s is
read from each run's metrics.jsonl the same way for both: wall clock between the first and the second-to-last
train report ("wall") and mlx-lm's own median tokens/s ("own").

    PYTHONPATH=. .venv/bin/python bench/gui_throughput.py [--pairs 3] [--iters 80] [--batch-size 8] [--report 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.throughput import DATA, _env, _rate, build_model

APP = """
import sys, time
from pathlib import Path
from PySide6.QtCore import QSettings
from macfinetune import app
from macfinetune.core.recipe import apply_overrides, load_recipe, with_paths
from macfinetune.core.paths import shipped
from macfinetune.engine import Engine
from macfinetune.ui.main_window import create_main_window
model, out, ini, *sets = sys.argv[1:]
recipe = apply_overrides(with_paths(load_recipe(shipped("recipes", "demo-tiny-lora.yaml")), model, DATA), sets)
qapp = app.make_application()
engine = Engine(); engine.start()
window = create_main_window(engine, QSettings(ini, QSettings.Format.IniFormat))
window.resize(1280, 800); window.show(); window.show_page("monitor")
window.session.prepare(recipe, Path(out)); window.session.start()
while window.session.state != "idle":
    qapp.processEvents(); time.sleep(0.001)
print(window.pages["monitor"].buffer.run.state, window.pages["monitor"].redraws)
engine.shutdown(); window.pages["runs"].wait_for_scan(); window.close()
"""


def sets_of(args) -> list[str]:
    """bench/throughput.py's settings as --set items (the same for both ways of training)."""
    return [f"iterations={args.iters}", f"batch_size={args.batch_size}", f"report_every={args.report}", "rank=8",
            "alpha=160", "learning_rate=0.001", "max_seq_length=128", "num_layers=-1", "val_batches=1",
            f"eval_every={args.iters * 10}", f"save_every={args.iters * 10}", "valid_fraction=0.1", "optimizer=adam",
            "lr_schedule=constant", "warmup_steps=0", "mask_prompt=false"]


def rates(run: Path) -> tuple[float, float]:
    reports = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]
    return _rate([(r["time"], r["trained_tokens"]) for r in reports]), statistics.median(
        r["tokens_per_second"] for r in reports[1:-1])


def run_headless(model: Path, work: Path, sets: list[str], n: int) -> tuple[float, float]:
    run = work / f"cli-{n}"
    cmd = [sys.executable, "-m", "macfinetune", "train", "demo-tiny-lora", "--model", str(model), "--data", str(DATA),
           "--out", str(run)]
    for item in sets:
        cmd += ["--set", item]
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    return rates(run)


def run_app(model: Path, work: Path, sets: list[str], n: int) -> tuple[float, float]:
    run = work / f"app-{n}"
    code = f"DATA = {str(DATA)!r}\n" + APP
    proc = subprocess.run([sys.executable, "-c", code, str(model), str(run), str(work / f"app-{n}.ini"), *sets],
                          capture_output=True, text=True, env={**_env(), "QT_QPA_PLATFORM": "offscreen"})
    if proc.returncode != 0 or not proc.stdout.startswith("finished"):
        raise SystemExit(f"the app run failed: {proc.stdout}{proc.stderr[-2000:]}")
    return rates(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--report", type=int, default=1, help="report_every (1: the Monitor redraws every step)")
    args = parser.parse_args()
    sets = sets_of(args)
    with tempfile.TemporaryDirectory(prefix="mf-gui-bench-") as tmp:
        work = Path(tmp)
        model = build_model(work)
        run_headless(model, work, sets, -1)  # warm-up: file caches
        print(f"{'pair':>4} {'app wall':>9} {'cli wall':>9} {'ratio':>6}   {'app own':>8} {'cli own':>8} {'ratio':>6}")
        walls, owns = [], []
        for n in range(args.pairs):
            order = (run_app, run_headless) if n % 2 == 0 else (run_headless, run_app)
            got = {fn: fn(model, work, sets, n) for fn in order}
            app, cli = got[run_app], got[run_headless]
            walls.append(app[0] / cli[0])
            owns.append(app[1] / cli[1])
            print(f"{n + 1:>4} {app[0]:>9,.0f} {cli[0]:>9,.0f} {walls[-1]:>6.3f}   {app[1]:>8,.0f} {cli[1]:>8,.0f} "
                  f"{owns[-1]:>6.3f}", flush=True)
        for name, ratios in (("wall-clock", walls), ("self-reported", owns)):
            print(f"median {name} ratio app / headless: {statistics.median(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
        print(f"{args.pairs} pairs; --set {' '.join(sets)}")


if __name__ == "__main__":
    main()
