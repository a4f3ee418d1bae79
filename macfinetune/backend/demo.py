"""The offline demo: tiny model + sample data -> train -> best checkpoint -> fuse -> base vs tuned."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import paths, runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import Stage
from macfinetune.core.paths import shipped
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import load_recipe, with_paths
from macfinetune.core.sampling import Sampling

DEMO_RECIPE = "demo-tiny-lora.yaml"


@dataclass(frozen=True)
class DemoAnswer:
    prompt: str
    base: str
    tuned: str


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    model_dir: Path
    run_dir: Path
    fused_dir: Path | None
    state: str
    first_val_loss: float | None
    best_iteration: int | None
    best_val_loss: float | None
    answers: tuple[DemoAnswer, ...]


def run_demo(out_dir: Path, emit, control: JobControl | None = None, overrides: list[str] | None = None) -> DemoResult:
    from macfinetune.backend import fusing, generation, models, tinymodel, training

    problems = runs.check_new_dir(out_dir, "demo folder")
    if problems:
        raise ProblemError(problems)
    out_dir.mkdir(parents=True)
    model_dir = _demo_model(emit, tinymodel)
    recipe = with_paths(load_recipe(shipped("recipes", DEMO_RECIPE)), str(model_dir), str(shipped("resources", "sample_data")))
    if overrides:
        from macfinetune.core.recipe import apply_overrides

        recipe = apply_overrides(recipe, overrides)
    result = training.train_run(recipe, out_dir / DEMO_RECIPE.removesuffix(".yaml"), emit, control)
    if result.state == "failed" or result.best_iteration is None:
        return DemoResult(out_dir, model_dir, result.run_dir, None, result.state, _first_val(result.run_dir), None, None, ())
    emit(Stage("demo", f"Fusing the best checkpoint (iteration {result.best_iteration})"))
    fused = fusing.fuse(result.run_dir, "best", out_dir / "fused", emit=emit)
    answers = _compare(model_dir, Path(fused.out_dir), emit, models, generation)
    return DemoResult(out_dir, model_dir, result.run_dir, Path(fused.out_dir), result.state, _first_val(result.run_dir),
                      result.best_iteration, result.best_val_loss, answers)


def _demo_model(emit, tinymodel) -> Path:
    """The tiny model, built once into the models folder (``models list`` shows it; runs reuse it)."""
    folder = paths.demo_model_dir()
    if (folder / "config.json").is_file():
        emit(Stage("demo", f"Using the tiny demo model in {folder}"))
        return folder
    emit(Stage("demo", f"Building the tiny model and its tokenizer into {folder}"))
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    tinymodel.build_demo_model(partial)
    try:
        partial.rename(folder)
    except OSError:  # built meanwhile by another demo
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def heldout_prompts() -> list[str]:
    return json.loads(shipped("resources", "sample_data", "heldout.json").read_text(encoding="utf-8"))


def _compare(base_dir: Path, fused_dir: Path, emit, models, generation) -> tuple[DemoAnswer, ...]:
    sampling = Sampling(max_tokens=48, temperature=0.0)
    outputs = {}
    for source, folder in (("base", base_dir), ("tuned", fused_dir)):
        emit(Stage("demo", f"Answering held-out prompts with the {source} model"))
        net, tokenizer, _ = models.load_model(folder)
        outputs[source] = [
            generation.generate(net, tokenizer, p, sampling, source=source).text for p in heldout_prompts()
        ]
    return tuple(DemoAnswer(p, b, t) for p, b, t in zip(heldout_prompts(), outputs["base"], outputs["tuned"], strict=True))


def _first_val(run_dir: Path) -> float | None:
    vals = [r["val_loss"] for r in runs.read_metrics(run_dir) if r.get("event") == "val"]
    return vals[0] if vals else None
