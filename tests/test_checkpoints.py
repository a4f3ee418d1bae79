"""The Checkpoints page's numbers (core.checkpoints) and samples.jsonl (core.samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from macfinetune.core import checkpoints, runs, samples
from macfinetune.core.events import CheckpointSaved, SamplesSaved, TrainReport, ValReport


def _train(it: int, loss: float) -> TrainReport:
    return TrainReport(it, 30, loss, 1e-3, 1.0, 100.0, it * 10, 0.1)


def _checkpoint_files(run_dir: Path, it: int, val: float | None, size: int = 100) -> None:
    (run_dir / runs.ADAPTERS).mkdir(exist_ok=True)
    (run_dir / runs.CHECKPOINTS).mkdir(exist_ok=True)
    (run_dir / runs.ADAPTERS / runs.checkpoint_name(it)).write_bytes(b"a" * size)
    runs.optimizer_file(run_dir, it).write_bytes(b"o" * (2 * size))
    runs.write_checkpoint_state(run_dir, it, it * 10, val)


def _run(tmp_path: Path, evs: list) -> Path:
    log = runs.MetricsLog(tmp_path)
    for e in evs:
        log.write(e)
    log.close()
    return tmp_path


def test_rows_take_the_nearest_train_report_at_or_before_and_mark_the_best(tmp_path):
    run = _run(tmp_path, [_train(5, 3.0), _train(10, 2.5), ValReport(10, 2.6, 0.1),
                          CheckpointSaved(10, "x", 2.6, True, time=1000.0), _train(15, 2.0), _train(20, 1.9),
                          ValReport(20, 2.1, 0.1), CheckpointSaved(20, "x", 2.1, True, time=2000.0),
                          _train(25, 1.5), ValReport(27, 2.4, 0.1), CheckpointSaved(27, "x", 2.4, False, time=3000.0)])
    for it, val in ((10, 2.6), (20, 2.1), (27, 2.4)):
        _checkpoint_files(run, it, val, size=it)
    got = checkpoints.read_checkpoints(run)
    assert [(r.iteration, r.train_loss, r.val_loss, r.size_bytes, r.saved_at, r.is_best) for r in got.rows] == [
        (10, 2.5, 2.6, 30, 1000.0, False), (20, 1.9, 2.1, 60, 2000.0, True), (27, 1.5, 2.4, 81, 3000.0, False)]
    assert got.best_iteration == 20 == runs.best_checkpoint(run)[0]
    assert got.train_curve[0] == (5, 3.0) and got.val_curve == ((10, 2.6), (20, 2.1), (27, 2.4))


def test_a_pruned_checkpoint_stays_in_the_history_without_size(tmp_path):
    run = _run(tmp_path, [_train(4, 2.0), CheckpointSaved(4, "x", 1.0, True), _train(8, 1.0),
                          CheckpointSaved(8, "x", 1.5, False)])
    _checkpoint_files(run, 8, 1.5)
    rows = checkpoints.read_checkpoints(run).rows
    assert [(r.iteration, r.on_disk, r.is_best) for r in rows] == [(4, False, True), (8, True, False)]


def test_a_complete_checkpoint_missing_from_the_log_is_read_from_its_state_file(tmp_path):
    run = _run(tmp_path, [_train(4, 2.0)])
    _checkpoint_files(run, 4, 1.25)
    (row,) = checkpoints.read_checkpoints(run).rows
    assert (row.iteration, row.val_loss, row.train_loss, row.is_best) == (4, 1.25, 2.0, False)
    assert row.saved_at == pytest.approx(runs.state_file(run, 4).stat().st_mtime)


def test_no_train_report_yet_gives_no_train_loss():
    assert checkpoints.train_loss_at((), 5) is None
    assert checkpoints.train_loss_at(((10, 1.0),), 5) is None


def test_samples_are_appended_and_the_last_line_per_iteration_wins(tmp_path):
    samples.append_samples(tmp_path, SamplesSaved(str(tmp_path), 4, ("hi", "yo"), ("a", "b"), 0.1))
    with open(tmp_path / samples.SAMPLES, "a") as f:
        f.write('{"event": "samples", "iteration": 8, "sam')  # a torn line (killed mid-write)
    samples.append_samples(tmp_path, SamplesSaved(str(tmp_path), 8, ("hi", "yo"), ("c", "d"), 0.1))
    samples.append_samples(tmp_path, SamplesSaved(str(tmp_path), 4, ("hi", "yo"), ("e", "f"), 0.1))
    assert samples.read_samples(tmp_path) == {4: (("hi", "e"), ("yo", "f")), 8: (("hi", "c"), ("yo", "d"))}
    lines = (tmp_path / samples.SAMPLES).read_text().splitlines()
    assert json.loads(lines[-1])["samples"][0] == {"prompt": "hi", "text": "e"}


def test_rows_carry_their_samples(tmp_path):
    run = _run(tmp_path, [_train(4, 2.0), CheckpointSaved(4, "x", 1.0, True)])
    samples.append_samples(run, SamplesSaved(str(run), 4, ("q1", "q2"), ("a1", "a2"), 0.1))
    got = checkpoints.read_checkpoints(run)
    assert got.rows[0].samples == (("q1", "a1"), ("q2", "a2")) and got.prompts == ("q1", "q2")


def test_sample_prompts_from_validation_rows_or_the_recipe():
    rows = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "assistant", "content": "no user"}]},
            {"prompt": "2+2?", "completion": "4"},
            {"text": "one two three four five six"}]
    got = samples.prompts_for((), rows, 3)
    assert [p.shown for p in got] == ["hi", "2+2?", "one two three"]
    assert [m["role"] for m in got[0].messages] == ["system", "user"]
    assert got[2].text == "one two three" and got[2].messages == ()
    custom = samples.prompts_for(("Tell me a story",), rows, 3)
    assert [(p.shown, p.messages) for p in custom] == [("Tell me a story", ({"role": "user",
                                                                            "content": "Tell me a story"},))]


def test_a_real_run_folder(trained_run):
    got = checkpoints.read_checkpoints(trained_run)
    on_disk = [c.iteration for c in runs.complete_checkpoints(trained_run)]
    assert [r.iteration for r in got.rows] == on_disk == [4, 8, 12]
    assert all(r.size_bytes > 0 and r.train_loss is not None and r.val_loss is not None for r in got.rows)
    best = [r.iteration for r in got.rows if r.is_best]
    assert best == [runs.resolve_checkpoint(trained_run, "best")[1]]
