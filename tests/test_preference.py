"""Preference tuning (issue 17): pair formats, doctor findings, the DPO/ORPO losses, runs and resume."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from macfinetune.core import atomic, doctor, formats, runs, runs_table
from macfinetune.core.events import PreferenceReport, RunContinued, TrainReport
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import Recipe, apply_overrides, parse_recipe, save_recipe, with_paths

PAIRS = Path(__file__).resolve().parents[1] / "resources" / "sample_preferences"
PROMPT = [{"role": "user", "content": "Q?"}]


def pair_recipe(model, *overrides, data=PAIRS):
    return apply_overrides(with_paths(Recipe(), str(model), str(data)), [*FAST, "objective=dpo", *overrides])


def write_jsonl(path, rows):
    path.write_text("".join(rows), encoding="utf-8")
    return path


def lines(*rows):
    return [(r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows]


# --- formats ------------------------------------------------------------------------------------


SHAPES = [
    ({"prompt": "Q?", "chosen": "A", "rejected": "B"}, PROMPT),
    ({"prompt": "Q?", "system": "Be kind.", "chosen": "A", "rejected": "B"},
     [{"role": "system", "content": "Be kind."}, *PROMPT]),
    ({"prompt": PROMPT, "chosen": {"role": "assistant", "content": "A"}, "rejected": "B"}, PROMPT),
    ({"messages": PROMPT, "chosen": "A", "rejected": {"role": "assistant", "content": "B"}}, PROMPT),
    ({"prompt": "Q?", "chosen": [*PROMPT, {"role": "assistant", "content": "A"}],  # UltraFeedback-binarized
      "rejected": [*PROMPT, {"role": "assistant", "content": "B"}], "score_chosen": 9.0}, PROMPT),
    ({"chosen": "\n\nHuman: Q?\n\nAssistant: A", "rejected": "\n\nHuman: Q?\n\nAssistant: B"}, PROMPT),  # HH
]


@pytest.mark.parametrize(("record", "prompt"), SHAPES)
def test_every_pair_shape_becomes_one_canonical_row(tmp_path, record, prompt):
    data = formats.load_any(write_jsonl(tmp_path / "pairs.jsonl", lines(record, record)))
    assert (data.format, data.mlx_format) == ("preference", "preference")
    assert data.split("train").rows[0] == {"prompt": prompt, "chosen": "A", "rejected": "B"}


def test_bad_pair_rows_are_refused_naming_file_and_line(tmp_path, tiny_model):
    good = {"prompt": "Q?", "chosen": "A", "rejected": "B"}
    bad_prompt = {"chosen": [*PROMPT, {"role": "assistant", "content": "A"}],
                  "rejected": [{"role": "user", "content": "Other?"}, {"role": "assistant", "content": "B"}]}
    path = write_jsonl(tmp_path / "train.jsonl", lines(good, {"prompt": "Q?", "chosen": 3, "rejected": "B"}, good,
                                                       bad_prompt, {"chosen": "A", "rejected": "B"}))
    with pytest.raises(ProblemError) as e:
        formats.load_any(path)
    found = {p.line: p for p in e.value.problems}
    assert sorted(found) == [2, 4, 5] and all(p.file == str(path) for p in found.values())
    assert "'chosen' must be text" in found[2].message
    assert "share every message before the last answer" in found[4].message
    assert "no prompt" in found[5].message
    with pytest.raises(ProblemError) as e:  # training refuses them the same way, before any folder exists
        from macfinetune.backend.training import train_run

        train_run(pair_recipe(tiny_model, data=path), tmp_path / "run", lambda e: None)
    assert {p.line for p in e.value.problems} == {2, 4, 5} and not (tmp_path / "run").exists()


def test_objective_and_data_must_agree(tiny_model, tmp_path):
    from macfinetune.backend.training import preflight

    sft_data = Path(__file__).resolve().parents[1] / "resources" / "sample_data"
    with pytest.raises(ProblemError, match="needs preference pairs"):
        preflight(pair_recipe(tiny_model, data=sft_data), tmp_path / "a")
    with pytest.raises(ProblemError, match="set training.objective: dpo or orpo"):
        preflight(pair_recipe(tiny_model, "objective=sft"), tmp_path / "b")
    with pytest.raises(ProblemError, match="trains on one Mac"):
        preflight(pair_recipe(tiny_model), tmp_path / "c", hosts=2)


@pytest.mark.parametrize(("key", "hint"), [("beta", "training.dpo_beta for DPO's beta, or training.orpo_lambda"),
                                            ("loss_type", "training.objective: dpo .* not offered"),
                                            ("ref_model", "base model itself")])
def test_foreign_preference_keys_are_mapped_or_refused(key, hint):
    with pytest.raises(ProblemError, match=hint) as e:
        parse_recipe(f"training:\n  objective: dpo\n  {key}: 0.1\n", file="r.yaml")
    assert e.value.problems[0].line == 3


def test_recipe_ranges_and_packing_are_checked():
    with pytest.raises(ProblemError, match="out of range"):
        parse_recipe("training:\n  dpo_beta: 0\n")
    with pytest.raises(ProblemError, match="turn packing and length_buckets off"):
        parse_recipe("training:\n  objective: orpo\ndata:\n  packing: true\n")


def test_the_doctor_names_identical_empty_long_and_leaked_pairs(tmp_path, tiny_model):
    from macfinetune.backend.tokens import count_tokens, load_tokenizer

    long_answer = "Arr " * 200
    write_jsonl(tmp_path / "train.jsonl", lines(
        {"prompt": "Q1?", "chosen": "A", "rejected": "A "},
        {"prompt": "Q2?", "chosen": "", "rejected": "B"},
        {"prompt": "Q3?", "chosen": long_answer, "rejected": "B"},
        {"prompt": "Q4?", "chosen": "A", "rejected": "B"}))
    write_jsonl(tmp_path / "valid.jsonl", lines({"prompt": "q4? ", "chosen": "C", "rejected": "D"}))
    data = formats.load_any(tmp_path)
    tokenizer = load_tokenizer(tiny_model)
    report = doctor.inspect(data, count_tokens=lambda rows: count_tokens(rows, tokenizer), max_seq_length=96)
    rows = {f.check: [(Path(r.file).name, r.line) for r in f.rows] for f in report.findings}
    assert rows["identical_pair"] == [("train.jsonl", 1)]
    assert rows["empty_answer"] == [("train.jsonl", 2)]
    assert rows["truncated"] == [("train.jsonl", 3)]
    assert rows["prompt_leakage"] == [("valid.jsonl", 1)]


# --- the losses ---------------------------------------------------------------------------------


def _numpy_logps(logits, tokens, lengths):
    """Summed answer log-probabilities per row, straight from the logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    out, counts = [], []
    for r, (offset, length) in enumerate(lengths):
        picked = [log_softmax[r, k - 1, tokens[r, k]] for k in range(offset, length)]
        out.append(sum(picked))
        counts.append(len(picked))
    return np.array(out), np.array(counts)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def test_the_losses_equal_a_direct_computation_from_log_probabilities(tiny_model):
    import mlx.core as mx

    from macfinetune.backend import models, preference

    model, tokenizer, _ = models.load_model(tiny_model)
    rows = [json.loads(line) for line in (PAIRS / "valid.jsonl").read_text().splitlines()[:3]]
    dataset = preference.PairDataset(rows, tokenizer)
    dataset.reference = np.array([[-150.0, -90.0], [-120.5, -80.25], [-99.0, -101.0]], np.float32)
    tokens, lengths, reference = preference.batch_arrays(dataset, np.arange(3), 96)
    logits = np.array(model(mx.array(tokens[:, :-1])).astype(mx.float32))
    logps, counts = _numpy_logps(logits, tokens, lengths)
    chosen, rejected, ref_c, ref_r = logps[:3], logps[3:], reference[:3], reference[3:]

    beta, lam = 0.3, 0.7
    dpo = -_log_sigmoid(beta * ((chosen - ref_c) - (rejected - ref_r))).mean()
    mean_c, mean_r = chosen / counts[:3], rejected / counts[3:]
    log_odds = (mean_c - mean_r) - (np.log1p(-np.exp(mean_c)) - np.log1p(-np.exp(mean_r)))
    orpo = -chosen.sum() / counts[:3].sum() + lam * -_log_sigmoid(log_odds).mean()

    batch = (mx.array(tokens), mx.array(lengths), mx.array(reference))
    for objective, expected in (("dpo", dpo), ("orpo", orpo)):
        loss, ntoks = preference.make_loss(objective, beta, lam)(model, *batch)
        assert loss.item() == pytest.approx(expected, rel=1e-4), objective
        assert ntoks.item() == counts.sum()
        per_pair = preference.measures(np.stack([chosen, rejected], 1), np.stack([counts[:3], counts[3:]], 1),
                                       np.stack([ref_c, ref_r], 1), objective, beta, lam)
        assert per_pair["loss"] == pytest.approx(expected, rel=1e-4)
    margins = beta * ((chosen - ref_c) - (rejected - ref_r))
    assert per_pair["accuracy"] == pytest.approx(float((mean_c > mean_r).mean()))
    dpo_measures = preference.measures(np.stack([chosen, rejected], 1), np.stack([counts[:3], counts[3:]], 1),
                                       np.stack([ref_c, ref_r], 1), "dpo", beta, lam)
    assert dpo_measures["reward_margin"] == pytest.approx(margins.mean(), rel=1e-4)
    assert dpo_measures["accuracy"] == pytest.approx(float((margins > 0).mean()))


# --- runs ---------------------------------------------------------------------------------------


def _held_out(events):
    return {e.iteration: e for e in events if isinstance(e, PreferenceReport) and e.split == "valid"}


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_a_short_run_raises_held_out_preference_accuracy_above_the_base(tiny_model, tmp_path, objective):
    from macfinetune.backend.training import train_run

    events = []
    result = train_run(pair_recipe(tiny_model, f"objective={objective}"), tmp_path / "run", events.append)
    assert result.state == "finished" and result.best_iteration == 12
    reports = _held_out(events)
    base, last = reports[0], reports[12]
    assert base.likelihood_accuracy < 0.5 < 0.9 <= last.likelihood_accuracy
    assert last.accuracy >= 0.9 and last.reward_margin > base.reward_margin and last.loss < base.loss
    assert result.best_val_loss == pytest.approx(last.loss)
    logged = [r for r in runs.read_metrics(tmp_path / "run") if r["event"] == "preference" and r["split"] == "valid"]
    assert [r["iteration"] for r in logged] == [0, 4, 8, 12] and logged[-1]["accuracy"] == last.accuracy
    table = list(csv.DictReader(io.StringIO(runs_table.metrics_csv(tmp_path / "run"))))
    assert [float(r["accuracy"]) for r in table if r["event"] == "preference" and r["split"] == "valid"] == \
        [reports[i].accuracy for i in (0, 4, 8, 12)]
    started = next(e for e in events if type(e).__name__ == "RunStarted")  # Runs and the Monitor say which
    assert started.method == runs.read_status(tmp_path / "run").method == f"lora + {objective}"
    assert runs_table.scan_rows(tmp_path)[0].method == f"lora + {objective}"
    if objective == "dpo":
        assert base.accuracy == 0.0 and base.reward_margin == 0.0  # the policy starts as its reference
        assert (tmp_path / "run" / runs.DATA / "reference.json").exists()


def test_early_stopping_and_the_best_checkpoint_follow_the_preference_loss(tiny_model, tmp_path):
    from macfinetune.backend.training import train_run

    events = []
    recipe = pair_recipe(tiny_model, "objective=orpo", "early_stopping_patience=1", "early_stopping_min_delta=100")
    result = train_run(recipe, tmp_path / "run", events.append)
    assert (result.state, result.iteration) == ("finished", 4) and result.message.startswith("early stopping")
    assert result.best_iteration == 4 and result.best_val_loss == pytest.approx(_held_out(events)[4].loss)
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "run")] == [4]


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_each_report_step_measures_its_batch_before_the_update(tiny_model, tmp_path, objective):
    """The training-batch report of step i is computed on step i's batch with the weights it trains from,
    so its loss is the loss mlx-lm's trainer reports for that step."""
    from macfinetune.backend.training import train_run

    events = []
    recipe = pair_recipe(tiny_model, f"objective={objective}", "iterations=4", "report_every=1", "eval_every=4",
                         "save_every=4")
    assert train_run(recipe, tmp_path / "run", events.append).state == "finished"
    batches = {e.iteration: e for e in events if isinstance(e, PreferenceReport) and e.split == "train"}
    steps = {e.iteration: e.train_loss for e in events if isinstance(e, TrainReport)}
    assert sorted(batches) == sorted(steps) == [1, 2, 3, 4]
    for it, loss in steps.items():
        assert batches[it].loss == pytest.approx(loss, rel=1e-4), it
        assert batches[it].pairs == 4
    logged = [r for r in runs.read_metrics(tmp_path / "run") if r["event"] == "preference" and r["split"] == "train"]
    assert len(logged) == 4


def _train_killed_at(point, n, recipe, out):
    """`macfinetune train` in a subprocess that SIGKILLs itself the n-th time it reaches a fault point."""
    recipe_file = out.parent / f"{out.name}.recipe.yaml"
    save_recipe(recipe_file, recipe)
    env = {**os.environ, "MLX_DISABLE_COMPILE": "1", atomic.FAULT_ENV: f"{point}:{n}"}
    return subprocess.run([sys.executable, "-m", "macfinetune", "train", str(recipe_file), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_a_dpo_run_killed_with_sigkill_resumes_exactly(tiny_model, tmp_path):
    from macfinetune.backend.training import resume_run, train_run

    recipe = pair_recipe(tiny_model, "report_every=1", "dropout=0.1", "lr_schedule=cosine", "warmup_steps=2",
                         "optimizer=adamw", "weight_decay=0.01")
    full = []
    assert train_run(recipe, tmp_path / "full", full.append).state == "finished"
    killed = _train_killed_at("commit-marker.renamed", 1, recipe, tmp_path / "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "kill")] == [4]

    events = []
    assert resume_run(tmp_path / "kill", events.append).state == "finished"
    assert next(e for e in events if isinstance(e, RunContinued)).iteration == 4
    losses = {e.iteration: e.train_loss for e in events if isinstance(e, TrainReport)}
    expected = {e.iteration: e.train_loss for e in full if isinstance(e, TrainReport)}
    assert sorted(losses) == list(range(5, 13))
    for it, loss in losses.items():
        assert loss == pytest.approx(expected[it], rel=1e-4, abs=1e-5), it
    assert _held_out(events)[12].loss == pytest.approx(_held_out(full)[12].loss, rel=1e-4)


# --- the estimator ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_estimator_counts_both_answers_of_a_pair_and_no_reference_copy(tiny_model, method):
    from dataclasses import replace

    from macfinetune.core.estimator import estimate, settings_from_recipe
    from macfinetune.core.modelshape import read_shape
    from macfinetune.core.timing import Rate, estimate_time

    shape = read_shape(tiny_model)
    sft = settings_from_recipe(pair_recipe(tiny_model, "objective=sft", f"method.type={method}"))
    dpo = settings_from_recipe(pair_recipe(tiny_model, f"method.type={method}"))
    assert (sft.sequences_per_row, dpo.sequences_per_row) == (1, 2) and dpo.batch_size == sft.batch_size == 4
    pairs, doubled = estimate(shape, dpo), estimate(shape, replace(sft, batch_size=8))
    assert [t.bytes for t in pairs.terms] == [t.bytes for t in doubled.terms]  # 4 pairs cost what 8 sequences cost
    assert pairs.total_bytes > estimate(shape, sft).total_bytes
    assert pairs.term("weights").bytes == estimate(shape, sft).term("weights").bytes  # no second model
    rate = Rate(1e12, 2e12, "test")
    assert estimate_time(shape, dpo, rate).tokens_per_iteration == 2 * estimate_time(shape, sft, rate).tokens_per_iteration


def test_the_loss_guard_judges_a_dpo_loss_on_its_own_scale(tiny_model):
    import math

    from macfinetune.backend.preference import Validator
    from macfinetune.core import health

    assert health.loss_problem(0.05, 0.004, 10, 1e-3) is not None  # a supervised loss this jumpy has exploded
    floor = Validator(pair_recipe(tiny_model), 4).loss_floor
    assert floor == pytest.approx(math.log(2))
    assert health.loss_problem(0.05, 0.004, 10, 1e-3, floor) is None  # one hard pair after an easy stretch
    assert "exploded" in health.loss_problem(2.5, 0.004, 10, 1e-3, floor)  # the model now prefers the rejected
    assert Validator(pair_recipe(tiny_model, "objective=orpo"), 4).loss_floor == 1e-3


def test_the_recommendation_for_pairs_fits_two_sequences_per_row():
    from dataclasses import replace

    from macfinetune.core.estimator import estimate, judge
    from macfinetune.core.hardware import machine_from_memory
    from macfinetune.core.modelshape import read_shape
    from macfinetune.core.paths import shipped
    from macfinetune.core.recommend import recommend

    shape = read_shape(shipped("resources", "estimator", "configs", "Llama-3.2-1B-Instruct"))
    mac = machine_from_memory(32)  # where the supervised recommendation, doubled, would not fit
    supervised = recommend(shape, mac, longest_row_tokens=2000).fit.settings
    pairs = recommend(shape, mac, longest_row_tokens=2000, sequences_per_row=2).fit.settings
    assert pairs.sequences_per_row == 2
    assert judge(estimate(shape, replace(supervised, sequences_per_row=2)), mac).status == "will not fit"
    assert judge(estimate(shape, pairs), mac).fits


def test_the_shipped_dpo_recipe_trains_the_tiny_model_on_the_sample_pairs(tiny_model, tmp_path, capsys):
    """recipes/demo-tiny-dpo.yaml as a user runs it (a few iterations here)."""
    from macfinetune import cli
    from macfinetune.core.paths import shipped

    code = cli.main(["train", "demo-tiny-dpo", "--model", str(tiny_model), "--data",
                     str(shipped("resources", "sample_preferences")), "--out", str(tmp_path / "run"),
                     "--set", "iterations=10", "--set", "save_every=10"])
    out = capsys.readouterr().out
    assert code == 0 and "valid dpo: accuracy" in out
    assert runs.read_status(tmp_path / "run").method == "lora + dpo"
