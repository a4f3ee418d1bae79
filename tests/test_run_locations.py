"""Run folders found where they are now: moved QLoRA runs, bare run names, fused models with --adapter."""

import json
import shutil

import pytest
from conftest import fast_recipe

from macfinetune import cli
from macfinetune.core import runs


def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


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
