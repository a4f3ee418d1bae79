"""Exact resume: a stopped or killed run continues to the same losses as an uninterrupted one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST, SAMPLE_DATA, fast_recipe

from macfinetune.backend.training import resume_run, train_run
from macfinetune.core import atomic, runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import RunContinued, Stage, TrainReport
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import load_recipe, save_recipe

EXACT = ["iterations=12", "report_every=1", "save_every=3", "eval_every=3", "dropout=0.1",
         "lr_schedule=cosine", "warmup_steps=2", "optimizer=adamw", "weight_decay=0.01"]


def losses(events):
    return {e.iteration: e.train_loss for e in events if isinstance(e, TrainReport)}


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2, 3])
def test_resume_is_exact_with_accumulation_after_a_stop_and_a_kill(tiny_model, tmp_path, accumulation):
    """Checkpoints land on update boundaries, so resuming continues the uninterrupted run's updates:
    a stop asked for mid-accumulation (step 5) finishes the accumulation first; a SIGKILL right after
    the first periodic save (the recipe refuses a save_every that is not a multiple of the
    accumulation) resumes from it."""
    first_save = 2 * accumulation
    recipe = [*EXACT, f"grad_accumulation={accumulation}", "warmup_steps=1", f"save_every={first_save}"]
    full = []
    assert train_run(fast_recipe(tiny_model, *recipe), tmp_path / "full", full.append).state == "finished"
    boundary = -(-5 // accumulation) * accumulation  # the first update boundary at or after step 5

    control = JobControl()

    def stop_at_5(event):
        if isinstance(event, TrainReport) and event.iteration == 5:
            control.request_stop()

    result = train_run(fast_recipe(tiny_model, *recipe), tmp_path / "stop", stop_at_5, control)
    assert result.state == "stopped" and result.iteration == boundary
    assert_resumes_exactly(tmp_path / "stop", boundary, full)

    killed = train_killed_at("commit-marker.renamed", 1, fast_recipe(tiny_model, *recipe), tmp_path / "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert runs.read_status(tmp_path / "kill").state == "interrupted"
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "kill")] == [first_save]
    assert_resumes_exactly(tmp_path / "kill", first_save, full)


def train_killed_at(point, n, recipe, out):
    """`macfinetune train` in a subprocess that SIGKILLs itself the n-th time it reaches a fault point."""
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe_file = out.parent / f"{out.name}.recipe.yaml"
    save_recipe(recipe_file, recipe)
    env = {**os.environ, "MLX_DISABLE_COMPILE": "1", atomic.FAULT_ENV: f"{point}:{n}"}
    return subprocess.run([sys.executable, "-m", "macfinetune", "train", str(recipe_file), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


def assert_resumes_exactly(run, start, full):
    events = []
    result = resume_run(run, events.append)
    assert result.state == "finished" and result.iteration == 12
    assert next(e for e in events if isinstance(e, RunContinued)).iteration == start
    resumed = losses(events)
    assert sorted(resumed) == list(range(start + 1, 13))
    for it, loss in resumed.items():
        assert loss == pytest.approx(losses(full)[it], rel=1e-4, abs=1e-5), it
    history = runs.read_metrics(run)
    assert [r["iteration"] for r in history if r["event"] == "train"] == list(range(1, 13))


def stopped_at(tiny_model, run, iteration: int):
    """A run of the EXACT recipe stopped (as the app's Stop does) at ``iteration``."""
    control = JobControl()

    def stop(event):
        if isinstance(event, TrainReport) and event.iteration == iteration:
            control.request_stop()

    train_run(fast_recipe(tiny_model, *EXACT), run, stop, control)
    return run



def test_half_written_checkpoint_is_skipped(tiny_model, tmp_path):
    run = stopped_at(tiny_model, tmp_path / "run", 6)
    # a crash in the middle of saving checkpoint 6: weights written, optimizer torn, no commit marker
    runs.state_file(run, 6).unlink()
    runs.optimizer_file(run, 6).write_bytes(b"\x00" * 10)
    assert [c.iteration for c in runs.complete_checkpoints(run)] == [3]
    events = []
    assert resume_run(run, events.append).state == "finished"
    assert next(e for e in events if isinstance(e, RunContinued)).iteration == 3


def test_a_run_folder_another_process_holds_is_refused_before_loading(tiny_model, tmp_path):
    """Two resumes started together: the second finds the folder held (the first still loading its model, its
    status not yet 'running') and is refused; once the holder ends, the resume goes on."""
    run = stopped_at(tiny_model, tmp_path / "run", 3)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(run / runs.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ProblemError, match="another macfinetune process is training in this run folder"):
            resume_run(run, lambda e: None)
        assert [r["event"] for r in runs.read_metrics(run)].count("resume") == 0  # refused before anything
    finally:
        holder.kill()
        holder.wait()
    assert resume_run(run, lambda e: None).state == "finished"


def test_a_run_folder_taken_while_the_model_loads_is_a_problem_not_a_traceback(tiny_model, tmp_path):
    run = tmp_path / "run"

    def other_run_takes_the_name(event):
        if isinstance(event, Stage) and event.message.startswith("Loading model"):
            run.mkdir()

    with pytest.raises(ProblemError, match="just created by another run started at the same moment"):
        train_run(fast_recipe(tiny_model, *EXACT), run, other_run_takes_the_name)
    assert list(run.iterdir()) == []  # the other run's folder is left as it was


def test_a_recipe_edited_so_the_checkpoints_no_longer_fit_is_refused_before_loading(tiny_model, tmp_path):
    run = stopped_at(tiny_model, tmp_path / "run", 3)
    text = (run / "recipe.yaml").read_text()
    rank = load_recipe(run / "recipe.yaml").method.rank
    (run / "recipe.yaml").write_text(text.replace(f"rank: {rank}", f"rank: {rank * 2}"))
    with pytest.raises(ProblemError, match=f"recipe.yaml sets method.rank: {rank * 2}, but the run's checkpoints were "
                                           f"trained with {rank}") as e:
        resume_run(run, lambda e: None)
    assert e.value.problems[0].field == "method.rank"
    assert runs.read_status(run).state == "stopped"  # not marked failed: put the value back and resume
    batch = load_recipe(run / "recipe.yaml").training.batch_size
    (run / "recipe.yaml").write_text(text.replace(f"batch_size: {batch}", f"batch_size: {batch + 1}"))
    with pytest.raises(ProblemError, match=f"sets training.batch_size: {batch + 1}, but the run's checkpoints were "
                                           f"trained with {batch}"):
        resume_run(run, lambda e: None)  # a resume continues the same data order: a new batch would not
    (run / "recipe.yaml").write_text(text)
    assert resume_run(run, lambda e: None).state == "finished"


def test_resume_refuses_finished_and_foreign_folders(trained_run, tmp_path):
    with pytest.raises(ProblemError, match="already finished"):
        resume_run(trained_run, lambda e: None)
    with pytest.raises(ProblemError, match="not a run folder"):
        resume_run(tmp_path, lambda e: None)
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    (damaged / "status.json").write_text('{"state": "runn')  # edited by hand, or a disk that lost its tail
    with pytest.raises(ProblemError, match="status.json cannot be read .* the run's checkpoints are intact"):
        resume_run(damaged, lambda e: None)


def test_a_file_where_the_output_folder_would_go_is_named_as_a_file(tmp_path):
    from macfinetune.core import runs

    (tmp_path / "out.txt").write_text("mine")
    assert "a file is where the fused model folder would go" in str(runs.check_new_dir(tmp_path / "out.txt",
                                                                                      "fused model folder")[0])


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "macfinetune", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "MLX_DISABLE_COMPILE": "1"},
                            **kwargs)


def _wait_for_checkpoint(run, minimum, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [c.iteration for c in runs.complete_checkpoints(run)] if (run / "checkpoints").exists() else []
        if done and max(done) >= minimum:
            return max(done)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_kill_9_during_training_then_resume_from_the_cli(tiny_model, tmp_path):
    run = tmp_path / "run"
    sets = [x for item in FAST + ["iterations=100000", "save_every=2", "eval_every=2"] for x in ("--set", item)]
    proc = _cli("train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA, "--out", run, *sets)
    _wait_for_checkpoint(run, 4, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert runs.read_status(run).state == "interrupted"
    recipe = (run / "recipe.yaml").read_text().replace("iterations: 100000", "iterations: 12")
    (run / "recipe.yaml").write_text(recipe)  # shorten the rest of the run for the test
    done = subprocess.run([sys.executable, "-m", "macfinetune", "train", "--resume", str(run)], capture_output=True,
                          text=True, env={**os.environ, "MLX_DISABLE_COMPILE": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout and "finished at iteration 12" in done.stdout
    assert runs.read_status(run).state == "finished"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines[:-1])  # every line but perhaps a torn one parses


def test_ctrl_c_stops_after_the_step_saves_and_exits_130(tiny_model, tmp_path):
    run = tmp_path / "run"
    sets = [x for item in FAST + ["iterations=100000", "save_every=2", "eval_every=2"] for x in ("--set", item)]
    proc = _cli("train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA, "--out", run, *sets)
    _wait_for_checkpoint(run, 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping after this step" in err and "continue with: macfinetune train --resume" in out
    status = runs.read_status(run)
    assert status.state == "stopped"
    assert runs.complete_checkpoints(run)[-1].iteration == status.iteration


def test_sigterm_stops_after_the_step_saves_and_exits_143(tiny_model, tmp_path):
    run = tmp_path / "run"
    sets = [x for item in FAST + ["iterations=100000", "save_every=2", "eval_every=2"] for x in ("--set", item)]
    proc = _cli("train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA, "--out", run, *sets)
    _wait_for_checkpoint(run, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM: stopping after this step\n" in err and "Ctrl-C" not in err
    assert "continue with: macfinetune train --resume" in out
    status = runs.read_status(run)
    assert status.state == "stopped"
    assert runs.complete_checkpoints(run)[-1].iteration == status.iteration


def test_last_checkpoint_is_the_newest_committed_one(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert runs.resolve_checkpoint(run, "last")[1] == 12
    runs.state_file(run, 12).unlink()  # killed before the commit marker of checkpoint 12
    path, it = runs.resolve_checkpoint(run, "last")
    assert it == 8 and path.name == runs.checkpoint_name(8)
    with pytest.raises(ProblemError, match="no checkpoint 12"):
        runs.resolve_checkpoint(run, "12")


@pytest.mark.parametrize("accumulation, due", [(1, [4, 8, 12]), (2, [4, 8, 12]), (3, [6, 9, 12])])
def test_validations_fall_due_on_update_boundaries(accumulation, due):
    """eval_every=4: with accumulation 3 the validation due at 4 waits for the update at 6."""
    from macfinetune.backend import loop

    assert [it for it in range(1, 13) if loop.is_due(it, 4, accumulation)] == due


def test_a_line_torn_by_a_kill_does_not_swallow_the_next_record(tmp_path):
    from macfinetune.core.events import RunContinued

    (tmp_path / runs.METRICS).write_text('{"event": "train", "iteration": 1}\n{"event": "train", "itera')
    log = runs.MetricsLog(tmp_path)
    log.write(RunContinued(str(tmp_path), 1))
    log.close()
    assert [(r["event"], r["iteration"]) for r in runs.read_metrics(tmp_path)] == [("train", 1), ("resume", 1)]
