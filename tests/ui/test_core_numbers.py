"""The numbers the app draws, computed in core: smoothing, ETA and the progress line, memory pressure,
CSV export, compare labels, and a run's history read back as events."""

import csv
import io
import math

import pytest

from macfinetune.core import progress, runs, runs_table, sample_run
from macfinetune.core.smoothing import EmaState, ema


def test_ema_is_debiased_like_tensorboard():
    smoothed, _ = ema([2.0, 2.0, 2.0], 0.9)
    assert smoothed == pytest.approx([2.0, 2.0, 2.0])  # a biased EMA would start at 0.2
    smoothed, _ = ema([1.0, 3.0], 0.5)
    # last = 0.5, 0.5*0.5 + 0.5*3 = 1.75; debias 1 - 0.5, 1 - 0.25
    assert smoothed == pytest.approx([1.0, 1.75 / 0.75])


def test_ema_continues_incrementally_and_lets_nan_through():
    values = [3.0, 2.5, float("nan"), 2.0, 1.8, 1.7]
    whole, _ = ema(values, 0.6)
    first, state = ema(values[:3], 0.6)
    rest, _ = ema(values[3:], 0.6, state)
    assert math.isnan(whole[2])
    assert whole[:2] + whole[3:] == pytest.approx(first[:2] + rest)
    assert ema(values, 0.0)[0][3:] == values[3:]
    with pytest.raises(ValueError):
        ema([1.0], 1.0, EmaState())


def test_progress_line_and_eta():
    # 420 of 1000 in 192 s: 580 left at 420/192 it/s = 265 s
    left = progress.eta_seconds(420, 1000, 192.0)
    assert left == pytest.approx(580 * 192 / 420)
    assert progress.progress_line("running", 420, 1000, 192.0, 250.0) == "Running 420/1000 · 03:12 elapsed · 04:10 left"
    assert progress.progress_line("finished", 1000, 1000, 3723.0, 0.0) == "Finished 1000/1000 · 1:02:03 elapsed"
    assert progress.eta_seconds(500, 1000, 100.0, start_iteration=400) == pytest.approx(500.0)
    assert progress.eta_seconds(0, 1000, 10.0) is None


@pytest.mark.parametrize("in_use, budget, level", [(8.9, 10.0, "green"), (9.0, 10.0, "amber"), (10.0, 10.0, "amber"),
                                                   (10.01, 10.0, "red"), (50.0, None, "green")])
def test_pressure_level_is_amber_from_90_percent_and_red_above_the_budget(in_use, budget, level):
    assert progress.pressure_level(in_use, budget) == level


def test_csv_has_every_metrics_record(tmp_path):
    run = tmp_path / "run"
    sample_run.write_sample_run(run, upto=200)
    rows = list(csv.DictReader(io.StringIO(runs_table.metrics_csv(run))))
    records = runs.read_metrics(run)
    assert len(rows) == len(records)
    trains = [r for r in rows if r["event"] == "train"]
    assert [float(r["train_loss"]) for r in trains] == [r["train_loss"] for r in records if r["event"] == "train"]
    assert [r["iteration"] for r in rows if r["event"] == "val"] == ["100", "200"]


def test_history_reads_back_as_the_same_events(tmp_path):
    run = tmp_path / "run"
    written = sample_run.write_sample_run(run, upto=300)
    # memory samples are kept when taken at a train report (with MLX's figures); the ~1 s watch's are not
    logged = [e for e in written if type(e).__name__ != "MemorySample" or e.active_gb is not None]
    assert any(type(e).__name__ == "MemorySample" for e in logged)
    assert runs_table.load_run_events(run) == logged


def test_compare_labels_name_only_the_differing_settings(runs_dir):
    dirs = [runs_dir / "finished-run", runs_dir / "stopped-run", runs_dir / "interrupted-run"]
    labels = runs_table.difference_labels([runs_table.flat_recipe(d) for d in dirs], [d.name for d in dirs])
    assert labels == ["rank=8, learning_rate=0.0001", "rank=8, learning_rate=0.0003", "rank=16, learning_rate=0.0001"]
    same = runs_table.difference_labels([runs_table.flat_recipe(dirs[0])] * 2, ["a", "b"])
    assert same == ["a", "b"]


def test_rows_list_every_status_including_interrupted(runs_dir, tmp_path):
    extra = tmp_path / "elsewhere" / "opened-run"
    sample_run.write_sample_run(extra, upto=100, state="stopped")
    rows = {r.name: r for r in runs_table.scan_rows(runs_dir, [extra, runs_dir / "finished-run"])}
    assert {n: r.status for n, r in rows.items()} == {"finished-run": "finished", "stopped-run": "stopped",
                                                      "interrupted-run": "interrupted", "failed-run": "failed",
                                                      "opened-run": "stopped"}
    assert (rows["stopped-run"].iteration, rows["stopped-run"].total_iterations) == (600, 1000)
    assert rows["finished-run"].best_val_loss == pytest.approx(min(
        e.val_loss for e in sample_run.sample_events() if type(e).__name__ == "ValReport"))
    assert rows["finished-run"].duration_s == pytest.approx(450.0)
