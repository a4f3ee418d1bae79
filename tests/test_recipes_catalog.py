"""The shipped recipe catalog, user recipes, calibration rows from runs, and the estimate/recipes commands."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from macfinetune.core import calibration, catalog, paths
from macfinetune.core.estimator import Settings, estimate, settings_from_recipe, weight_bytes
from macfinetune.core.plan import make_plan, schedule_spec
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import FOREIGN_KEYS, Recipe, load_recipe, parse_recipe, save_recipe

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))


def test_recipe_files_are_generated_from_the_schema():
    proc = subprocess.run([sys.executable, "packaging/make_recipes.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_recipe_maps_to_mlx_lm_arguments(path):
    import yaml

    from macfinetune.backend import adapters

    recipe = load_recipe(path)
    raw = yaml.safe_load(path.read_text())["method"]  # the numbers as written in the file
    plan = make_plan(recipe, 1000, 100)
    params = adapters.lora_parameters(recipe, list(recipe.method.target_modules) or None)
    assert params["rank"] == raw["rank"]
    assert params["scale"] == pytest.approx(float(raw["alpha"]) / raw["rank"])
    optimizer = adapters.make_optimizer(recipe, schedule_spec(recipe, plan))
    assert type(optimizer).__name__.lower() == recipe.training.optimizer
    assert plan.iterations >= 1


@pytest.mark.parametrize("entry", [e for e in catalog.list_recipes(include_user=False)], ids=lambda e: e.name)
def test_every_catalog_recipe_has_notes_and_an_estimate(entry):
    if entry.name in ("demo-tiny-lora", "demo-tiny-dpo"):
        pytest.skip("the demo builds its own model")
    assert entry.meta.get("source", "").startswith("seed ")
    shape = catalog.entry_shape(entry)
    s = settings_from_recipe(entry.recipe)
    est = estimate(shape, s)
    weights = weight_bytes(shape, s.quantize or shape.quant_bits, s.quantize_group_size)
    state = 16 * est.trainable_params if s.method != "full" else 0  # float32 weight, gradient, 2 Adam moments
    assert est.total_bytes > weights + state


def test_seed_000_recipes_are_encoded():
    meta = catalog.catalog_meta()["recipes"]
    for model in ("gemma3-27b", "qwen3-14b", "qwen3-32b", "mistral-small-24b"):
        for method in ("full", "lora", "dora"):
            assert f"{model}-{method}" in meta
    lora = load_recipe(ROOT / "recipes" / "gemma3-27b-lora.yaml")
    assert (lora.method.rank, lora.method.alpha, lora.method.num_layers) == (64, 128.0, 16)
    assert lora.training.grad_checkpoint and lora.data.max_seq_length == 2048
    assert meta["qwen3-32b-full"]["feasibility"] == "not feasible"
    assert meta["qwen3-1.7b-full"]["memory_gb"] == 20.6


def test_seed_presets_keep_the_effective_batch():
    safe = load_recipe(ROOT / "recipes" / "m3-18gb-safe.yaml")
    assert (safe.training.batch_size, safe.training.grad_accumulation, safe.data.max_seq_length) == (1, 32, 768)
    assert safe.training.grad_checkpoint
    litgpt = load_recipe(ROOT / "recipes" / "llama-2-7b-qlora.yaml")
    assert litgpt.model.quantize == 4 and litgpt.training.batch_size * litgpt.training.grad_accumulation == 8


@pytest.mark.parametrize("key,hint", [("lora_alpha", "method.alpha"), ("warmup_ratio", None),
                                      ("micro_batch_size", "training.batch_size"),
                                      ("global_batch_size", "grad_accumulation"), ("bnb_4bit_use_double_quant", "quantize"),
                                      ("torch_compile", "remove"), ("lora_query", "target_modules")])
def test_foreign_knobs_map_or_are_rejected_with_a_reason(key, hint):
    text = f"training:\n  {key}: 0.1\n"
    if hint is None:  # a knob that exists here
        parse_recipe(text)
        return
    with pytest.raises(ProblemError) as info:
        parse_recipe(text)
    assert hint in str(info.value)
    assert key in FOREIGN_KEYS


# --- user recipes and runs --------------------------------------------------------------------


def test_save_as_recipe_from_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    run.mkdir()
    save_recipe(run / "recipe.yaml", Recipe(name="old"))
    path = catalog.save_run_as_recipe(run, "my-recipe", "mine")
    assert path.parent == paths.user_recipes_home()
    saved = load_recipe(path)
    assert saved.name == "my-recipe" and saved.description == "mine"
    assert any(e.name == "my-recipe" and e.user for e in catalog.list_recipes())
    with pytest.raises(ProblemError, match="already exists"):
        catalog.save_run_as_recipe(run, "my-recipe")
    with pytest.raises(ProblemError, match="letters"):
        catalog.save_run_as_recipe(run, "../escape")
    with pytest.raises(ProblemError, match="a shipped recipe has this name, and yours would hide it"):
        catalog.save_run_as_recipe(run, "demo-tiny-lora")
    assert not (paths.user_recipes_home() / "demo-tiny-lora.yaml").exists()


def test_a_run_folder_becomes_a_calibration_row(tmp_path):
    shape = catalog.shipped_config("Qwen3-1.7B")
    est = estimate(shape, Settings(batch_size=1, max_seq_length=256))
    calibration.write_run_estimate(tmp_path, est, 1e10)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for peak, speed in ((4.0, 100.0), (4.4, 120.0)):
            f.write(json.dumps({"event": "train", "peak_memory_gb": peak, "tokens_per_second": speed}) + "\n")
    row = calibration.run_row(tmp_path)
    assert row.measured_gb == 4.4 and row.estimate_gb == pytest.approx(est.total_gb, abs=1e-3)
    assert row.error == pytest.approx((est.total_gb - 4.4) / 4.4, abs=1e-3)
    rate = calibration.machine_rate([row])
    assert rate.low == rate.high == pytest.approx(1e10 * 110.0)
    assert calibration.machine_rate([row], flops_per_token=5e10).low == pytest.approx(1e10 * 110.0)  # similar size
    assert calibration.machine_rate([row], flops_per_token=1e12) is None  # a tiny run says nothing of a 100x larger


def test_the_demo_run_does_not_set_the_time_of_a_large_model(tmp_path, monkeypatch, capsys):
    """Runs of the tiny demo model (its steps are overhead, not arithmetic) leave a 1.7B model's time to the seeds."""
    from macfinetune import cli

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path))
    tiny = tmp_path / "runs" / "demo-run"
    tiny.mkdir(parents=True)
    shape = catalog.shipped_config("Qwen3-1.7B")
    calibration.write_run_estimate(tiny, estimate(shape, Settings(batch_size=1, max_seq_length=256)), 1e6)
    (tiny / "metrics.jsonl").write_text(json.dumps({"event": "train", "peak_memory_gb": 0.1,
                                                    "tokens_per_second": 900.0}) + "\n")
    assert cli.main(["estimate", "--model", "Qwen3-1.7B", "--json"]) == 0
    assert "past run" not in json.loads(capsys.readouterr().out)["time"]["source"]


def test_model_names_resolve_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert catalog.find_shape("Qwen/Qwen3-14B").layers == 40
    assert catalog.find_shape("mlx-community/Qwen3-1.7B-4bit").quant_bits == 4
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "vocab_size": 100}))
    assert catalog.find_shape("org/tiny").hidden == 64
    with pytest.raises(ProblemError, match="no config.json"):
        catalog.find_shape("org/unknown-model")
    with pytest.raises(ProblemError, match="no such folder") as e:  # a path, not a name: no list of names
        catalog.find_shape(str(tmp_path / "gone"))
    assert "known name" not in str(e.value)


# --- the commands -----------------------------------------------------------------------------


def parse(*argv):
    from macfinetune.cli.estimate import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_estimate_command_prints_one_json_object(capsys):
    from macfinetune.cli.estimate import cmd_estimate

    config = ROOT / "resources" / "estimator" / "configs" / "Qwen3-1.7B"
    args = parse("estimate", "--model", str(config), "--method", "lora", "--batch-size", "8", "--max-seq-length",
                 "4096", "--num-layers", "-1", "--rank", "64", "--keys", "q_proj,v_proj", "--optimizer", "adamw",
                 "--memory-gb", "16", "--json")
    assert cmd_estimate(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"total_gb", "verdict", "breakdown_gb"} <= set(report)
    assert report["total_gb"] == pytest.approx(sum(report["breakdown_gb"].values()), abs=0.01)
    assert report["verdict"] == "will not fit" and report["auto_fit"]["changes"]


def test_estimate_command_text_and_recipe(capsys):
    from macfinetune.cli.estimate import cmd_estimate

    args = parse("estimate", "--model", "mlx-community/gemma-3-4b-it-4bit", "--recipe", "gemma-3-4b-qlora-translation",
                 "--memory-gb", "16")
    assert cmd_estimate(args) == 0
    out = " ".join(capsys.readouterr().out.split())  # lines are wrapped at 100 characters
    assert "verdict: FITS" in out and "logits" in out and "1800 iterations" in out


@pytest.mark.parametrize("argv,field", [(("--rank", "0"), "rank"), (("--batch-size", "0"), "batch_size"),
                                        (("--num-layers", "99"), "num_layers"), (("--keys", ""), "keys"),
                                        (("--memory-gb", "0"), "memory_gb")])
def test_estimate_command_bad_input_raises_problems(argv, field):
    from macfinetune.cli.estimate import cmd_estimate

    args = parse("estimate", "--model", "Qwen/Qwen3-1.7B", *(argv if "--memory-gb" in argv else (*argv, "--memory-gb", "16")))
    with pytest.raises(ProblemError) as info:
        cmd_estimate(args)
    assert any(p.field == field for p in info.value.problems)


def test_recipes_command_lists_the_catalog(capsys):
    from macfinetune.cli.estimate import cmd_recipes

    assert cmd_recipes(parse("recipes", "--memory-gb", "128", "--json")) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["qwen3-32b-full"]["verdict"] == "will not fit"
    assert rows["gemma3-27b-lora"]["verdict"] in ("fits", "tight")
    assert rows["demo-tiny-lora"]["verdict"] == "unknown model"
    assert cmd_recipes(parse("recipes", "--memory-gb", "16")) == 0
    assert "qwen3-14b-lora" in capsys.readouterr().out


def test_a_starting_run_records_its_estimate(tiny_model, tmp_path):
    """What backend.training writes when a run starts (write_run_estimate): estimate.json beside the metrics."""
    from macfinetune.core.modelshape import read_shape

    shape = read_shape(tiny_model)
    est = estimate(shape, Settings(num_layers=-1, batch_size=2, max_seq_length=128, device="cpu"))
    calibration.write_run_estimate(tmp_path, est, 1234.0)
    record = calibration.read_run_estimate(tmp_path)
    assert record["total_gb"] == pytest.approx(est.total_gb, abs=1e-4)
    assert record["settings"]["device"] == "cpu" and record["flops_per_token"] == 1234.0
    assert calibration.read_run_estimate(tmp_path / "x") is None


def test_save_as_recipe_from_the_command_line_and_train_by_its_name(tmp_path, monkeypatch, capsys):
    from macfinetune import cli

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    run.mkdir()
    save_recipe(run / "recipe.yaml", Recipe(name="old"))
    assert cli.main(["recipes", "--save-from", str(run), "--name", "pirate-v2"]) == 0
    assert "saved" in capsys.readouterr().out
    assert catalog.recipe_path("pirate-v2") == paths.user_recipes_home() / "pirate-v2.yaml"
    assert catalog.recipe_path("demo-tiny-lora").name == "demo-tiny-lora.yaml"  # shipped ones still found
    assert cli.main(["recipes", "--name", "x"]) == 2
    assert "--save-from RUN_DIR and --name NAME go together" in capsys.readouterr().err


def test_estimate_of_an_unknown_small_model_uses_all_its_blocks_and_names_the_guesses(tmp_path, capsys):
    from macfinetune.cli.estimate import cmd_estimate

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "weirdnet", "hidden_size": 256,
                                                      "num_hidden_layers": 12, "num_attention_heads": 8,
                                                      "vocab_size": 5000}))
    assert cmd_estimate(parse("estimate", "--model", str(tmp_path), "--memory-gb", "16", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adapted_layers"] == 12  # the default 16 blocks would exceed the model's 12
    assert any("weirdnet" in u for u in report["uncertain"])
    assert any("intermediate_size missing" in u for u in report["uncertain"])


def test_estimate_verdict_and_auto_fit_agree_and_propose_a_quantized_copy(capsys, monkeypatch):
    """Issue 18 item 2: the command that printed 'WILL NOT FIT' and then 'auto-fit: fits as it is'."""
    from macfinetune.cli import estimate as commands_estimate
    from macfinetune.cli.estimate import cmd_estimate

    monkeypatch.setattr(commands_estimate.sys, "platform", "linux")
    args = parse("estimate", "--model", "Qwen/Qwen3-14B", "--quantize", "4", "--batch-size", "1", "--max-seq-length",
                 "512", "--num-layers", "2", "--rank", "4", "--grad-checkpoint", "--memory-gb", "24")
    assert cmd_estimate(args) == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "WILL NOT FIT" in flat and "fits as it is" not in flat
    assert "mlx-community/Qwen3-14B-4bit (about 8.3 GB to download" in flat and "GB = 10^9 bytes" in flat
    assert "training then needs 8.6 GB: fits" in flat  # 9.0 before the chunked loss (auto at 512 x 152k vocab) on Metal
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "time on a Mac (this machine is not a Mac" in flat


def test_estimate_shows_small_models_in_millions(tiny_model, capsys):
    from macfinetune.cli.estimate import cmd_estimate

    assert cmd_estimate(parse("estimate", "--model", str(tiny_model), "--memory-gb", "16")) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "M parameters" in first and "0.00B" not in first


def test_estimate_takes_the_model_from_the_recipe(tiny_model, tmp_path, capsys):
    from macfinetune import cli
    from macfinetune.core.recipe import Recipe, apply_overrides, save_recipe, with_paths

    recipe = tmp_path / "r.yaml"
    save_recipe(recipe, apply_overrides(with_paths(Recipe(), str(tiny_model), "data.jsonl"),
                                        ["num_layers=-1", "max_seq_length=256"]))
    assert cli.main(["estimate", "--recipe", str(recipe), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(tiny_model)
    assert cli.main(["estimate", "--recipe", "demo-tiny-lora"]) == 2  # a shipped recipe names no model
    assert "pass --model, or a --recipe whose model.path names the model" in capsys.readouterr().err
