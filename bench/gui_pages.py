"""First build of each page of the main window (the GUI thread is busy while a page is built on first show).

Each round starts a fresh process (imports cold, as when the app starts), shows the window, then shows every
page once and times it. ``--pure-yaml`` runs the same with PyYAML's pure-Python loader instead of libyaml
(``core/yamlfast``): the baseline of the recipe-parsing change, run alternately with it.

    QT_QPA_PLATFORM=offscreen python bench/gui_pages.py [--rounds 5]

Prints each page's median milliseconds for both loaders and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("new", "monitor", "checkpoints", "playground")


def one_round(pure_yaml: bool) -> dict:
    """In this process: the window, then each page's first show, in ms."""
    sys.path.insert(0, str(ROOT))
    if pure_yaml:
        import yaml

        from macfinetune.core import yamlfast

        yamlfast._loader = lambda: yaml.SafeLoader
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from macfinetune.engine import Engine
    from macfinetune.ui.main_window import create_main_window

    with tempfile.TemporaryDirectory() as tmp:
        window = create_main_window(Engine(), QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat))
        window.show()
        app.processEvents()
        out = {}
        for page in PAGES:
            tic = time.perf_counter()
            window.show_page(page)
            app.processEvents()
            out[page] = (time.perf_counter() - tic) * 1000
        window.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one", choices=["libyaml", "pure"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one_round(a.one == "pure")))
        return
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    times: dict[str, list[dict]] = {"libyaml": [], "pure": []}
    for _ in range(a.rounds):
        for mode in times:  # alternated, so drift on a shared machine hits both
            done = subprocess.run([sys.executable, __file__, "--one", mode], capture_output=True, text=True,
                                  env=env, check=True)
            times[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"# {platform.machine()} {platform.system()}, {os.cpu_count()} cores, {a.rounds} rounds, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print("| page | libyaml ms (median) | pure-Python YAML ms (median) | libyaml / pure |")
    print("|---|---:|---:|---:|")
    for page in PAGES:
        fast = statistics.median(r[page] for r in times["libyaml"])
        slow = statistics.median(r[page] for r in times["pure"])
        print(f"| {page} | {fast:.0f} | {slow:.0f} | {fast / slow:.2f} |")


if __name__ == "__main__":
    main()
