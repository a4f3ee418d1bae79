"""Samples at checkpoints: written to samples.jsonl and announced, without changing the run."""

from __future__ import annotations

from conftest import fast_recipe

from macfinetune.backend.training import train_run
from macfinetune.core import runs, samples
from macfinetune.core.dataset import read_jsonl
from macfinetune.core.events import CheckpointSaved, SamplesSaved

SAMPLES_ON = ["samples=true", "sample_count=2", "sample_max_tokens=6"]


def _losses(run_dir):
    return [(r["event"], r["iteration"], r.get("train_loss"), r.get("val_loss")) for r in runs.read_metrics(run_dir)
            if r["event"] in ("train", "val", "checkpoint")]


def test_samples_at_every_checkpoint_leave_the_run_unchanged(tiny_model, tmp_path):
    """Dropout on: a model left in eval mode, or a changed RNG or data order, would change the losses."""
    seen = []
    on = train_run(fast_recipe(tiny_model, "dropout=0.3", *SAMPLES_ON), tmp_path / "on", seen.append)
    off = train_run(fast_recipe(tiny_model, "dropout=0.3"), tmp_path / "off", lambda e: None)
    assert on.state == off.state == "finished"
    assert _losses(tmp_path / "on") == _losses(tmp_path / "off")
    assert not (tmp_path / "off" / samples.SAMPLES).exists()
    written = samples.read_samples(tmp_path / "on")
    assert sorted(written) == [4, 8, 12]
    valid = read_jsonl(tmp_path / "on" / runs.DATA / "valid.jsonl")
    expected = [p.shown for p in samples.prompts_for((), valid, 2)]
    assert all([p for p, _ in pairs] == expected for pairs in written.values())
    assert all(isinstance(t, str) for pairs in written.values() for _, t in pairs)
    order = [(type(e).__name__, e.iteration) for e in seen if isinstance(e, (CheckpointSaved, SamplesSaved))]
    assert order == [(name, it) for it in (4, 8, 12) for name in ("CheckpointSaved", "SamplesSaved")]


def test_recipe_prompts_are_answered(tiny_model, tmp_path):
    recipe = fast_recipe(tiny_model, "iterations=4", "samples=true", "sample_max_tokens=4")
    from dataclasses import replace

    recipe = replace(recipe, eval=replace(recipe.eval, sample_prompts=("Say hi", "Say bye")))
    train_run(recipe, tmp_path / "run", lambda e: None)
    assert [p for p, _ in samples.read_samples(tmp_path / "run")[4]] == ["Say hi", "Say bye"]
