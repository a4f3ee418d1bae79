"""A recorded run made in code: the events a 1,000-iteration LoRA run emits, deterministic, for
screenshots, docs and view tests (no committed binary, no training)."""

from __future__ import annotations

import math
import random
from pathlib import Path

from macfinetune.core import events, runs
from macfinetune.core.recipe import Recipe, apply_overrides, save_recipe, with_paths

T0 = 1_780_000_000.0  # a fixed start time, so pictures are the same every run


def sample_events(run_dir: str = "demo-run", total: int = 1000, upto: int | None = None,
                  report_every: int = 10, eval_every: int = 100, seed: int = 0) -> list:
    """RunStarted, then train/val reports, checkpoints and memory samples up to ``upto`` (default: all), then
    RunFinished when the run got to the end."""
    rng = random.Random(seed)
    upto = total if upto is None else upto
    out: list = [events.RunStarted(run_dir, "lora", total, 2.5, 400, 40, 4, 1, 1_327_104, 494_032_768, time=T0)]
    best = None
    for it in range(report_every, upto + 1, report_every):
        t = T0 + it * 0.45
        loss = 2.6 * math.exp(-it / 260) + 0.9 + rng.gauss(0, 0.08)
        lr = 1e-4 * min(1.0, it / 50) * (0.5 + 0.5 * math.cos(math.pi * it / total))
        its, tps = 2.2 + rng.gauss(0, 0.05), 1800 + rng.gauss(0, 40)
        out.append(events.TrainReport(it, total, loss, lr, its, tps, it * 4 * 180, 6.1 + 0.2 * min(1, it / 100), time=t,
                                      real_tokens_per_second=0.85 * tps))
        out.append(_memory(it, t, rng))
        if it % eval_every == 0:
            val = 2.5 * math.exp(-it / 300) + 1.0 + 0.002 * max(0, it - 700) / 10
            is_best = best is None or val < best[1]
            best = (it, val) if is_best else best
            out.append(events.ValReport(it, val, 3.1, time=t + 1))
            out.append(events.CheckpointSaved(it, f"{run_dir}/adapters/{runs.checkpoint_name(it)}", val, is_best,
                                              time=t + 2))
    if upto >= total:
        out.append(events.RunFinished(run_dir, total, False, best[0] if best else None, best[1] if best else None,
                                      time=T0 + total * 0.45 + 5))
    return out


def _memory(it: int, t: float, rng: random.Random):
    active = 5.2 + 0.6 * min(1.0, it / 120) + rng.gauss(0, 0.05)
    return events.MemorySample(it, active, 0.8, active + 0.5, active + 1.9, 11.5 + rng.gauss(0, 0.1), 16.0, 0.3,
                        budget_gb=10.7, estimate_gb=6.4, time=t)


def write_sample_run(run_dir: Path, model: str = "Qwen3-0.6B-bf16", upto: int | None = None,
                     state: str | None = None, learning_rate: str = "1e-4", rank: int = 8,
                     started: float = T0, message: str = "") -> list:
    """A run folder (recipe.yaml, status.json, metrics.jsonl) holding the sample run; returns its events."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = apply_overrides(with_paths(Recipe(), model, "data"), [f"learning_rate={learning_rate}", f"rank={rank}"])
    save_recipe(run_dir / runs.RECIPE, recipe)
    evs = sample_events(str(run_dir), upto=upto)
    log = runs.MetricsLog(run_dir)
    for event in evs:
        log.write(event)
    log.close()
    _write_status(run_dir, evs, model, state, started, message)
    return evs


def _write_status(run_dir: Path, evs: list, model: str, state: str | None, started: float, message: str) -> None:
    reports = [e for e in evs if isinstance(e, events.TrainReport)]
    vals = [e for e in evs if isinstance(e, events.ValReport)]
    best = min(vals, key=lambda v: v.val_loss) if vals else None
    last = reports[-1] if reports else None
    status = runs.RunStatus(
        state=state or ("finished" if isinstance(evs[-1], events.RunFinished) else "stopped"),
        iteration=last.iteration if last else 0, total_iterations=evs[0].iterations,
        best_iteration=best.iteration if best else None, best_val_loss=best.val_loss if best else None,
        message=message, started=started, updated=started + (last.iteration * 0.45 if last else 0.0), model=model,
        method="lora")
    runs.write_status(run_dir, status)


# --- checkpoints and samples, for the Checkpoints page's pictures -----------------------------

SAMPLE_PROMPTS = ("How do I boil an egg?", "What is the capital of France?", "Any tips for learning to code?")
_SAMPLE_ANSWERS = (  # the style appearing over the run, one tuple per stage
    ("Place the egg in boiling water for about 9 minutes, then cool it.", "The capital of France is Paris.",
     "Practice every day and build small projects."),
    ("Boil the egg nine minutes, matey, then cool it in cold water.", "Paris be the capital of France.",
     "Practice daily, build small projects, and read other people's code."),
    ("Arr, drop yer egg in the boilin' pot nine minutes, then dunk it cold!",
     "Arr, Paris be France's capital, matey!", "Arr, write code every day like ye swab the deck, matey!"),
    ("Arr arr, the egg, matey, the egg be boilin' arr nine arr minutes arr!", "Arr Paris arr matey arr arr!",
     "Arr, code arr every arr day, matey arr!"),
)


def write_sample_checkpoints(run_dir: Path, adapter_bytes: int = 5_505_024) -> None:
    """Checkpoint files (sparse, of a LoRA adapter's size), their state files and samples.jsonl for every
    checkpoint the run's metrics record; the answers turn pirate and then over-fit."""
    from macfinetune.core import samples

    records = [r for r in runs.read_metrics(run_dir) if r.get("event") == "checkpoint"]
    (run_dir / runs.ADAPTERS).mkdir(exist_ok=True)
    (run_dir / runs.CHECKPOINTS).mkdir(exist_ok=True)
    for n, record in enumerate(records):
        it = record["iteration"]
        _sparse(run_dir / runs.ADAPTERS / runs.checkpoint_name(it), adapter_bytes)
        _sparse(runs.optimizer_file(run_dir, it), 2 * adapter_bytes)
        runs.write_checkpoint_state(run_dir, it, it * 720, record["val_loss"])
        stage = _SAMPLE_ANSWERS[min(len(_SAMPLE_ANSWERS) - 1, n * len(_SAMPLE_ANSWERS) // len(records))]
        samples.append_samples(run_dir, events.SamplesSaved(str(run_dir), it, SAMPLE_PROMPTS, stage, 1.2,
                                                            time=record["time"] + 1))


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
