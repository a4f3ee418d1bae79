"""The job functions the CLI and the engine share: progress, cancel, the real longest row, timestamps in logs."""

import json

import pytest
from conftest import fast_recipe

from macfinetune import jobs
from macfinetune.core import runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import Progress, TrainReport


def _rows_file(tmp_path, n):
    path = tmp_path / "train.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                             {"role": "assistant", "content": f"answer {i}"}]}) + "\n")
    return path


def test_inspect_dataset_reports_progress_while_tokenizing(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "INSPECT_CHUNK", 100)
    events = []
    report = jobs.inspect_dataset(events.append, JobControl(), path=_rows_file(tmp_path, 250), model=str(tiny_model))
    progress = [(e.done, e.total) for e in events if isinstance(e, Progress)]
    total = sum(s.rows for s in report.splits)
    assert progress == [(100, total), (200, total), (total, total)]
    assert report.lengths is not None


def test_inspect_dataset_stops_when_cancelled(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "INSPECT_CHUNK", 100)
    control, seen = JobControl(), []

    def emit(event):
        seen.append(event)
        if isinstance(event, Progress):
            control.request_stop()

    with pytest.raises(jobs.Cancelled):
        jobs.inspect_dataset(emit, control, path=_rows_file(tmp_path, 250), model=str(tiny_model))
    assert [e.done for e in seen if isinstance(e, Progress)] == [100]


def test_estimate_uses_the_real_longest_row(tiny_model):
    recipe = fast_recipe(tiny_model, "max_seq_length=2048")
    with_data = jobs.estimate(lambda e: None, JobControl(), recipe=recipe)
    without = jobs.estimate(lambda e: None, JobControl(), recipe=fast_recipe(tiny_model, "max_seq_length=2048",
                                                                             data=""))
    assert without.settings.max_seq_length == 1024  # the tiny model's own limit
    assert with_data.settings.max_seq_length < 256  # the sample chats are short
    assert with_data.estimate.total_bytes < without.estimate.total_bytes
    assert not with_data.overridden


def test_a_train_already_stopped_loads_nothing_and_writes_nothing(tiny_model, tmp_path):
    control = JobControl()
    control.request_stop()
    with pytest.raises(jobs.Cancelled):
        jobs.train(lambda e: None, control, recipe=fast_recipe(tiny_model), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_metrics_log_keeps_the_time_the_event_was_made_and_replays(tmp_path):
    report = TrainReport(1, 10, 2.0, 1e-3, 1.0, 10.0, 100, 0.5, time=1234.56789)
    assert report == TrainReport(1, 10, 2.0, 1e-3, 1.0, 10.0, 100, 0.5)  # time is not part of equality
    log = runs.MetricsLog(tmp_path)
    log.write(report)
    log.close()
    (record,) = runs.read_metrics(tmp_path)
    assert record["time"] == 1234.568
    assert record["event"] == "train" and record["iteration"] == 1 and record["train_loss"] == 2.0


def test_measure_mac_probes_the_recipes_model_at_two_lengths_and_records_rows(tiny_model, tmp_path, monkeypatch):
    """The wizard's Measure this Mac: the engine job trains the probe and leaves calibration rows that the
    next estimate of the same family and method is corrected by."""
    from macfinetune.core import calibration, paths
    from macfinetune.core.events import Stage

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path))
    events = []
    rows = jobs.measure_mac(events.append, JobControl(),
                            recipe=fast_recipe(tiny_model, "max_seq_length=128", "batch_size=2"))
    assert [r.sequence_length for r in rows] == [64, 128] and all(r.measured_gb > 0 for r in rows)
    assert any(isinstance(e, Stage) and e.job == "measure" and "128 tokens per row" in e.message for e in events)
    mac = calibration.this_mac_rows(paths.runs_home(), paths.calibration_home())
    assert sorted(r.run for r in mac) == sorted(r.run for r in rows) and {r.family for r in mac} == {"llama"}
