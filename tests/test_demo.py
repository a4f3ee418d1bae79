"""The demo, end to end: learning is visible on held-out prompts."""

import pytest

from macfinetune import cli
from macfinetune.core import paths


@pytest.mark.slow
def test_demo_tuned_model_answers_in_the_trained_style(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path / "demo")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "validation loss" in out and "fused model:" in out
    tuned = [line for line in out.splitlines() if line.strip().startswith("tuned:")]
    base = [line for line in out.splitlines() if line.strip().startswith("base :")]
    assert tuned and len(tuned) == len(base)
    assert sum("Arr, matey!" in line for line in tuned) >= len(tuned) - 1
    assert not any("Arr, matey!" in line for line in base)
    assert (tmp_path / "demo" / "fused" / "config.json").exists()
    assert (tmp_path / "demo" / "demo-tiny-lora" / "recipe.yaml").exists()  # the run is named after the demo
    assert f"base model: {paths.demo_model_dir()}" in out
