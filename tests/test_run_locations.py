"""Run folders found where they are now: moved QLoRA runs, bare run names, fused models with --adapter."""

import json
import shutil

import pytest
from conftest import fast_recipe, run_cli

from macfinetune.core import runs


@pytest.fixture(scope="module")
def qlora_run(tiny_model, tmp_path_factory):
    """A run that quantized its base on the fly into RUN/base_model, fused once in place."""
    from macfinetune.backend import fusing
    from macfinetune.backend.training import train_run

    run_dir = tmp_path_factory.mktemp("qlora") / "run"
    result = train_run(fast_recipe(tiny_model, "quantize=4", "iterations=4"), run_dir, lambda e: None)
    assert result.state == "finished"
    assert runs.read_status(run_dir).model == str(run_dir / runs.BASE_MODEL)
    fusing.fuse(run_dir, "best", None)
    return run_dir


@pytest.fixture
def moved_qlora(qlora_run, tmp_path):
    moved = tmp_path / "renamed"
    shutil.copytree(qlora_run, moved, symlinks=True)
    # the original is gone, as after `mv`
    hidden = qlora_run.with_name("hidden")
    qlora_run.rename(hidden)
    yield moved
    hidden.rename(qlora_run)


def test_moved_qlora_run_generates_fuses_and_exports(capsys, moved_qlora, tmp_path):
    code, out, err = run_cli(capsys, "generate", "--adapter", moved_qlora, "--prompt", "hi", "--max-tokens", "3",
                             "--temp", "0")
    assert code == 0, err
    code, out, err = run_cli(capsys, "fuse", moved_qlora, "--checkpoint", "last", "--out", tmp_path / "fused")
    assert code == 0, err
    assert json.loads((tmp_path / "fused" / "macfinetune.json").read_text())["base_model"] == str(
        (moved_qlora / runs.BASE_MODEL).resolve())
    code, out, err = run_cli(capsys, "export", moved_qlora, "--target", "mlx", "--checkpoint", "last",
                             "--out", tmp_path / "export")
    assert code == 0, err


def test_fused_model_inside_a_moved_run_still_compares_with_its_base(capsys, moved_qlora):
    code, out, err = run_cli(capsys, "generate", "--model", moved_qlora / "fused-best", "--compare",
                             "--prompt", "hi", "--max-tokens", "3", "--temp", "0")
    assert code == 0, err
    assert "[base]" in err and "[tuned]" in err


def test_missing_base_model_suggests_model_option(capsys, tiny_model, tmp_path):
    from macfinetune.backend.training import train_run

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    run_dir = tmp_path / "run"
    assert train_run(fast_recipe(base, "iterations=4"), run_dir, lambda e: None).state == "finished"
    base.rename(tmp_path / "base-moved")
    code, out, err = run_cli(capsys, "generate", "--adapter", run_dir, "--prompt", "hi", "--max-tokens", "2")
    assert code == 2
    assert str(base) in err and "--model" in err
    code, out, err = run_cli(capsys, "generate", "--adapter", run_dir, "--model", tmp_path / "base-moved",
                             "--prompt", "hi", "--max-tokens", "2")
    assert code == 0, err


@pytest.fixture(scope="module")
def fused_lora(trained_run, tmp_path_factory):
    from macfinetune.backend import fusing

    out = tmp_path_factory.mktemp("fused") / "fused"
    fusing.fuse(trained_run, "best", out)
    return out


@pytest.mark.parametrize("compare", [False, True])
def test_adapter_on_a_model_that_already_has_it_fused_is_refused(capsys, trained_run, fused_lora, compare):
    code, out, err = run_cli(capsys, "generate", "--model", fused_lora, "--adapter", trained_run, "--prompt", "hi",
                             "--max-tokens", "2", *(["--compare"] if compare else []))
    assert code == 2
    assert "already" in err and str(fused_lora) in err and str(trained_run) in err
    assert "--- base ---" not in out and "[base]" not in err


def test_a_fused_model_without_its_run_recorded_is_recognised_by_its_base(capsys, trained_run, fused_lora, tmp_path):
    old = tmp_path / "old-fused"
    shutil.copytree(fused_lora, old)
    (old / "macfinetune.json").write_text(json.dumps({"base_model": runs.base_model(trained_run)}))
    code, out, err = run_cli(capsys, "generate", "--model", old, "--adapter", trained_run, "--prompt", "hi",
                             "--max-tokens", "2")
    assert code == 2 and "already" in err


def test_adapter_on_another_base_is_warned_about(capsys, trained_run, tiny_model_q4):
    code, out, err = run_cli(capsys, "generate", "--model", tiny_model_q4, "--adapter", trained_run, "--prompt", "hi",
                             "--max-tokens", "2", "--temp", "0")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(tiny_model_q4) in warnings[0] and runs.base_model(trained_run) in warnings[0]
    code, out, err = run_cli(capsys, "generate", "--model", runs.base_model(trained_run), "--adapter", trained_run,
                             "--prompt", "hi", "--max-tokens", "2", "--temp", "0")
    assert code == 0 and "warning" not in err


@pytest.fixture
def named_run(trained_run, tmp_path, monkeypatch):
    """A run in the runs folder, called by the name `macfinetune runs` shows, from another working folder."""
    from macfinetune.core import paths

    name = "20990101-000000-tiny-lora"
    shutil.copytree(trained_run, paths.runs_home() / name)
    monkeypatch.chdir(tmp_path)
    yield name
    shutil.rmtree(paths.runs_home() / name)


def test_a_run_is_taken_by_the_name_runs_shows(capsys, named_run, tmp_path):
    from macfinetune.core import paths

    code, out, err = run_cli(capsys, "runs")
    assert named_run in out
    code, out, err = run_cli(capsys, "generate", "--adapter", f"{named_run}:last", "--prompt", "hi",
                             "--max-tokens", "2", "--temp", "0")
    assert code == 0, err
    code, out, err = run_cli(capsys, "fuse", named_run, "--checkpoint", "last")
    assert code == 0, err
    assert (paths.runs_home() / named_run / "fused-last" / "config.json").is_file()
    code, out, err = run_cli(capsys, "export", named_run, "--target", "mlx", "--checkpoint", "last",
                             "--out", tmp_path / "exported")
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "--resume", named_run)
    assert "not a run folder" not in err
    assert str(paths.runs_home() / named_run) in out + err


def test_a_path_still_wins_over_a_run_name(capsys, named_run, tmp_path, trained_run):
    local = tmp_path / named_run
    shutil.copytree(trained_run, local)
    code, out, err = run_cli(capsys, "fuse", named_run, "--checkpoint", "last")
    assert code == 0, err
    assert (local / "fused-last").is_dir()


def test_recommend_alpha_reason_states_the_scale_it_writes(capsys, tiny_model, tmp_path):
    import re

    import yaml
    from conftest import SAMPLE_DATA

    out_file = tmp_path / "r.yaml"
    code, out, err = run_cli(capsys, "recommend", "--model", tiny_model, "--data", SAMPLE_DATA, "--out", out_file)
    assert code == 0, err
    method = yaml.safe_load(out_file.read_text())["method"]
    line = next(x for x in out.splitlines() if "method.alpha" in x)
    scale = float(re.search(r"scale alpha / rank = ([\d.]+)", line).group(1))
    assert scale == method["alpha"] / method["rank"]
    assert f"alpha = {scale:g} x rank" in line


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_runs_in_a_folder_that_is_not_there_is_an_error(capsys, tmp_path, kind):
    target = tmp_path / "nothing"
    if kind == "file":
        target.write_text("x")
    code, out, err = run_cli(capsys, "runs", "--in", target)
    assert code == 2
    assert str(target) in err and "no runs yet" not in out
