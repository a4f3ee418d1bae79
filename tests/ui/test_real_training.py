"""A real run of the tiny model from the window: plots receive points, pause, resume, stop, and the run
reopened from Runs draws the same curves."""

import json

import numpy as np
import pytest
from conftest import fast_recipe
from PySide6.QtWidgets import QApplication

from macfinetune.engine import Engine
from macfinetune.ui.main_window import create_main_window


@pytest.fixture
def real_window(qtbot, settings):
    engine = Engine()
    engine.start()
    window = create_main_window(engine, settings)
    window.resize(1100, 720)
    window.show()
    yield window
    if window.session.is_training:
        window.session.stop()
    assert engine.shutdown(60_000)
    assert not engine.isRunning()
    qtbot.waitUntil(lambda: not window.session.is_training)  # the job's last events are delivered
    window.close()
    window.deleteLater()
    QApplication.processEvents()


@pytest.mark.slow
def test_train_pause_resume_stop_and_reopen(real_window, tiny_model, tmp_path, qtbot):
    window, monitor, session = real_window, real_window.pages["monitor"], real_window.session
    run_dir = tmp_path / "data" / "runs" / "from-the-window"
    session.prepare(fast_recipe(tiny_model, "iterations=400", "report_every=2", "eval_every=20", "save_every=20"),
                    run_dir)
    assert window.start_action.isEnabled()
    window.start_action.trigger()

    def points() -> int:
        assert monitor.buffer.run.state != "failed", monitor.buffer.run.message
        return monitor.buffer.series["train_loss"].n

    qtbot.waitUntil(lambda: points() >= 3, timeout=120_000)
    assert monitor.progress.text().startswith("Running ")
    window.pause_action.trigger()
    qtbot.waitUntil(lambda: session.state == "paused", timeout=60_000)
    qtbot.waitUntil(lambda: monitor.progress.text().startswith("Paused "))
    assert window.resume_action.isEnabled() and not window.pause_action.isEnabled()
    paused_at = points()
    qtbot.wait(600)
    assert points() == paused_at
    window.resume_action.trigger()
    qtbot.waitUntil(lambda: points() > paused_at, timeout=60_000)
    window.stop_action.trigger()
    qtbot.waitUntil(lambda: session.state == "idle", timeout=120_000)
    qtbot.waitUntil(lambda: monitor.progress.text().startswith("Stopped "))
    assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"
    live = [a.copy() for a in monitor.loss.raw.getData()]
    live_val = [a.copy() for a in monitor.loss.val.getData()]
    live_peak = monitor.buffer.series["mem_peak"].view()[1].copy()  # MLX's figures: the train reports' samples

    runs = window.pages["runs"]
    runs.refresh()
    runs.wait_for_scan()
    # an earlier scan (started while the run trained) may land first; the page must end on the stopped state
    qtbot.waitUntil(lambda: runs.model.rowCount() == 1 and runs.model.index(0, 3).data() == "stopped",
                    timeout=20_000)
    runs.table.selectRow(0)
    assert runs.buttons["resume"].isEnabled()
    monitor.buffer.reset()
    runs.buttons["open"].click()
    reopened = monitor.loss.raw.getData()
    assert np.array_equal(reopened[0], live[0]) and np.array_equal(reopened[1], live[1])
    assert np.array_equal(monitor.loss.val.getData()[1], live_val[1])
    assert len(live_peak) >= 3 and np.array_equal(monitor.buffer.series["mem_peak"].view()[1], live_peak)
    assert monitor.progress.text().startswith("Stopped ")
    runs.wait_for_scan()
