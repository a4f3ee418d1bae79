"""Before training: the estimator's verdict gates the start, with an override the user confirms."""

import json
import shlex

import pytest
from conftest import SAMPLE_DATA, fast_recipe

from macfinetune import cli
from macfinetune.core import calibration, gate
from macfinetune.core.hardware import Machine
from macfinetune.core.modelshape import read_shape
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import apply_overrides

GATE_RECIPE = ["iterations=4", "report_every=2", "eval_every=4", "save_every=4", "val_batches=1", "batch_size=4",
               "num_layers=-1", "max_seq_length=96"]


def machine_with(usable_bytes: int) -> Machine:
    return Machine(memory_bytes=10 * usable_bytes, working_set_bytes=usable_bytes, reserve_bytes=0,
                   source="a test machine", device="cpu")


def tiny_estimate(tiny_model) -> int:
    recipe = fast_recipe(tiny_model, *GATE_RECIPE)
    return gate.check(recipe, read_shape(tiny_model), machine_with(10**12)).estimate.total_bytes


@pytest.fixture
def small_machine(monkeypatch, tiny_model, tmp_path):
    """This machine, made too small for the tiny run: 40% of its estimate at max_seq_length is usable
    (the gate estimates at the longest row of the data, which is shorter)."""
    machine = machine_with(int(0.4 * tiny_estimate(tiny_model)))
    monkeypatch.setattr("macfinetune.backend.machine_probe.probe_machine", lambda: machine)
    # a data folder of its own: the runs other tests left would correct the estimate (this Mac's correction)
    # by however their peaks came out, and the verdicts here would depend on the order the tests ran in
    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    return machine


def train_argv(tiny_model, out, *extra):
    sets = [x for item in GATE_RECIPE for x in ("--set", item)]
    return ["train", "demo-tiny-lora", "--model", str(tiny_model), "--data", str(SAMPLE_DATA), "--out", str(out),
            *sets, *extra]


def test_sequence_length_is_the_longest_row_padded_and_capped():
    assert gate.sequence_length(2048, 300) == 320
    assert gate.sequence_length(2048, 320) == 320
    assert gate.sequence_length(256, 3000) == 256
    assert gate.sequence_length(2048, None, model_max=1024) == 1024


def test_a_run_that_will_not_fit_is_refused_with_the_auto_fit_as_set_arguments(tiny_model):
    recipe = fast_recipe(tiny_model, *GATE_RECIPE)
    shape = read_shape(tiny_model)
    total = tiny_estimate(tiny_model)
    machine = machine_with(int(0.7 * total))
    with pytest.raises(ProblemError) as info:
        gate.check(recipe, shape, machine)
    problem = info.value.problems[0]
    assert problem.field == "memory" and "will not fit" in problem.message and "--force" in problem.message
    assert problem.value == pytest.approx(total / 1e9, abs=0.01)
    # the advice is runnable: its --set arguments make the same run pass the gate
    advice = problem.message.split("apply it with ")[1].split(". To start anyway")[0]
    sets = [a for a in shlex.split(advice) if a != "--set"]
    assert sets and all("=" in s for s in sets)
    fixed = gate.check(apply_overrides(recipe, sets), shape, machine)
    assert fixed.verdict.status in ("fits", "tight")
    # confirmed: it starts, and says so
    over = gate.check(recipe, shape, machine, allow_over_budget=True)
    assert over.overridden and "started anyway" in over.warning


def test_tight_starts_with_a_warning_and_fits_is_silent(tiny_model):
    recipe, shape = fast_recipe(tiny_model, *GATE_RECIPE), read_shape(tiny_model)
    total = tiny_estimate(tiny_model)
    tight = gate.check(recipe, shape, machine_with(int(total / 0.95)))
    assert tight.verdict.status == "tight" and "may swap" in tight.warning
    assert gate.check(recipe, shape, machine_with(10 * total)).warning == ""


def test_cli_refuses_before_loading_and_leaves_nothing(tiny_model, tmp_path, small_machine, capsys):
    out = tmp_path / "run"
    assert cli.main(train_argv(tiny_model, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "will not fit" in err and "--force" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("answer,code", [("n", 2), ("y", 0)])
def test_cli_asks_on_a_terminal(answer, code, tiny_model, tmp_path, small_machine, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    assert cli.main(train_argv(tiny_model, tmp_path / "run")) == code
    assert asked == ["Start anyway? [y/N] "]
    assert "will not fit" in capsys.readouterr().err
    assert (tmp_path / "run").exists() == (answer == "y")
    if answer == "y":
        assert json.loads((tmp_path / "run" / calibration.ESTIMATE_FILE).read_text())["overridden"] is True


def test_force_starts_and_the_run_records_estimate_verdict_and_measured_peak(tiny_model, tmp_path, small_machine,
                                                                             capsys):
    out = tmp_path / "run"
    assert cli.main(train_argv(tiny_model, out, "--force")) == 0
    printed = capsys.readouterr().out
    assert "started anyway as you confirmed" in printed
    record = json.loads((out / calibration.ESTIMATE_FILE).read_text())
    assert record["verdict"] == "will not fit" and record["overridden"] is True
    assert record["settings"]["max_seq_length"] <= 96 and record["settings"]["device"] == "cpu"
    row = calibration.run_row(out)  # the run is now a calibration row: estimate beside the measured peak
    assert row.measured_gb > 0 and abs(row.error) < 0.35, row


def test_engine_refuses_unless_the_user_confirmed(qtbot, tiny_model, tmp_path, small_machine):
    from macfinetune.core.events import JobFailed, JobFinished
    from macfinetune.engine import Engine

    events = []
    eng = Engine()
    eng.event.connect(lambda job_event: events.append(job_event.event))
    eng.start()
    try:
        eng.train(fast_recipe(tiny_model, *GATE_RECIPE), tmp_path / "refused")
        qtbot.waitUntil(lambda: any(isinstance(e, JobFinished | JobFailed) for e in events), timeout=120_000)
        failed = [e for e in events if isinstance(e, JobFailed)]
        assert failed, events
        assert failed[0].problems[0].field == "memory"
        assert not (tmp_path / "refused").exists()
    finally:
        assert eng.shutdown()
