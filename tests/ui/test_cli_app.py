"""The command line's app entry: no display, screenshots, and no MLX before the window paints."""

import hashlib
import os
import subprocess
import sys

import pytest
from PySide6.QtGui import QImage

from macfinetune.ui.screenshot import SIZE


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(extra)
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="only Linux can lack a display")
def test_no_display_prints_one_line_and_the_help():
    for args in ([], ["app"]):
        proc = subprocess.run([sys.executable, "-m", "macfinetune", *args], capture_output=True, text=True,
                              env=_env(), timeout=60)
        assert proc.returncode == 0
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("No display found")
        assert lines[1].startswith("usage: macfinetune")
        assert "train" in proc.stdout and "demo" in proc.stdout


def _shot(tmp_path, page: str, theme: str = "light") -> bytes:
    out = tmp_path / f"{page}-{theme}.png"
    proc = subprocess.run([sys.executable, "-m", "macfinetune", "--screenshot", str(out), "--page", page,
                           "--theme", theme], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    image = QImage(str(out))
    assert (image.width(), image.height()) == SIZE
    return out.read_bytes()


def test_screenshot_renders_each_page_deterministically(tmp_path):
    (tmp_path / "again").mkdir()
    first = _shot(tmp_path, "monitor")
    again = _shot(tmp_path / "again", "monitor")
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(again).hexdigest()
    assert _shot(tmp_path, "monitor", "dark") != first
    assert _shot(tmp_path, "playground") != first


def test_review_screenshot_is_the_filled_wizard_and_the_same_every_run(tmp_path):
    (tmp_path / "again").mkdir()
    first = _shot(tmp_path, "review")
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(_shot(tmp_path / "again", "review")).hexdigest()
    assert first != _shot(tmp_path, "new") and first != _shot(tmp_path, "review", "dark")


def test_the_review_page_shows_the_demo_model_and_data(window, qapp):
    from macfinetune.core import paths
    from macfinetune.ui.screenshot import DEMO_MODEL, fill_wizard

    page = window.pages["new"]
    fill_wizard(qapp, page, "review")
    review = page.steps["review"]
    assert page.current_step() == "review" and page.services.machine.memory_gb == 16
    assert review.verdict.text().startswith("<b>Fits</b>: needs ")
    assert review.command.text().startswith(f"macfinetune train --model {DEMO_MODEL} --data "
                                            f"{paths.shipped('resources', 'sample_data')}")
    assert page.blockers.text() == "Ready to train."


# what the first paint does not wait for: pages other than the first are built when shown (LazyPages)
HEAVY = ("pyqtgraph", "numpy", "psutil", "huggingface_hub", "transformers", "tokenizers", "yaml", "tqdm")


def test_window_paints_before_mlx_is_imported(tmp_path):
    code = (
        "import sys\n"
        f"HEAVY = {HEAVY!r}\n"
        "from PySide6.QtCore import QSettings\n"
        "from macfinetune import app\n"
        "from macfinetune.engine import Engine\n"
        "from macfinetune.ui.main_window import create_main_window\n"
        "qapp = app.make_application()\n"
        f"settings = QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat)\n"
        "engine = Engine(); engine.start()\n"
        "window = create_main_window(engine, settings); window.show(); window.grab()\n"
        "qapp.processEvents()\n"
        "print(sorted(m for m in ('mlx', 'mlx_lm', 'mlx.core') if m in sys.modules))\n"
        "print(sorted(m for m in HEAVY if m in sys.modules))\n"
        "window.pages['runs'].wait_for_scan(); engine.shutdown(); window.close()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_env(QT_QPA_PLATFORM="offscreen", MACFINETUNE_HOME=str(tmp_path / "home")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-2:] == ["[]", "[]"]  # no MLX, and none of HEAVY, before the paint
