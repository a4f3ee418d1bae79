"""This Mac's correction: finished runs of the same family and method move the estimate, within a bound."""

import json
from dataclasses import replace

import pytest

from macfinetune import cli
from macfinetune.core import calibration, run_index
from macfinetune.core.calibration import CORRECTION_BOUND, correct_for_this_mac
from macfinetune.core.estimator import Settings, estimate
from macfinetune.core.modelshape import read_shape
from macfinetune.core.paths import shipped

CONFIGS = shipped("resources", "estimator", "configs", "x").parent
SETTINGS = Settings(num_layers=16, rank=8, batch_size=2, max_seq_length=1024, device="gpu")


def qwen():
    return read_shape(CONFIGS / "Qwen3-1.7B")


def make_run(home, name, est, measured_gb):
    """A finished run folder as the trainer leaves it: recipe, estimate.json, metrics with the peak."""
    folder = home / "runs" / name
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text("schema: 1\n")
    calibration.write_run_estimate(folder, est, flops_per_token=1.0)
    reports = [{"event": "train", "iteration": i, "peak_memory_gb": measured_gb * f, "tokens_per_second": 100.0}
               for i, f in ((10, 0.97), (20, 1.0))]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))
    return folder


def runs_of(home):
    return sorted((home / "runs").iterdir())


@pytest.mark.parametrize("ratios,direction", [((1.06, 1.05, 1.07, 1.06), 1), ((0.9, 0.92, 0.91), -1)])
def test_runs_of_the_same_family_and_method_move_the_estimate_their_way(tmp_path, ratios, direction):
    est = estimate(qwen(), SETTINGS)
    for i, ratio in enumerate(ratios):
        make_run(tmp_path, f"run{i}", est, est.total_gb * ratio)
    corrected, correction = correct_for_this_mac(est, runs_of(tmp_path))
    assert correction.runs == len(ratios)
    moved = corrected.total_bytes - est.total_bytes
    assert moved * direction > 0
    assert abs(corrected.total_gb / est.total_gb - 1) < abs(sorted(ratios)[len(ratios) // 2] - 1) + 0.005
    assert corrected.uncorrected_bytes == est.total_bytes
    assert f"from {len(ratios)} runs on this Mac" in corrected.correction


@pytest.mark.parametrize("ratio", [1.6, 0.4])
def test_the_correction_never_goes_beyond_its_bound(tmp_path, ratio):
    est = estimate(qwen(), SETTINGS)
    for i in range(6):
        make_run(tmp_path, f"run{i}", est, est.total_gb * ratio)
    corrected, correction = correct_for_this_mac(est, runs_of(tmp_path))
    assert abs(corrected.total_gb / est.total_gb - 1) == pytest.approx(CORRECTION_BOUND, abs=1e-6)
    assert correction.bounded and "bound" in correction.label


def test_one_run_moves_half_way_and_says_its_confidence_is_low(tmp_path):
    est = estimate(qwen(), SETTINGS)
    make_run(tmp_path, "only", est, est.total_gb * 1.10)
    corrected, correction = correct_for_this_mac(est, runs_of(tmp_path))
    assert corrected.total_gb / est.total_gb == pytest.approx(1.05, abs=0.002)
    assert correction.confidence == "low" and "+5% from 1 run on this Mac" in correction.label


def test_other_families_methods_and_backends_do_not_count(tmp_path):
    est = estimate(qwen(), SETTINGS)
    llama = estimate(read_shape(CONFIGS / "Llama-3.2-3B-Instruct"), SETTINGS)
    make_run(tmp_path, "llama", llama, llama.total_gb * 1.3)
    make_run(tmp_path, "full", estimate(qwen(), replace(SETTINGS, method="full")), 50.0)
    make_run(tmp_path, "cpu", estimate(qwen(), replace(SETTINGS, device="cpu")), 50.0)
    corrected, correction = correct_for_this_mac(est, runs_of(tmp_path))
    assert correction is None and corrected == est


def test_a_corrected_run_estimate_keeps_the_models_own_figure(tmp_path):
    """A run started with a corrected estimate records the uncorrected one, so corrections do not compound."""
    est = estimate(qwen(), SETTINGS)
    for i in range(3):
        make_run(tmp_path, f"run{i}", est, est.total_gb * 1.10)
    corrected, _ = correct_for_this_mac(est, runs_of(tmp_path))
    make_run(tmp_path, "next", corrected, est.total_gb * 1.10)
    row = calibration.mac_row(tmp_path / "runs" / "next")
    assert row.estimate_gb == pytest.approx(est.total_gb, abs=1e-3)


def test_estimate_shows_the_mode_and_this_macs_correction(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path))
    args = ["estimate", "--model", "Qwen3-1.7B", "--memory-gb", "64", "--num-layers", "16", "--rank", "8",
            "--batch-size", "2", "--max-seq-length", "1024"]
    assert cli.main([*args, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["mode"] == "metal" and before["correction"] is None
    est = estimate(qwen(), SETTINGS)
    for i in range(4):
        make_run(tmp_path, f"run{i}", est, est.total_gb * 1.08)
    assert cli.main([*args, "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["correction"]["runs"] == 4 and after["correction"]["percent"] == pytest.approx(6.4, abs=0.1)
    assert after["total_gb"] == pytest.approx(before["total_gb"] * after["correction"]["factor"], rel=1e-3)
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "estimator mode: Metal" in text and "corrected +6% from 4 runs on this Mac" in text


# --- measure this Mac (backend/probe.py) on the tiny model ------------------------------------------


def test_measure_this_mac_records_two_probes_that_correct_the_next_estimate(tiny_model, tmp_path, monkeypatch,
                                                                            capsys):
    import mlx.core as mx

    from macfinetune.backend import hardware

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path))
    args = ["estimate", "--model", str(tiny_model), "--batch-size", "2", "--max-seq-length", "128",
            "--num-layers", "-1"]  # this machine: the probes run, and are estimated, in its own mode
    assert cli.main([*args, "--measure", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["sequence_length"] for m in report["measured"]] == [64, 128]
    lines = [json.loads(x) for x in (tmp_path / "calibration" / "rows.jsonl").read_text().splitlines()]
    assert [x["sequence_length"] for x in lines] == [64, 128]
    assert all(x["measured_gb"] > 0 and x["estimate_gb"] > 0 and x["family"] == "llama" for x in lines)
    assert lines[1]["measured_gb"] > lines[0]["measured_gb"]
    assert report["correction"]["runs"] == 2  # the probes correct the estimate printed after them
    assert report["mode"] == lines[0]["mode"]
    assert not list((tmp_path / "runs").glob("*")) and not run_index.remembered()  # not among the user's runs
    # the run held MLX's buffer cache to what the budget leaves beside its estimate, which the memory gate
    # corrected by the first probe (this Mac's correction reaches the gate, not only `estimate`)
    second = json.loads((tmp_path / "calibration" / lines[1]["run"] / "estimate.json").read_text())
    assert second["correction"].startswith("corrected ") and "from 1 run on this Mac" in second["correction"]
    assert second["raw_total_gb"] == pytest.approx(lines[1]["estimate_gb"], abs=1e-4)
    assert second["total_gb"] != second["raw_total_gb"]
    budget = hardware.memory_budget_bytes()
    assert mx.set_cache_limit(0) == int(budget - second["total_gb"] * 1e9)


def test_probe_lengths_halve_until_the_longer_one_fits():
    from macfinetune.backend.probe import probe_lengths

    assert probe_lengths(2048, lambda n: True) == [1024, 2048]
    assert probe_lengths(4096, lambda n: n <= 1000) == [256, 512]


def test_the_memory_gate_judges_the_corrected_estimate(tmp_path):
    """The gate that lets a run start uses the same corrected figure `estimate` and the wizard show: a
    configuration that fits by the model alone is refused once this Mac's runs say it needs 15% more."""
    from macfinetune.core import gate
    from macfinetune.core.estimator import judge, settings_from_recipe
    from macfinetune.core.hardware import machine_from_memory
    from macfinetune.core.problems import ProblemError
    from macfinetune.core.recipe import Recipe, apply_overrides

    recipe = apply_overrides(Recipe(), ["batch_size=2", "max_seq_length=1024", "num_layers=16", "rank=8"])
    shape = qwen()
    plain = estimate(shape, replace(settings_from_recipe(recipe), device="gpu"))
    # a machine whose budget sits just above the plain estimate
    machine = next(m for tenth in range(40, 2000) if judge(plain, m := machine_from_memory(tenth / 10)).status
                   != "will not fit")
    assert gate.check(recipe, shape, machine).estimate.total_bytes == plain.total_bytes  # starts
    for i in range(6):
        make_run(tmp_path, f"run{i}", plain, plain.total_gb * 1.6)
    rows = calibration.mac_rows(runs_of(tmp_path))
    judged = gate.check(recipe, shape, machine, mac_rows=rows, allow_over_budget=True)
    assert judged.correction is not None and judged.correction.runs == 6
    assert judged.estimate.total_bytes == pytest.approx(plain.total_bytes * (1 + CORRECTION_BOUND), rel=1e-3)
    assert judged.verdict.status == "will not fit"
    # auto-fit searches with the same correction: what it proposes fits by the corrected figure
    assert judged.fit.found and judged.fit.verdict.status == "fits"
    assert judged.fit.estimate.total_bytes == pytest.approx(
        estimate(shape, judged.fit.settings).total_bytes * (1 + CORRECTION_BOUND), rel=1e-3)
    with pytest.raises(ProblemError) as refused:
        gate.check(recipe, shape, machine, mac_rows=rows)
    assert "corrected +15% from 6 runs on this Mac" in str(refused.value)
    # other families' runs do not move it
    other = gate.check(recipe, read_shape(CONFIGS / "Meta-Llama-3-8B"), machine_from_memory(128), mac_rows=rows)
    assert other.correction is None


def test_this_mac_rows_read_the_runs_and_the_probes(tmp_path, monkeypatch):
    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))  # an empty index of runs opened elsewhere
    est = estimate(qwen(), SETTINGS)
    make_run(tmp_path, "a", est, est.total_gb * 1.1)
    probe = make_run(tmp_path, "p", est, est.total_gb * 1.1)
    (tmp_path / "calibration").mkdir()
    probe.rename(tmp_path / "calibration" / "p")
    rows = calibration.this_mac_rows(tmp_path / "runs", tmp_path / "calibration")
    assert sorted(r.run for r in rows) == ["a", "p"]
    assert calibration.this_mac_rows(tmp_path / "none", tmp_path / "none2") == []
