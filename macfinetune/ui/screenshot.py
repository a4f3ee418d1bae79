"""Deterministic screenshots: a data folder of recorded runs made in code, an engine that never runs,
a window at a fixed size, one page grabbed to PNG."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal, qInstallMessageHandler
from PySide6.QtWidgets import QApplication, QStyleFactory

from macfinetune.core import sample_chat, sample_run
from macfinetune.ui.pages import WIZARD_STEPS, screenshot_pages
from macfinetune.ui.widgets.theme import dark_palette

SIZE = (1280, 800)
DEMO_MODEL = "mlx-community/Qwen3-1.7B-bf16"  # estimated from its shipped config.json: nothing downloads


class IdleEngine(QObject):
    """The engine's interface with nothing behind it (screenshots, view tests)."""

    event = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        if name in ("train", "resume", "pause_current", "resume_current", "stop_current"):
            return lambda *args, **kw: self.calls.append((name, args))
        raise AttributeError(name)


def make_demo_folder(root: Path) -> Path:
    """Four runs: finished, stopped with a higher learning rate, interrupted with rank 16, failed early."""
    runs_dir = root / "runs"
    t0, hour = sample_run.T0, 3600.0
    sample_run.write_sample_run(runs_dir / "20261203-091200-Qwen3-0.6B-lora", started=t0)
    sample_run.write_sample_run(runs_dir / "20261203-101500-Qwen3-0.6B-lora-lr3e-4", upto=600, state="stopped",
                                learning_rate="3e-4", started=t0 + hour)
    sample_run.write_sample_run(runs_dir / "20261203-113000-Llama-3.2-1B-lora-rank16",
                                model="Llama-3.2-1B-Instruct-4bit", upto=380, state="interrupted", rank=16,
                                started=t0 + 2.3 * hour)
    sample_run.write_sample_run(runs_dir / "20261203-120000-gemma-3-270m-lora", model="gemma-3-270m-it", upto=40,
                                state="failed", started=t0 + 2.8 * hour, message="the loss became NaN at iteration 40")
    return runs_dir / "20261203-091200-Qwen3-0.6B-lora"


def live_events(upto: int = 420) -> list:
    return sample_run.sample_events("20261203-091200-Qwen3-0.6B-lora", upto=upto)


def render(app: QApplication, out: str, page: str, theme: str = "light") -> int:
    from macfinetune.ui.main_window import create_main_window

    if page not in screenshot_pages():
        raise ValueError(f"unknown page {page!r}; pages: {', '.join(screenshot_pages())}")
    if page == "welcome":
        return _render_welcome(app, out, theme)
    step, page = (page, "new") if page in WIZARD_STEPS else (None, page)
    qInstallMessageHandler(_quiet_offscreen)
    app.setStyle(QStyleFactory.create("Fusion"))
    if theme == "dark":
        app.setPalette(dark_palette())
    with tempfile.TemporaryDirectory(prefix="macfinetune-shot-") as tmp:
        demo_run = make_demo_folder(Path(tmp))
        finished_run = demo_run
        if page == "playground":
            sample_chat.write_sample_checkpoints(finished_run)
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("prefs/data_folder", tmp)
        if page == "checkpoints":  # the finished run, with checkpoint files and samples
            sample_run.write_sample_checkpoints(demo_run)
            settings.setValue("checkpoints/run", str(demo_run))
        window = create_main_window(IdleEngine(), settings)
        window.resize(*SIZE)
        if step:
            fill_wizard(app, window.pages["new"], step)
        replay(window.pages["monitor"], live_events())
        if page == "playground":
            replay_playground(window.pages["playground"])
        window.show_page(page)
        window.show()
        window.pages["runs"].wait_for_scan()
        for _ in range(3):
            app.processEvents()
        window.pages["runs"].table.selectRow(0)
        app.processEvents()
        if page == "checkpoints":
            window.pages["checkpoints"].wait_for_reads()
            for _ in range(3):
                app.processEvents()
        ok = window.grab().save(out)
        window.close()
        window.deleteLater()
        app.processEvents()
    return 0 if ok else 1


def _render_welcome(app: QApplication, out: str, theme: str) -> int:
    """The first-launch screen with this machine's facts."""
    from macfinetune.core import paths
    from macfinetune.core.machine_facts import machine_facts
    from macfinetune.ui.first_launch import FirstLaunchDialog

    qInstallMessageHandler(_quiet_offscreen)
    app.setStyle(QStyleFactory.create("Fusion"))
    if theme == "dark":
        app.setPalette(dark_palette())
    dialog = FirstLaunchDialog(machine_facts(paths.data_home()))
    dialog.show()
    app.processEvents()
    ok = dialog.grab().save(out)
    dialog.close()
    dialog.deleteLater()
    app.processEvents()
    return 0 if ok else 1


def fill_wizard(app: QApplication, wizard, step: str) -> None:
    """The wizard at ``step`` with the demo model and the shipped sample data, on a fixed 16 GB machine;
    no tokenizer (the model is not downloaded), so every run draws the same."""
    import time

    from macfinetune.core import paths, timing
    from macfinetune.core.hardware import machine_from_memory

    wizard.services.machine = machine_from_memory(16)
    wizard.services.token_counter = wizard.services.template_renderer = None
    wizard.rate = timing.seed_rate(wizard.services.machine.chip)
    wizard.steps["model"].choose_path(DEMO_MODEL)
    wizard.steps["data"].choose_path(str(paths.shipped("resources", "sample_data")))
    deadline = time.monotonic() + 60
    while (wizard.state.data is None or wizard.state.data_busy) and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    wizard.go(step)


def replay(monitor, events: list) -> None:
    """Feed recorded events (they carry their own times) and draw once."""
    monitor.show_events(events)


def _quiet_offscreen(mode, context, message: str) -> None:
    """The offscreen platform warns that it cannot resize to size hints; anything else still prints."""
    if "propagateSizeHints" not in message:
        print(message)


def replay_playground(playground) -> None:
    """The recorded two-turn conversation, base and tuned, on the sample run's best checkpoint."""
    for turn in range(len(sample_chat.EXCHANGES)):
        playground.replay(*sample_chat.sample_exchange(turn))
