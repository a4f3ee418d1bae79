"""The New-run wizard's decisions (core/wizard.py), without Qt."""

import shlex
from dataclasses import replace

import pytest

from macfinetune.core import catalog, gate, timing, wizard
from macfinetune.core.hardware import machine_from_memory
from macfinetune.core.recipe import (
    Recipe,
    apply_overrides,
    load_recipe,
    recipe_to_dict,
    save_recipe,
    with_paths,
)

QWEN = "mlx-community/Qwen3-1.7B-bf16"


@pytest.fixture(scope="module")
def shape():
    return catalog.find_shape(QWEN)


def recipe(*sets: str) -> Recipe:
    return apply_overrides(with_paths(Recipe(), QWEN, "data.jsonl"), list(sets))


def test_field_problems_name_the_field_and_the_allowed_range(shape):
    values = recipe_to_dict(recipe())
    values["method"]["rank"] = "abc"
    values["training"]["batch_size"] = 0
    got, errors = wizard.field_problems(values, shape)
    assert got is None
    assert errors == {"method.rank": "expected a whole number, got 'abc'",
                      "training.batch_size": "0 is out of range; allowed 1 to 4096"}


def test_field_problems_check_the_settings_against_the_model(shape):
    values = recipe_to_dict(recipe(f"num_layers={shape.layers + 1}"))
    got, errors = wizard.field_problems(values, shape)
    assert got is not None
    assert list(errors) == ["method.num_layers"]
    assert f"1 to {shape.layers}" in errors["method.num_layers"]


def test_range_hint_comes_from_the_schema():
    assert wizard.range_hint("method.rank") == "1 to 4096"
    assert wizard.range_hint("method.num_layers") == "1 or more (or -1)"
    assert wizard.range_hint("model.quantize") == "one of none, 4, 8"


def test_review_verdict_is_the_memory_gate_verdict(shape):
    machine = machine_from_memory(16)
    for sets in ((), ("batch_size=1", "max_seq_length=512"), ("batch_size=16", "max_seq_length=4096")):
        r = recipe(*sets)
        plan = wizard.review(r, shape, machine, timing.seed_rate(None), longest_row_tokens=700)
        try:
            expected = gate.check(r, shape, machine, longest_row_tokens=700).verdict.status
        except Exception:
            expected = "will not fit"
        assert plan.verdict.status == expected


def test_auto_fit_makes_an_over_budget_recipe_fit_and_says_the_cost(shape):
    machine = machine_from_memory(16)
    rate = timing.seed_rate(None)
    r = recipe("batch_size=8", "max_seq_length=4096", "save_every=50")
    plan = wizard.review(r, shape, machine, rate)
    assert plan.verdict.status == "will not fit"
    assert plan.fit.found and plan.fit.changes
    fitted = wizard.apply_fit(r, plan.fit)
    after = wizard.review(fitted, shape, machine, rate)
    assert after.verdict.status != "will not fit"
    assert after.estimate.total_bytes == plan.fit.estimate.total_bytes
    assert fitted.eval.save_every % fitted.training.grad_accumulation == 0
    assert "slower" in plan.fit.summary()


def test_the_review_plan_counts_iterations_and_tokens(shape):
    r = recipe("iterations=null", "epochs=2", "batch_size=4")
    plan = wizard.review(r, shape, machine_from_memory(64), timing.seed_rate(None), train_rows=1000,
                         tokens_per_row=300)
    assert (plan.iterations, plan.iterations_per_epoch, plan.effective_batch) == (500, 250, 4)
    assert plan.tokens_per_iteration == 1200
    assert " to " in plan.duration


def test_train_command_round_trips_to_the_same_recipe():
    r = recipe("rank=16", "alpha=32", "epochs=2.5", "learning_rate=2e-4", "target_modules=[q_proj,v_proj]",
               "grad_checkpoint=true", "quantize=4")
    words = shlex.split(wizard.train_command(r, "/runs/x"))
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert words[:6] == ["macfinetune", "train", "--model", QWEN, "--data", "data.jsonl"]
    assert words[-2:] == ["--out", "/runs/x"]
    assert apply_overrides(with_paths(Recipe(), QWEN, "data.jsonl"), sets) == r


def test_presets_take_the_seed_knobs_and_keep_model_data_and_method(shape):
    mine = recipe("method.type=dora", "quantize=4", "mask_prompt=true")
    preset = load_recipe(catalog.recipe_path("quick-test"))
    out = wizard.apply_preset(mine, preset, shape)
    assert (out.model, out.method.type, out.data.path, out.data.mask_prompt) == \
        (mine.model, "dora", "data.jsonl", True)
    assert out.training == preset.training and out.method.rank == preset.method.rank
    assert out.data.max_seq_length == preset.data.max_seq_length


def test_presets_are_capped_by_the_model():
    tiny = replace(catalog.find_shape(QWEN), layers=2, max_positions=128)
    out = wizard.fit_to_model(recipe("num_layers=16", "max_seq_length=2048"), tiny)
    assert (out.method.num_layers, out.data.max_seq_length) == (-1, 128)


def test_histogram_bins_cover_every_row_and_count_the_truncated():
    lengths = sorted([10, 20, 30, 100, 128, 150, 900, 1000])
    h = wizard.length_histogram(lengths, max_seq_length=128, bins=10)
    assert sum(h.counts) == 8 and len(h.counts) == 10
    assert h.edges[0] == 0 and h.edges[-1] > 1000
    assert (h.truncated, h.longest) == (3, 1000)
    assert "3 rows (37.5%) longer than 128 tokens are truncated" in h.text
    assert wizard.length_histogram([], 128).rows == 0


def test_data_warnings_say_when_the_data_is_too_small_or_leaks():
    r = recipe("iterations=1000", "batch_size=4")
    words = wizard.data_warnings(r, train_rows=12, valid_rows=0, leaked_rows=2)
    assert words == [
        "only 12 training rows: the model will learn little and overfit quickly",
        "333 passes over 12 rows: the model will memorise the data; use fewer iterations or more rows (at most 10 passes)",
        "no validation rows: the run cannot tell when it starts to overfit",
        "2 validation rows also in train: the validation loss will look better than it is",
    ]
    assert wizard.data_warnings(r, train_rows=4000, valid_rows=400) == []
    assert wizard.data_warnings(recipe("batch_size=8"), 3, 1)[0] == "3 training rows is fewer than the batch size 8"


def test_split_offer_counts_the_held_out_rows():
    assert wizard.split_offer(306, has_valid=False, fraction=0.15).startswith(
        "No validation file: 46 of 306 rows (15%) will be held out")
    assert wizard.split_offer(306, has_valid=True, fraction=0.15) == ""


def test_catalog_rows_leave_out_what_will_not_fit(shape):
    # a 12 GB Mac: on 8 GB (4.6 GB usable) Qwen3-1.7B in bf16 fits none of them since the Metal mode counts the
    # loss's four copies of the logits (issue 13: m3-18gb-safe needs 4.66 GB)
    rows, hidden = wizard.catalog_rows(catalog.list_recipes(), shape, machine_from_memory(12), catalog.entry_shape)
    assert rows and hidden
    assert all(r.status != "will not fit" for r in rows)
    big, _ = wizard.catalog_rows(catalog.list_recipes(), shape, machine_from_memory(192), catalog.entry_shape)
    assert len(big) > len(rows)
    assert not any(r.name.startswith("qwen3-32b") for r in big)  # written for a 19x larger model


def test_quantize_offer_and_methods_follow_the_base(shape):
    (four, saved4), (eight, saved8) = wizard.quantize_offer(shape)
    assert (four, eight) == (4, 8) and saved4 > saved8 > 0
    quantized = replace(shape, quant_bits=4)
    assert wizard.quantize_offer(quantized) == []
    assert [m for m, _, _ in wizard.methods_for(quantized)] == ["lora", "dora"]
    assert ("lora", 4) in [(m, b) for m, b, _ in wizard.methods_for(shape)]


def test_open_recipe_reads_a_run_folder(tmp_path):
    r = recipe("rank=4")
    save_recipe(tmp_path / "recipe.yaml", r)
    assert wizard.open_recipe(tmp_path) == r
    assert wizard.open_recipe(tmp_path / "recipe.yaml") == r


def test_the_trained_part_is_the_answer_only_with_masking():
    full, prompt = "<u>hi</u><a>arr</a>", "<u>hi</u><a>"
    assert wizard.trained_part(full, prompt, mask_prompt=True) == ("<u>hi</u><a>", "arr</a>")
    assert wizard.trained_part(full, prompt, mask_prompt=False) == ("", full)
    assert wizard.trained_part("text row", "", mask_prompt=True) == ("", "text row")


def test_field_spec_reads_the_schema():
    meta, kind = wizard.field_spec("training.iterations")
    assert meta["low"] == 1 and kind == int | None
    assert wizard.help_text("method.rank") == wizard.field_spec("method.rank")[0]["help"]


def test_a_run_estimated_under_a_minute_says_so_not_zero_seconds():
    from types import SimpleNamespace

    assert wizard.duration_text(SimpleNamespace(seconds=(0.2, 0.4))) == "under a minute"
    assert wizard.duration_text(SimpleNamespace(seconds=(20, 150))) == "under a minute to 2 min"
    assert wizard.duration_text(SimpleNamespace(seconds=(130, 400))) == "2 min to 6 min"


def test_the_verdict_names_the_metal_limit_only_on_a_mac(shape):
    from macfinetune.core.estimator import judge

    est = wizard.review(Recipe(), shape, machine_from_memory(16), timing.seed_rate(None)).estimate
    assert "Metal working-set limit" in judge(est, machine_from_memory(16)).message
    linux = judge(est, machine_from_memory(16, device="cpu")).message
    assert "Metal" not in linux and "memory limit" in linux


def test_an_unknown_model_name_lists_a_few_known_names_not_all():
    from macfinetune.core.problems import ProblemError

    with pytest.raises(ProblemError) as e:
        catalog.find_shape("someone/does-not-exist-xyz")
    message = e.value.problems[0].message
    assert message.endswith(f"(Qwen/Qwen3-1.7B, Qwen/Qwen3-14B, Qwen/Qwen3-32B, … {len(catalog.known_models())} in all)")
