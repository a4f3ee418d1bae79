"""The Monitor fed recorded events (no engine): what its labels, plots and buttons show."""

import numpy as np
import pytest
from PySide6.QtWidgets import QApplication

from macfinetune.core import events, sample_run
from macfinetune.core.events import JobStarted
from macfinetune.core.problems import Problem
from macfinetune.core.smoothing import ema
from macfinetune.ui.widgets.theme import dark_palette, plot_colors

from .conftest import start_job


@pytest.fixture
def monitor(window):
    return window.pages["monitor"]


def test_progress_labels_and_best_from_recorded_events(window, engine, monitor, qtbot):
    start_job(engine, window.session, "demo-run")
    engine.send(*sample_run.sample_events("demo-run", upto=420))
    qtbot.waitUntil(lambda: "420/1000" in monitor.progress.text())
    # 420 iterations at 0.45 s each since the start: 03:09 elapsed; 580 left at that pace: 04:21
    assert monitor.progress.text() == "Running 420/1000 · 03:09 elapsed · 04:21 left"
    assert "epoch 1.05 of 2.50" in monitor.stats.text()
    assert "best val 1.659 at 400" in monitor.stats.text()
    assert monitor.loss.best.data["x"].tolist() == [400]
    x, y = monitor.loss.raw.getData()
    assert x.tolist() == list(range(10, 421, 10))
    assert "Validation at 400: loss 1.659" in monitor.log.toPlainText()
    assert window.pause_action.isEnabled() and window.stop_action.isEnabled()
    assert not window.start_action.isEnabled()


def test_smoothing_slider_and_log_scale(window, engine, monitor, qtbot):
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=300))
    monitor.redraw()
    raw = monitor.buffer.series["train_loss"].view()[1].tolist()
    monitor.loss.slider.setValue(90)
    assert monitor.loss.smoothing_label.text() == "0.90"
    assert monitor.loss.smooth.getData()[1] == pytest.approx(ema(raw, 0.9)[0])
    monitor.loss.slider.setValue(0)
    assert monitor.loss.smooth.getData()[1] == pytest.approx(raw)
    monitor.loss.log_box.setChecked(True)
    assert monitor.loss.plot.getPlotItem().ctrl.logYCheck.isChecked()
    assert monitor.loss.readout_at(101).startswith(f"step 100 · raw {raw[9]:.3f} · smoothed {raw[9]:.3f}")


def test_redraws_are_throttled_not_once_per_event(window, engine, monitor, qtbot):
    start_job(engine, window.session)
    before = monitor.redraws
    evs = sample_run.sample_events(upto=1000)
    engine.send(*evs)
    qtbot.waitUntil(lambda: monitor.progress.text().startswith("Finished 1000/1000"))
    assert len(evs) > 200
    assert monitor.redraws - before <= 3
    QApplication.processEvents()
    drawn = monitor.redraws
    monitor.redraw()  # nothing changed: nothing drawn
    assert monitor.redraws == drawn


def test_memory_pressure_colours_and_warnings(window, engine, monitor, qtbot):
    start_job(engine, window.session)
    sample = sample_run.sample_events(upto=10)[2]
    assert isinstance(sample, events.MemorySample)
    engine.send(sample)
    monitor.redraw()
    assert monitor.memory.pressure.property("level") == "green"
    assert monitor.memory.budget.isVisible() and monitor.memory.budget.value() == pytest.approx(10.7)
    assert monitor.memory.estimate.value() == pytest.approx(6.4)
    from dataclasses import replace

    engine.send(replace(sample, active_gb=9.2, cache_gb=0.5))  # 9.7 GB of 10.7: over 90%
    monitor.redraw()
    assert monitor.memory.pressure.property("level") == "amber"
    engine.send(replace(sample, active_gb=10.5, cache_gb=0.5, swap_used_gb=1.2))
    monitor.redraw()
    assert monitor.memory.pressure.property("level") == "red"
    assert monitor.warnings.isVisibleTo(monitor)
    assert "Memory pressure red" in monitor.warnings.text()
    assert "Swap is growing" in monitor.warnings.text()


def test_nan_loss_warns_and_shows_as_a_gap(window, engine, monitor):
    start_job(engine, window.session)
    evs = sample_run.sample_events(upto=30)
    nan = events.TrainReport(40, 1000, float("nan"), 1e-4, 2.0, 1800.0, 100, 6.0)
    engine.send(*evs, nan)
    monitor.redraw()
    assert "NaN or exploding" in monitor.warnings.text()
    assert np.isnan(monitor.loss.raw.getData()[1][-1])
    assert monitor.loss.raw.opts["connect"] == "finite"


def test_a_failed_run_shows_its_message_and_problems(window, engine, monitor):
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=20))
    problems = (Problem("expected an object with 'messages', got a list", file="train.jsonl", line=17),)
    engine.send(events.RunFailed("run", "the data has 1 problem", problems), events.JobFailed("ignored", problems))
    monitor.redraw()
    shown = [monitor.failure.item(i).text() for i in range(monitor.failure.count())]
    assert shown[0] == "Failed: the data has 1 problem"
    assert "train.jsonl" in shown[1] and "17" in shown[1]
    assert monitor.failure.isVisibleTo(monitor)
    assert window.session.state == "idle"  # JobFailed is the engine's last event for a failed job
    assert not window.stop_action.isEnabled()


def test_100k_points_per_curve_are_downsampled_and_clipped(window, monitor, qtbot):
    window.show_page("monitor")
    n = 100_000
    x = np.arange(1, n + 1, dtype=float)
    monitor.buffer.series["train_loss"].set(x, 2 + np.sin(x / 500))
    monitor.buffer.version += 1
    monitor.redraw()
    item = monitor.loss.plot.getPlotItem()
    assert item.ctrl.downsampleCheck.isChecked() and item.ctrl.peakRadio.isChecked()
    assert item.ctrl.clipToViewCheck.isChecked()
    assert len(monitor.loss.raw.getData()[0]) == n
    qtbot.waitUntil(lambda: len(monitor.loss.raw.curve.xData) < n)
    shown = monitor.loss.raw.curve.xData
    assert shown is not None and len(shown) < n  # what is drawn is the downsampled, clipped view


def test_plot_colours_follow_the_palette(window, monitor, qtbot):
    light = monitor.loss.plot.backgroundBrush().color().name()
    window.setPalette(dark_palette())
    QApplication.processEvents()
    dark = monitor.loss.plot.backgroundBrush().color().name()
    assert dark == plot_colors(dark_palette()).background.name()
    assert dark != light


def test_export_csv_writes_the_runs_metrics(window, runs_dir, monitor, tmp_path):
    window.session.open_run(runs_dir / "stopped-run")
    out = tmp_path / "m.csv"
    assert monitor.export_csv_button.isEnabled()
    monitor.export_csv(str(out))
    lines = out.read_text().splitlines()
    assert lines[0].startswith("event,iteration,time,train_loss")
    assert len(lines) == 1 + len((runs_dir / "stopped-run" / "metrics.jsonl").read_text().splitlines())
    png = tmp_path / "loss.png"
    assert monitor.loss.export_png(str(png)) and png.stat().st_size > 1000


def test_a_run_on_several_macs_shows_a_line_per_mac(window, engine, monitor, qtbot):
    start_job(engine, window.session, "demo-run")
    engine.send(*sample_run.sample_events("demo-run", upto=20))
    assert not monitor.hosts.isVisible()  # one Mac: no per-Mac lines
    engine.send(events.HostSample(0, "studio.local", 20, 812.4, 5.21, 9.1, 20.3, 34.4, 0.0),
                events.HostSample(1, "mini.local", 20, 655.0, 5.19, 7.7, 14.9, 17.2, 1.25))
    qtbot.waitUntil(monitor.hosts.isVisible)
    assert monitor.hosts.text().splitlines() == [
        "rank 0 · studio.local · 812 tok/s · peak 5.2 GB · memory 20.3 of 34.4 GB · at iteration 20",
        "rank 1 · mini.local · 655 tok/s · peak 5.2 GB · memory 14.9 of 17.2 GB · swap 1.2 GB · at iteration 20"]
    engine.send(events.HostSample(1, "mini.local", 30, 700.0, 5.3))  # a later sample replaces the Mac's line
    qtbot.waitUntil(lambda: "at iteration 30" in monitor.hosts.text())
    assert monitor.hosts.text().splitlines()[1] == "rank 1 · mini.local · 700 tok/s · peak 5.3 GB · at iteration 30"


def test_a_run_folder_name_too_long_for_the_file_system_does_not_break_the_monitor(window, engine, monitor, qtbot,
                                                                                    tmp_path):
    long_dir = str(tmp_path / ("r" * 300))  # one name over the 255 bytes a file system allows
    start_job(engine, window.session, long_dir)
    engine.send(events.RunStarted(long_dir, "lora", 100, 1.0, 10, 2, 1, 1, 10, 100))
    qtbot.waitUntil(lambda: monitor.redraws > 0)
    assert not monitor.export_csv_button.isEnabled() and not monitor.duplicate_button.isEnabled()


def test_a_constant_learning_rate_is_drawn_where_its_value_can_be_read(window, engine, monitor):
    """Without a schedule the LR is one value: the axis spans 0 .. 2x it, so 0.001 does not read as 0."""
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=100))
    x = np.arange(10.0, 101.0, 10.0)
    monitor.buffer.series["learning_rate"].set(x, np.full(len(x), 1e-3))
    monitor.buffer.version += 1
    monitor.redraw()
    low, high = monitor.lr.plot.getViewBox().viewRange()[1]
    assert (low, high) == pytest.approx((0.0, 2e-3))
    monitor.buffer.series["learning_rate"].set(x, np.linspace(1e-3, 1e-4, len(x)))  # a schedule: auto range again
    monitor.buffer.version += 1
    monitor.redraw()
    monitor.lr.plot.getViewBox().updateAutoRange()  # what the next paint does
    low, high = monitor.lr.plot.getViewBox().viewRange()[1]
    assert low < 1e-3 < high and high < 1.2e-3


def _resumed_run(run_dir, resumed_at: int = 600, gap_s: float = 60.0) -> tuple[list, list]:
    """A run stopped at ``resumed_at`` and resumed ``gap_s`` later, as the resume job writes it: 'resume' then a
    new 'start'. Returns (the first job's events, the resume job's events)."""
    from dataclasses import replace

    evs = sample_run.sample_events(str(run_dir))
    first = [e for e in evs if getattr(e, "iteration", 0) <= resumed_at and not isinstance(e, events.RunFinished)]
    t = first[-1].time
    first.append(events.RunFinished(str(run_dir), resumed_at, True, 400, 1.62, time=t + 1))
    later = [replace(e, time=e.time + gap_s) for e in evs if getattr(e, "iteration", 0) > resumed_at]
    second = [events.RunContinued(str(run_dir), resumed_at, time=t + gap_s),
              replace(evs[0], time=t + gap_s + 2), *later]
    return first, second


def _write_metrics(run_dir, evs) -> None:
    from macfinetune.core import runs

    run_dir.mkdir(parents=True, exist_ok=True)
    log = runs.MetricsLog(run_dir)
    for e in evs:
        log.write(e)
    log.close()


def _resumed_run_shows_its_whole_history(monitor) -> None:
    x, _ = monitor.loss.raw.getData()
    assert x.tolist() == list(range(10, 1001, 10))
    assert monitor.buffer.series["mem_active"].view()[0][0] == pytest.approx(4.5)  # seconds since the first start
    log = monitor.log.toPlainText()
    assert log.index("Stopped at iteration 600") < log.index("Continuing from checkpoint 600")
    # 1000 iterations at 0.45 s, the 60 s between the stop and the resume, 5 s to the finish: 08:35 since the start
    assert monitor.progress.text() == "Finished 1000/1000 · 08:35 elapsed"


def test_a_resumed_run_reopened_shows_its_whole_history(window, monitor, tmp_path):
    run_dir = tmp_path / "resumed-run"
    first, second = _resumed_run(run_dir)
    _write_metrics(run_dir, first + second)
    window.session.open_run(run_dir)
    _resumed_run_shows_its_whole_history(monitor)


def test_a_run_resumed_live_shows_its_whole_history(window, engine, monitor, qtbot, tmp_path):
    """The app restarted (the Monitor shows nothing) and the run is resumed from Runs: its history comes from its
    folder, which holds the 'resume' record when the event arrives, and the resume job's events go on from it."""
    run_dir = tmp_path / "resumed-run"
    first, second = _resumed_run(run_dir)
    _write_metrics(run_dir, first + second[:1])
    window.session.resume_run(run_dir)
    engine.send(JobStarted(), *second[:32])
    qtbot.waitUntil(lambda: monitor.buffer.run.iteration == 740)
    monitor.redraw()
    assert monitor.loss.raw.getData()[0].tolist() == list(range(10, 741, 10))
    # the time left is at the pace of this job: 140 iterations in 61 s since the resume
    assert monitor.progress.text() == "Running 740/1000 · 06:33 elapsed · 01:53 left"
    engine.send(*second[32:])
    qtbot.waitUntil(lambda: monitor.buffer.run.state == "finished")
    monitor.redraw()
    _resumed_run_shows_its_whole_history(monitor)


def test_a_single_point_is_drawn_and_iteration_axes_start_at_0(window, engine, monitor, qtbot):
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=10))
    monitor.redraw()
    for curve in (monitor.loss.smooth, monitor.throughput.curves["tokens_per_second"], monitor.lr.curves["learning_rate"]):
        assert len(curve.getData()[0]) == 1 and curve.opts["symbol"] == "o"
    for panel in (monitor.loss, monitor.throughput, monitor.lr, monitor.memory):
        panel.plot.getViewBox().updateAutoRange()
        assert panel.plot.getViewBox().viewRange()[0][0] >= 0
    assert monitor.memory.plot.getAxis("left").labelText == "GB"
    engine.send(*sample_run.sample_events(upto=20)[-2:])
    monitor.redraw()
    assert monitor.loss.smooth.opts["symbol"] is None  # a line from two points on


def test_the_header_says_the_iteration_of_the_pause(window, engine, monitor, qtbot):
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=10), events.RunPaused(13))
    monitor.redraw()
    assert monitor.progress.text().startswith("Paused 13/1000")


def test_a_failure_recorded_only_in_the_status_file_is_shown(window, monitor, runs_dir):
    window.session.open_run(runs_dir / "failed-run")
    shown = [monitor.failure.item(i).text() for i in range(monitor.failure.count())]
    assert shown == ["Failed: the loss became NaN"]


def test_a_damaged_status_file_is_said(window, monitor, runs_dir):
    (runs_dir / "stopped-run" / "status.json").write_text("{not json")
    window.session.open_run(runs_dir / "stopped-run")
    assert "status.json cannot be read (damaged or edited by hand)" in monitor.warnings.text()
    (runs_dir / "empty-run").mkdir()
    (runs_dir / "empty-run" / "status.json").write_text("")
    window.session.open_run(runs_dir / "empty-run")
    assert monitor.progress.text() == "empty-run: nothing recorded"
    assert "status.json cannot be read" in monitor.warnings.text()
