from dataclasses import fields

import pytest

from macfinetune.core import recipe as rc
from macfinetune.core.paths import shipped
from macfinetune.core.plan import make_plan, schedule_spec
from macfinetune.core.problems import ProblemError


def problems_of(text):
    with pytest.raises(ProblemError) as info:
        rc.parse_recipe(text, file="r.yaml")
    return info.value.problems


def test_dump_then_parse_round_trips_every_field():
    recipe = rc.apply_overrides(
        rc.Recipe(),
        ["rank=32", "alpha=64", "target_modules=q_proj,v_proj", "learning_rate=3e-6", "lr_schedule=cosine",
         "epochs=2.5", "quantize=4", "mask_prompt=true", "val_batches=-1"],
    )
    text = rc.dump_recipe(recipe, header="a header")
    assert rc.parse_recipe(text) == recipe
    assert "learning_rate: 3.0e-06" in text  # floats carry a dot so YAML 1.1 reads them as floats
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            assert "  # " in line, f"uncommented key: {line}"


def test_unknown_key_names_key_line_and_suggestion():
    (p,) = problems_of("training:\n  batch_size: 2\n  batch_sise: 4\n")
    assert p.line == 3 and p.field == "training.batch_sise" and "training.batch_size" in p.message


def test_foreign_keys_say_where_they_go():
    found = problems_of("method:\n  lora_alpha: 32\ntorch_compile: true\n")
    messages = " ".join(p.message for p in found)
    assert "method.alpha" in messages and "MLX compiles" in messages


def test_wrong_types_and_ranges_carry_value_and_allowed_range():
    found = problems_of("training:\n  batch_size: two\n  learning_rate: -1.0e-5\nmethod:\n  rank: 0\n  type: qlora\n")
    by_field = {p.field: p for p in found}
    assert "expected a whole number" in by_field["training.batch_size"].message
    assert by_field["training.batch_size"].value == "two"
    assert "out of range" in by_field["training.learning_rate"].message
    assert "allowed 1 to 4096" in by_field["method.rank"].message
    assert "not one of lora, dora, full" in by_field["method.type"].message


def test_cross_field_rules():
    messages = [p.message for p in problems_of("training:\n  epochs: 2\n")]
    assert any("either training.iterations or training.epochs" in m for m in messages)
    messages = [p.message for p in problems_of("training:\n  weight_decay: 0.01\n")]
    assert any("adamw" in m for m in messages)
    messages = [p.message for p in problems_of("model:\n  quantize: 4\nmethod:\n  type: full\n")]
    assert any("quantized" in m for m in messages)


def test_yaml_1_1_float_and_bad_yaml():
    recipe = rc.parse_recipe("training:\n  learning_rate: 1e-5\n")
    assert recipe.training.learning_rate == 1e-5
    (p,) = problems_of("training: [\n")
    assert "not valid YAML" in p.message and p.line


def test_newer_schema_is_refused():
    (p,) = problems_of("schema: 99\n")
    assert p.field == "schema" and "99" in p.message


def test_overrides_switch_off_the_other_of_a_pair():
    recipe = rc.apply_overrides(rc.Recipe(), ["epochs=3", "warmup_ratio=0.1"])
    assert recipe.training.iterations is None and recipe.training.epochs == 3.0
    with pytest.raises(ProblemError, match="unknown key"):
        rc.apply_overrides(rc.Recipe(), ["nonsense=1"])


def test_alpha_maps_to_mlx_scale():
    recipe = rc.apply_overrides(rc.Recipe(), ["rank=16", "alpha=32"])
    assert recipe.method.scale == 2.0


@pytest.mark.parametrize("path", sorted(shipped("recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    assert rc.load_recipe(path).schema == rc.SCHEMA_VERSION


def test_every_field_has_help():
    for section in rc.SECTIONS:
        for f in fields(rc._section_class(section)):
            assert len(f.metadata["help"]) > 10, f"{section}.{f.name}"


def test_epochs_become_iterations_and_warmup_ratio_becomes_updates():
    recipe = rc.apply_overrides(rc.Recipe(), ["epochs=2", "batch_size=4", "grad_accumulation=2", "warmup_ratio=0.1"])
    plan = make_plan(recipe, train_rows=100, valid_rows=10)
    assert plan.iterations == 50 and plan.epochs == 2.0
    assert plan.optimizer_updates == 25 and plan.effective_batch == 8
    assert plan.warmup_updates == 2  # round(0.1 * 25)


def test_every_iteration_reaches_an_optimizer_update():
    """Epochs become whole accumulations (the last gradients are applied); iterations that are not a multiple of
    the accumulation are refused with the two nearest that are."""
    recipe = rc.apply_overrides(rc.Recipe(), ["epochs=1", "batch_size=4", "grad_accumulation=3", "save_every=30"])
    plan = make_plan(recipe, train_rows=100, valid_rows=10)  # 25 batches: 27 iterations, 9 updates
    assert (plan.iterations, plan.optimizer_updates) == (27, 9)
    with pytest.raises(ProblemError) as e:
        rc.apply_overrides(rc.Recipe(), ["iterations=5", "grad_accumulation=2", "save_every=2"])
    assert [(p.field, p.value) for p in e.value.problems] == [("training.iterations", 5)]
    assert ("multiple of training.grad_accumulation (2) so that every iteration's gradients reach an optimizer "
            "update; use 4 or 6") in e.value.problems[0].message


def test_what_the_plan_changes_is_said():
    """A warmup beyond the run's updates, and epochs shorter than one batch, are noted, not silently changed."""
    recipe = rc.apply_overrides(rc.Recipe(), ["iterations=3", "warmup_steps=1000"])
    assert make_plan(recipe, 100, 10).notes == (
        "training.warmup_steps 1000 exceeds the run's 3 optimizer updates: warming up over 2",)
    tiny = make_plan(rc.apply_overrides(rc.Recipe(), ["epochs=0.001", "batch_size=4"]), 100, 10)
    assert tiny.iterations == 1 and "less than one batch of 4: training 1 iteration" in tiny.notes[0]
    assert make_plan(rc.apply_overrides(rc.Recipe(), ["iterations=100", "warmup_steps=10"]), 100, 10).notes == ()


def test_schedules_in_mlx_lm_format():
    recipe = rc.apply_overrides(rc.Recipe(), ["iterations=100", "lr_schedule=cosine", "warmup_steps=10",
                                              "learning_rate=1e-4", "min_lr_ratio=0.1"])
    spec = schedule_spec(recipe, make_plan(recipe, 100, 10))
    assert spec == {"name": "cosine_decay", "arguments": [1e-4, 90, pytest.approx(1e-5)], "warmup": 10}
    assert schedule_spec(rc.Recipe(), make_plan(rc.Recipe(), 100, 10)) is None


def test_batch_larger_than_data_is_a_problem():
    recipe = rc.apply_overrides(rc.Recipe(), ["batch_size=8"])
    with pytest.raises(ProblemError, match="fewer than training.batch_size = 8"):
        make_plan(recipe, train_rows=5, valid_rows=1, data_file="d.jsonl")


def test_a_section_set_as_a_key_says_it_is_a_section():
    with pytest.raises(ProblemError, match="training is a section, not a key; set one of its keys, e.g. training.it"):
        rc.apply_overrides(rc.Recipe(), ["training=5"])


def test_the_fast_yaml_reads_what_pyyaml_reads_and_marks_the_same_errors():
    import yaml

    from macfinetune.core import yamlfast

    for path in shipped("recipes", "x.yaml").parent.glob("*.yaml"):
        text = path.read_text()
        assert yamlfast.safe_load(text) == yaml.safe_load(text), path.name
    bad = "training:\n  iterations: 5\n\tbatch_size: 2\n"
    with pytest.raises(yaml.YAMLError) as fast:
        yamlfast.safe_load(bad)
    with pytest.raises(yaml.YAMLError) as slow:
        yaml.safe_load(bad)
    assert fast.value.problem_mark.line == slow.value.problem_mark.line
