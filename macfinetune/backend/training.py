"""Fine-tune in-process with mlx-lm's trainer, wrapped at its seams.

How a run works (the numbered protocol spans several functions here):
1. ``preflight`` checks everything that needs no MLX (recipe, model folder, data, output folder).
2. ``_load_base`` loads the model; model-dependent checks run before the run folder exists,
   so a bad input never leaves a half-made folder behind.
3. ``_start_run`` creates the folder: recipe.yaml, data/, status.json, adapter_config.json.
4. mlx-lm's ``train()`` runs with ``steps_per_report=1`` and no validation set of its own; our
   ``_Hook`` callback aggregates reports, validates and saves atomic checkpoints at our intervals,
   so every checkpoint carries the validation loss of exactly its weights.
5. ``_controlled_batches`` wraps ``iterate_batches``: it blocks while paused and stops yielding
   when a stop is requested, which ends ``train()`` normally after the current step.
6. ``_finish`` saves the last checkpoint (with validation) and records the final status.
"""

from __future__ import annotations

import math
import shutil
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from macfinetune.core import dataset, modelinfo, runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import (
    CheckpointSaved,
    RunFailed,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    Stage,
    TrainReport,
    ValReport,
)
from macfinetune.core.plan import Plan, make_plan, schedule_spec
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, save_recipe

Emit = Callable[[object], None]
_SCRATCH = ".mlx_lm_final.safetensors"


@dataclass(frozen=True)
class Preflight:
    recipe: Recipe
    run_dir: Path
    train_rows: list
    valid_rows: list
    format: str
    plan: Plan


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    state: str  # finished, stopped, failed
    iteration: int
    best_iteration: int | None
    best_val_loss: float | None
    message: str = ""


# --- 1. preflight -----------------------------------------------------------------------


def preflight(recipe: Recipe, run_dir: Path) -> Preflight:
    """Every check that needs no model: raises ProblemError with all problems found."""
    problems = []
    if not recipe.model.path:
        problems.append(Problem("no model given; set model.path or pass --model", field="model.path"))
    if not recipe.data.path:
        problems.append(Problem("no dataset given; set data.path or pass --data", field="data.path"))
    problems += runs.check_new_dir(run_dir, "run folder")
    local = Path(recipe.model.path).expanduser()
    if recipe.model.path and (local.exists() or not modelinfo.looks_like_repo_id(recipe.model.path)):
        problems += modelinfo.check_model_folder(local)
    if problems:
        raise ProblemError(problems)
    train, valid, fmt, _ = dataset.load_dataset_files(recipe.data.path, recipe.data.mask_prompt)
    if not valid:
        train, valid = dataset.split_rows(train, recipe.data.valid_fraction, recipe.training.seed)
    plan = make_plan(recipe, len(train), len(valid), data_file=recipe.data.path)
    return Preflight(recipe, Path(run_dir), train, valid, fmt, plan)


# --- the run ----------------------------------------------------------------------------


def train_run(recipe: Recipe, run_dir: Path, emit: Emit, control: JobControl | None = None) -> RunResult:
    """Train one run to completion, stop or failure. Bad input raises ProblemError before
    anything is written; failures after the run started are recorded in the run folder."""
    control = control or JobControl()
    pre = preflight(recipe, run_dir)
    emit(Stage("train", f"Loading model {recipe.model.path}"))
    model, tokenizer, base_folder = _load_base(pre)
    _check_against_model(pre, model, base_folder)
    run = _start_run(pre, base_folder, emit)
    try:
        return _train(pre, run, model, tokenizer, emit, control)
    except Exception as e:  # anything after the folder exists is recorded, not raised
        message = _failure_message(e)
        run.update(state="failed", message=message)
        run.emit(RunFailed(str(run.dir), message, getattr(e, "problems", ())))
        return RunResult(run.dir, "failed", run.status.iteration, run.best_iteration, run.best_val_loss, message)
    finally:
        run.close()


def _failure_message(error: Exception) -> str:
    if isinstance(error, ProblemError):
        return str(error)
    return f"{type(error).__name__}: {error}"


# --- 2. model ---------------------------------------------------------------------------


def _load_base(pre: Preflight):
    from macfinetune.backend import models

    folder = models.resolve_model_path(pre.recipe.model.path)
    model, tokenizer, config = models.load_model(folder)
    return model, tokenizer, folder


def _check_against_model(pre: Preflight, model, folder: Path) -> None:
    from macfinetune.backend import adapters

    r = pre.recipe
    n_layers = len(model.layers)
    problems = []
    if r.method.num_layers > n_layers:
        problems.append(
            Problem(
                f"the model has {n_layers} layers; method.num_layers must be 1..{n_layers} or -1",
                field="method.num_layers",
                value=r.method.num_layers,
            )
        )
    bits = modelinfo.quantization_bits(modelinfo.read_config(folder))
    if bits and r.method.type == "full":
        problems.append(
            Problem(
                f"the model is {bits}-bit quantized; full fine-tuning needs full-precision weights "
                "(use method.type: lora for QLoRA, or a bf16/fp16 model)",
                field="method.type",
                value="full",
            )
        )
    if bits and r.model.quantize:
        problems.append(
            Problem(f"the model is already {bits}-bit; set model.quantize: null", field="model.quantize", value=r.model.quantize)
        )
    if problems:
        raise ProblemError(problems)
    if r.method.type != "full":
        adapters.resolve_keys(model, r.method.target_modules)


# --- 3. the run folder ------------------------------------------------------------------


class _Run:
    """The live run folder: status, metrics log and the best checkpoint so far."""

    def __init__(self, run_dir: Path, status: runs.RunStatus, emit: Emit):
        self.dir = run_dir
        self.status = status
        self._emit = emit
        self.log = runs.MetricsLog(run_dir)
        self.best_iteration: int | None = None
        self.best_val_loss: float | None = None

    def emit(self, event) -> None:
        self.log.write(event)
        self._emit(event)

    def update(self, **changes) -> None:
        self.status = replace(self.status, updated=time.time(), **changes)
        runs.write_status(self.dir, self.status)

    def note_checkpoint(self, iteration: int, val_loss: float | None) -> bool:
        if val_loss is None or (self.best_val_loss is not None and val_loss >= self.best_val_loss):
            return False
        self.best_iteration, self.best_val_loss = iteration, val_loss
        return True

    def close(self) -> None:
        self.log.close()


def _start_run(pre: Preflight, base_folder: Path, emit: Emit) -> _Run:
    r = pre.recipe
    run_dir = pre.run_dir
    run_dir.mkdir(parents=True)
    try:
        resolved = _resolved_recipe(r, base_folder, run_dir)
        save_recipe(run_dir / runs.RECIPE, resolved, header=_recipe_header(pre))
        data_dir = run_dir / runs.DATA
        data_dir.mkdir()
        dataset.write_jsonl(data_dir / "train.jsonl", pre.train_rows)
        dataset.write_jsonl(data_dir / "valid.jsonl", pre.valid_rows)
        (run_dir / runs.ADAPTERS).mkdir()
        (run_dir / runs.CHECKPOINTS).mkdir()
        status = runs.new_status(str(base_folder), r.method.type, pre.plan.iterations)
        runs.write_status(run_dir, status)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return _Run(run_dir, status, emit)


def _resolved_recipe(r: Recipe, base_folder: Path, run_dir: Path) -> Recipe:
    data_path = str(Path(r.data.path).expanduser().resolve())
    model_path = r.model.path if not Path(r.model.path).expanduser().exists() else str(base_folder)
    return replace(r, model=replace(r.model, path=model_path), data=replace(r.data, path=data_path))


def _recipe_header(pre: Preflight) -> str:
    p = pre.plan
    return (
        "Resolved settings of this run (reload with: macfinetune train recipe.yaml).\n"
        f"iterations {p.iterations} = {p.epochs:.2f} epochs of {p.train_rows} training rows at batch {p.batch_size}; "
        f"effective batch {p.effective_batch}; {p.optimizer_updates} optimizer updates, {p.warmup_updates} of warmup; "
        f"LoRA scale = alpha / rank = {p.lora_scale:g}; {p.valid_rows} validation rows."
    )


# --- 4. training ------------------------------------------------------------------------


def _train(pre: Preflight, run: _Run, model, tokenizer, emit: Emit, control: JobControl) -> RunResult:
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.utils import get_total_parameters

    from macfinetune.backend import adapters, quiet

    r, plan = pre.recipe, pre.plan
    model, tokenizer = _maybe_quantize(pre, run, model, tokenizer)
    np.random.seed(r.training.seed)
    mx.random.seed(r.training.seed)
    keys = adapters.prepare_model(model, r)
    adapters.write_adapter_config(run.dir / runs.ADAPTERS, r, keys, run.status.model)
    train_set, valid_set = _datasets(pre, tokenizer)
    optimizer = adapters.make_optimizer(r, schedule_spec(r, plan))
    trainable = adapters.count_trainable(model)
    run.emit(
        RunStarted(str(run.dir), r.method.type, plan.iterations, plan.epochs, plan.train_rows, plan.valid_rows,
                   plan.batch_size, plan.grad_accumulation, trainable, get_total_parameters(model))
    )
    hook = _Hook(pre, run, model, optimizer, valid_set, emit)
    hook.validate_and_maybe_save(0, save=False)
    args = TrainingArgs(
        batch_size=plan.batch_size,
        iters=plan.iterations,
        val_batches=r.eval.val_batches,
        steps_per_report=1,
        steps_per_eval=plan.iterations + 1,
        steps_per_save=plan.iterations + 1,
        max_seq_length=r.data.max_seq_length,
        adapter_file=str(run.dir / runs.CHECKPOINTS / _SCRATCH),
        grad_checkpoint=r.training.grad_checkpoint,
        grad_accumulation_steps=plan.grad_accumulation,
    )
    layer_class = type(model.layers[0])
    original_call = layer_class.__call__
    batches = _controlled_batches(control, run, hook)
    try:
        with quiet.quiet_trainer(lambda text: emit(Stage("train", text))):
            train(model, optimizer, train_set, None, args, iterate_batches=batches, training_callback=hook)
    finally:
        layer_class.__call__ = original_call  # mlx-lm patches the block class for checkpointing
        (run.dir / runs.CHECKPOINTS / _SCRATCH).unlink(missing_ok=True)
    return _finish(run, hook, stopped=control.stop_requested)


def _maybe_quantize(pre: Preflight, run: _Run, model, tokenizer):
    from macfinetune.backend import models

    q = pre.recipe.model
    if not q.quantize:
        return model, tokenizer
    run.emit(Stage("train", f"Quantizing the base model to {q.quantize} bits into the run folder"))
    base = run.dir / runs.BASE_MODEL
    model, tokenizer, _ = models.quantize_into(Path(run.status.model), base, q.quantize, q.quantize_group_size)
    run.update(model=str(base))
    return model, tokenizer


def _datasets(pre: Preflight, tokenizer):
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset

    options = types.SimpleNamespace(mask_prompt=pre.recipe.data.mask_prompt)
    train = CacheDataset(create_dataset(pre.train_rows, tokenizer, options))
    valid = CacheDataset(create_dataset(pre.valid_rows, tokenizer, options))
    return train, valid


# --- 5. the seams: batches and callback -------------------------------------------------


def _controlled_batches(control: JobControl, run: _Run, hook: _Hook):
    """mlx-lm's iterate_batches, honouring pause and stop between steps."""
    from mlx_lm.tuner.trainer import iterate_batches

    def batches(**kwargs):
        for batch in iterate_batches(**kwargs):
            if control.paused:
                run.update(state="paused")
                run.emit(RunPaused(hook.iteration))
                control.wait_while_paused()
                run.update(state="running")
                run.emit(RunResumed(hook.iteration))
            if control.stop_requested:
                return
            yield batch

    return batches


class _Hook:
    """mlx-lm TrainingCallback called after every step (steps_per_report=1)."""

    def __init__(self, pre: Preflight, run: _Run, model, optimizer, valid_set, emit: Emit):
        self.pre, self.run, self.model, self.optimizer = pre, run, model, optimizer
        self.valid_set = valid_set
        self.iteration = 0
        self.last_saved = -1
        self._window = _Window()

    def on_train_loss_report(self, info: dict) -> None:
        it = info["iteration"]
        self.iteration = it
        self._window.add(info)
        every = self.pre.recipe.eval
        total = self.pre.plan.iterations
        if it % every.report_every == 0 or it == total:
            self.run.emit(self._window.report(it, total, info))
            self.run.update(iteration=it)
        if it % every.save_every == 0 and it != total:
            self.validate_and_maybe_save(it, save=True)
        elif it % every.eval_every == 0 and it != total:
            self.validate_and_maybe_save(it, save=False)

    def on_val_loss_report(self, info: dict) -> None:  # mlx-lm validates nothing itself here
        pass

    def validate_and_maybe_save(self, iteration: int, save: bool) -> None:
        val_loss = self._validate(iteration)
        if save:
            self._save(iteration, val_loss)

    def _validate(self, iteration: int) -> float | None:
        if not len(self.valid_set):
            return None
        tic = time.perf_counter()
        loss = validation_loss(self.model, self.valid_set, self.pre)
        self.model.train()
        self.run.emit(ValReport(iteration, loss, time.perf_counter() - tic))
        return loss

    def _save(self, iteration: int, val_loss: float | None) -> None:
        from macfinetune.backend import adapters

        path = adapters.save_checkpoint(self.run.dir, iteration, self.model, self.optimizer)
        is_best = self.run.note_checkpoint(iteration, val_loss)
        self.last_saved = iteration
        if is_best:
            self.run.update(best_iteration=iteration, best_val_loss=val_loss)
        self.run.emit(CheckpointSaved(iteration, str(path), val_loss, is_best))


def validation_loss(model, valid_set, pre: Preflight) -> float:
    """mlx-lm's evaluate on the same validation batches every time.

    mlx-lm draws the batches from NumPy's global RNG: unseeded, each checkpoint would be judged
    on a different subset, and validating would shift the training data order. So seed it for
    the pass and restore it afterwards."""
    import numpy as np
    from mlx_lm.tuner.trainer import evaluate

    saved = np.random.get_state()
    np.random.seed(pre.recipe.training.seed)
    try:
        return evaluate(
            model,
            valid_set,
            batch_size=pre.plan.val_batch_size,
            num_batches=pre.recipe.eval.val_batches,
            max_seq_length=pre.recipe.data.max_seq_length,
        )
    finally:
        np.random.set_state(saved)


class _Window:
    """Sums per-step reports into one report over the reporting window."""

    def __init__(self):
        self.steps = 0
        self.loss = 0.0
        self.seconds = 0.0
        self.tokens = 0.0

    def add(self, info: dict) -> None:
        seconds = 1.0 / info["iterations_per_second"] if info["iterations_per_second"] else 0.0
        self.steps += 1
        self.loss += info["train_loss"]
        self.seconds += seconds
        self.tokens += info["tokens_per_second"] * seconds

    def report(self, it: int, total: int, info: dict) -> TrainReport:
        seconds = self.seconds or math.inf
        out = TrainReport(
            iteration=it,
            total_iterations=total,
            train_loss=self.loss / self.steps,
            learning_rate=float(info["learning_rate"]),
            iterations_per_second=self.steps / seconds,
            tokens_per_second=self.tokens / seconds,
            trained_tokens=int(info["trained_tokens"]),
            peak_memory_gb=float(info["peak_memory"]),
        )
        self.__init__()
        return out


# --- 6. the end -------------------------------------------------------------------------


def _finish(run: _Run, hook: _Hook, stopped: bool) -> RunResult:
    it = hook.iteration
    if it > 0 and hook.last_saved != it:
        hook.validate_and_maybe_save(it, save=True)
    state = "stopped" if stopped and it < hook.pre.plan.iterations else "finished"
    run.update(state=state, iteration=it)
    run.emit(RunFinished(str(run.dir), it, state == "stopped", run.best_iteration, run.best_val_loss))
    return RunResult(run.dir, state, it, run.best_iteration, run.best_val_loss)
