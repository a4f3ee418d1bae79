"""Cold start to the first painted main window vs a bare PySide6 window, each in a fresh process,
alternated side by side (offscreen platform).

    PYTHONPATH=. .venv/bin/python bench/gui_coldstart.py [rounds]

The macfinetune package is byte-compiled first, as an installed app (wheel or bundle) is: PySide6 comes
with its .pyc files, and with PYTHONDONTWRITEBYTECODE set (as on the dev machines) our modules would
otherwise be compiled from source in every timed process. One untimed round warms the file cache.
"""

import os
import statistics
import subprocess
import sys
import tempfile

BARE = """
import time; t0 = time.perf_counter()
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([]); w = QMainWindow(); w.resize(1200, 780); w.show(); w.grab(); app.processEvents()
print(time.perf_counter() - t0)
"""

APP = """
import time; t0 = time.perf_counter()
from PySide6.QtCore import QSettings
from macfinetune import app
from macfinetune.engine import Engine
from macfinetune.ui.main_window import create_main_window
qapp = app.make_application()
settings = QSettings(sys.argv[1], QSettings.Format.IniFormat)
engine = Engine(); engine.start()
w = create_main_window(engine, settings); w.show(); w.grab(); qapp.processEvents()
print(time.perf_counter() - t0)
w.pages["runs"].wait_for_scan(); engine.shutdown()
"""


def run(code: str, ini: str) -> float:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code, ini], capture_output=True, text=True, env=env,
                         check=True)
    return float(out.stdout.strip().splitlines()[0])


def precompile() -> None:
    import compileall
    import importlib.util

    package = os.path.dirname(importlib.util.find_spec("macfinetune").origin)
    compileall.compile_dir(package, quiet=1)
    print(f"byte-compiled {package}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ini = os.path.join(tempfile.mkdtemp(), "s.ini")
    precompile()
    run(BARE, ini), run(APP, ini)  # untimed: file cache
    bare, full = [], []
    for _ in range(rounds):
        bare.append(run(BARE, ini))
        full.append(run(APP, ini))
    b, f = statistics.median(bare), statistics.median(full)
    print(f"bare PySide6 window: median {b * 1000:.0f} ms; macfinetune main window: median {f * 1000:.0f} ms; "
          f"ratio {f / b:.2f}x ({rounds} rounds, alternated)")


if __name__ == "__main__":
    main()
