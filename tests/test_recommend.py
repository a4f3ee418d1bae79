"""Recommendations, auto-fit and time estimates."""
import json
from dataclasses import replace

import pytest

from macfinetune.core import timing
from macfinetune.core.autofit import auto_fit
from macfinetune.core.estimator import Settings, estimate, judge, settings_from_recipe
from macfinetune.core.hardware import chip, machine_from_memory
from macfinetune.core.modelshape import read_shape
from macfinetune.core.paths import shipped
from macfinetune.core.plan import make_plan, schedule_spec
from macfinetune.core.recipe import check_recipe, dump_recipe, parse_recipe
from macfinetune.core.recommend import recommend

CONFIGS = shipped("resources", "estimator", "configs", "x").parent


def shape_of(name):
    return read_shape(CONFIGS / name)


# --- auto-fit -----------------------------------------------------------------------------


def test_auto_fit_tries_checkpointing_first_and_says_what_it_costs():
    shape, mac = shape_of("Qwen3-1.7B"), machine_from_memory(16)
    s = Settings(method="lora", num_layers=-1, rank=16, batch_size=4, max_seq_length=2048)
    assert judge(estimate(shape, s), mac).status == "will not fit"
    fit = auto_fit(shape, s, mac)
    assert fit.found and fit.verdict.status == "fits"
    assert fit.changes[0].key == "training.grad_checkpoint"
    assert "30% slower" in fit.changes[0].cost
    assert fit.estimate.total_bytes <= mac.usable_bytes


def test_auto_fit_follows_the_seeds_order():
    order = ["training.grad_checkpoint", "training.attention", "training.loss", "data.max_seq_length", "training.batch_size", "method.num_layers",
             "method.rank", "model.quantize", "method.type"]
    shape, mac = shape_of("Qwen3-14B"), machine_from_memory(16)
    fit = auto_fit(shape, Settings(method="full", num_layers=-1, batch_size=4, max_seq_length=4096), mac)
    keys = [c.key for c in fit.changes]
    assert keys == [k for k in order if k in keys]
    assert "method.type" in keys and fit.settings.method == "lora"
    assert all(c.cost for c in fit.changes)


def test_smaller_batch_keeps_the_effective_batch():
    shape, mac = shape_of("Meta-Llama-3-8B"), machine_from_memory(24)
    s = Settings(method="lora", num_layers=8, rank=8, batch_size=8, max_seq_length=512, quantize=4,
                 grad_checkpoint=True)
    fit = auto_fit(shape, s, mac)
    change = next((c for c in fit.changes if c.key == "training.batch_size"), None)
    if change:
        assert fit.settings.batch_size * fit.settings.grad_accumulation == 8


def test_a_run_that_fits_is_left_alone():
    shape, mac = shape_of("Qwen3-1.7B"), machine_from_memory(128)
    s = Settings(num_layers=8, batch_size=1, max_seq_length=512)
    fit = auto_fit(shape, s, mac)
    assert fit.changes == () and fit.settings == s and "fits as it is" in fit.summary()


# --- recommendations ----------------------------------------------------------------------


@pytest.mark.parametrize("name,memory", [("Qwen3-1.7B", 16), ("Qwen3-1.7B", 128), ("gemma-3-27b-it", 128),
                                         ("Qwen3-32B", 64), ("gemma-3-4b-it-4bit", 16), ("Meta-Llama-3-8B", 18)])
def test_recommendation_fits_and_gives_a_reason_for_every_choice(name, memory):
    shape, mac = shape_of(name), machine_from_memory(memory)
    rec = recommend(shape, mac, model_path=f"some/{name}", data_path="data", train_rows=2000)
    assert rec.fit.verdict.status in ("fits", "tight")
    keys = {c.key for c in rec.choices}
    for key in ("method.type", "training.learning_rate", "training.batch_size", "data.max_seq_length",
                "training.grad_checkpoint", "training.epochs", "eval.save_every", "eval.eval_every"):
        assert key in keys
    assert all(c.reason for c in rec.choices)
    text = dump_recipe(rec.recipe)
    assert parse_recipe(text) == rec.recipe
    assert check_recipe(rec.recipe) == []
    est = estimate(rec.shape, settings_from_recipe(rec.recipe))
    assert est.total_bytes == rec.fit.estimate.total_bytes


def test_recommendation_follows_the_seeds_size_rules():
    big = recommend(shape_of("gemma-3-27b-it"), machine_from_memory(128))
    assert big.recipe.training.batch_size == 1 and big.recipe.training.grad_checkpoint
    assert big.recipe.data.max_seq_length <= 2048
    small = recommend(shape_of("Qwen3-1.7B"), machine_from_memory(128))
    assert small.recipe.method.type == "full"  # full fine-tuning fits: the most capacity
    assert small.recipe.training.learning_rate == pytest.approx(3e-6)
    assert "seed 000" in small.reason("training.learning_rate")
    laptop = recommend(shape_of("Qwen3-1.7B"), machine_from_memory(16))
    assert laptop.recipe.method.type in ("dora", "lora")
    assert laptop.recipe.training.learning_rate == pytest.approx(3e-4)  # seed 002's LoRA rate below 2B
    assert laptop.recipe.eval.eval_every == 25
    assert laptop.recipe.training.epochs in (2.0, 3.0)


def test_recommended_recipe_maps_to_mlx_lm_arguments():
    from macfinetune.backend import adapters

    rec = recommend(shape_of("Qwen3-1.7B"), machine_from_memory(16), train_rows=800)
    plan = make_plan(rec.recipe, 800, 80)
    assert plan.epochs == pytest.approx(3.0, rel=0.01)
    params = adapters.lora_parameters(rec.recipe, None)
    assert params["rank"] == rec.recipe.method.rank and params["scale"] == pytest.approx(2.0)
    optimizer = adapters.make_optimizer(rec.recipe, schedule_spec(rec.recipe, plan))
    assert type(optimizer).__name__ in ("Adam", "AdamW")


def test_longest_row_caps_the_sequence_length():
    rec = recommend(shape_of("Qwen3-1.7B"), machine_from_memory(64), longest_row_tokens=700)
    assert rec.recipe.data.max_seq_length == 768


def test_a_model_too_large_to_quantize_while_loading_gets_a_4_bit_copy():
    rec = recommend(shape_of("Qwen3-32B"), machine_from_memory(64), model_path="Qwen/Qwen3-32B")
    assert rec.shape.quant_bits == 4 and rec.fit.found
    assert "4-bit copy" in rec.reason("model.path")


# --- time ---------------------------------------------------------------------------------


def test_time_model_predicts_each_seed_run_from_the_others():
    """Leave one out: the range built from the other seed runs (scaled between chips by their published
    throughput) must overlap the held-out run's measured tokens/s, and the measured middle must lie within
    the predicted range widened by 5% (recorded: Qwen3-1.7B 375 vs 380-553, Gemma3-12B 67.5 vs 43-67,
    Gemma-3-4B 420 vs 284-523 and 350 vs 227-418)."""
    rows = timing.throughput_table()["measurements"]
    for i, row in enumerate(rows):
        rate = timing.seed_rate(chip(row["chip"]), rows[:i] + rows[i + 1:])
        s = Settings(method=row["method"], num_layers=row["num_layers"], rank=row.get("rank", 8),
                     target_modules=tuple(row.get("keys", ())), batch_size=row["batch_size"],
                     max_seq_length=row["sequence_length"], grad_checkpoint=row.get("grad_checkpoint", False))
        per_token = timing.flops_per_token(shape_of(row["model"]), s)
        low, high = rate.low / per_token, rate.high / per_token
        measured_low, measured_high = row["tokens_per_second"]
        assert measured_low <= high and measured_high >= low
        assert 0.95 * low <= (measured_low + measured_high) / 2 <= 1.05 * high


def test_time_grows_with_checkpointing_and_model_size():
    s = Settings(num_layers=16, batch_size=2, max_seq_length=1024)
    small, large = (timing.flops_per_token(shape_of(n), s) for n in ("Qwen3-1.7B", "Qwen3-14B"))
    assert large > 5 * small
    checkpointed = timing.flops_per_token(shape_of("Qwen3-1.7B"), replace(s, grad_checkpoint=True))
    assert 1.1 * small < checkpointed < 1.5 * small


def test_iterations_from_epochs_and_rows():
    t = timing.estimate_time(shape_of("Qwen3-1.7B"), Settings(batch_size=4), timing.seed_rate(None),
                             train_rows=1000, epochs=2, tokens_per_row=300)
    assert t.iterations_per_epoch == 250 and t.iterations == 500
    assert t.tokens_per_iteration == 1200


def test_recommend_command_writes_a_loadable_recipe_and_never_overwrites(tmp_path, capsys):
    from macfinetune import cli
    from macfinetune.core.recipe import load_recipe

    out = tmp_path / "rec.yaml"
    argv = ["recommend", "--model", "mlx-community/gemma-3-4b-it-4bit", "--memory-gb", "16", "--rows", "400",
            "--longest-row", "900", "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] in ("fits", "tight") and all(c["reason"] for c in report["choices"])
    recipe = load_recipe(out)
    assert recipe.data.max_seq_length <= 1024  # the longest row, not the size band's 3072
    assert 25 <= recipe.eval.save_every <= 50 and recipe.eval.save_every % recipe.training.grad_accumulation == 0
    before = out.read_bytes()
    assert cli.main(argv) == 2
    assert "nothing you made is overwritten" in capsys.readouterr().err and out.read_bytes() == before
    assert cli.main(["recommend", "--model", "Qwen/Qwen3-1.7B", "--rows", "0"]) == 2


# --- one source of truth: verdict, auto-fit, pre-quantized copy, written recipe ------------


def test_auto_fit_never_says_fits_when_the_verdict_does_not():
    from macfinetune.core.autofit import prequantized

    shape, mac = shape_of("Qwen3-14B"), machine_from_memory(24)
    s = Settings(quantize=4, batch_size=1, max_seq_length=512, num_layers=2, rank=4, grad_checkpoint=True)
    verdict = judge(estimate(shape, s), mac)
    fit = auto_fit(shape, s, mac)
    assert fit.found == verdict.fits or fit.changes
    assert "fits as it is" not in fit.summary() or verdict.fits
    pre = prequantized("Qwen/Qwen3-14B", shape, s, mac)
    assert pre.repo == "mlx-community/Qwen3-14B-4bit" and pre.verdict.fits and not verdict.fits
    assert 7 < pre.download_gb < 9


@pytest.mark.parametrize("name,memory", [("gemma-3-4b-it", 16), ("Qwen3-14B", 16), ("Qwen3-1.7B", 16)])
def test_the_written_recipe_is_the_one_estimated(tmp_path, name, memory):
    from macfinetune.core.recipe import load_recipe, save_recipe

    shape, mac = shape_of(name), machine_from_memory(memory)
    rec = recommend(shape, mac, model_path=f"org/{name}", data_path="data")
    save_recipe(tmp_path / "r.yaml", rec.recipe)
    again = load_recipe(tmp_path / "r.yaml")
    trained = rec.shape if again.model.path.startswith("mlx-community/") else shape
    assert (again.model.path != f"org/{name}") == (rec.shape is not shape)
    assert estimate(trained, settings_from_recipe(again)).total_bytes == rec.fit.estimate.total_bytes


def test_below_a_billion_parameters_the_demo_rules_apply():
    shape = shape_of("Qwen3-1.7B")
    tiny = replace(shape, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=1024)
    rec = recommend(tiny, machine_from_memory(16))
    values = {c.key: c for c in rec.choices}
    assert values["method.type"].value == "lora"
    assert values["training.learning_rate"].value == 2.0e-3
    assert "below the seeds" in values["training.learning_rate"].reason
    assert "M parameters" in values["method.rank"].reason
    assert "do not fit" not in values["method.type"].reason  # full fine-tuning was not weighed, not refused
    assert "all 2 blocks" in values["method.num_layers"].reason  # the blocks it has, not the rule's 100000


def test_recommend_reads_the_data_it_is_given(tiny_model, tmp_path, capsys):
    """--data sizes the recipe: its training rows set the passes, its longest row (the model's tokens) the length;
    data that cannot be read is refused with its file and line."""
    from conftest import SAMPLE_DATA

    from macfinetune import cli

    assert cli.main(["recommend", "--model", str(tiny_model), "--data", str(SAMPLE_DATA), "--json"]) == 0
    choices = {c["key"]: c for c in json.loads(capsys.readouterr().out)["choices"]}
    assert choices["data.max_seq_length"]["value"] == 256 and "your longest row is" in choices["data.max_seq_length"]["reason"]
    assert "converted to iterations" not in choices["training.epochs"]["reason"]  # the rows are known
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": "b",}\n')
    assert cli.main(["recommend", "--model", str(tiny_model), "--data", str(broken)]) == 2
    assert "broken.jsonl line 2: not valid JSON" in capsys.readouterr().err
    assert cli.main(["recommend", "--model", str(tiny_model), "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "dataset not found" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_model_recommendation_learns_as_well_as_the_demo_recipe(tiny_model, tmp_path):
    """Issue 18 item 3: the old recommendation (full fine-tuning at 3e-6) moved the validation loss
    7.14 -> 6.68. Both recipes train 60 iterations on the sample data (recorded: demo 2.79,
    recommended 2.77, from about 7.4). The recommended one must reach the demo's loss within 10%:
    the recipes still differ in dropout (0.05), warmup (5%) and final rate, which move the loss by a
    few percent at this length; a recipe that does not learn ends above 6."""
    from macfinetune.backend.training import train_run
    from macfinetune.core.paths import shipped as shipped_file
    from macfinetune.core.recipe import apply_overrides, load_recipe, with_paths

    data = shipped_file("resources", "sample_data")
    rec = recommend(read_shape(tiny_model), machine_from_memory(16), model_path=str(tiny_model), data_path=str(data))
    demo = with_paths(load_recipe(shipped_file("recipes", "demo-tiny-lora.yaml")), str(tiny_model), str(data))
    short = ["iterations=60", "eval_every=60", "save_every=60", "report_every=20"]
    losses = {}
    for name, recipe in (("demo", demo), ("recommended", rec.recipe)):
        extra = ["epochs=null"] if recipe.training.epochs else []
        result = train_run(apply_overrides(recipe, extra + short), tmp_path / name, lambda e: None)
        assert result.state == "finished"
        losses[name] = result.best_val_loss
    assert losses["recommended"] <= 1.10 * losses["demo"]
    assert losses["recommended"] < 4.0


def test_the_gate_proposes_a_copy_quantized_beforehand():
    from macfinetune.core import gate
    from macfinetune.core.problems import ProblemError
    from macfinetune.core.recipe import Recipe, apply_overrides, with_paths

    recipe = apply_overrides(with_paths(Recipe(), "Qwen/Qwen3-14B", "data"),
                             ["quantize=4", "batch_size=1", "max_seq_length=512", "num_layers=2", "rank=4"])
    with pytest.raises(ProblemError) as info:
        gate.check(recipe, shape_of("Qwen3-14B"), machine_from_memory(24))
    assert "mlx-community/Qwen3-14B-4bit" in str(info.value)


def test_learning_rate_advice_follows_the_seeds_rate_for_the_size_and_method():
    from macfinetune.core.recipe import Recipe, apply_overrides
    from macfinetune.core.recommend import advice

    shape = shape_of("Qwen3-8B-4bit")  # 8B: litgpt's adapter rate 1e-4, seed 000's full rate 5e-6
    assert advice(apply_overrides(Recipe(), ["learning_rate=1e-4"]), shape) == {}
    assert "unusually high: litgpt's adapter rate (seed 002) for" in advice(
        apply_overrides(Recipe(), ["learning_rate=2e-3"]), shape)["training.learning_rate"]
    assert "unusually low" in advice(apply_overrides(Recipe(), ["learning_rate=5e-7"]), shape)["training.learning_rate"]
    full = apply_overrides(Recipe(), ["type=full", "learning_rate=1e-4"])
    assert "seed 000's full fine-tuning rate" in advice(full, shape_of("Qwen3-1.7B"))["training.learning_rate"]
