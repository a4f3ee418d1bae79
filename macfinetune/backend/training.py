"""Fine-tune in-process with mlx-lm's trainer, wrapped at its seams.

How a run works (the numbered protocol spans several functions here and in loop.py):
1. ``preflight`` checks everything that needs no MLX (recipe, model folder, data, output folder);
   ``memory_gate`` then asks the estimator whether the run fits this machine (config.json only).
2. ``_load_base`` loads the model; model-dependent checks run before the run folder exists,
   so a bad input never leaves a half-made folder behind.
3. ``_start_run`` creates the folder: recipe.yaml, data/, status.json, adapter_config.json.
4. ``_train`` runs mlx-lm's ``train()`` with ``loop.StepHook`` as its callback after every step
   (reports, validation, atomic checkpoints, health) and ``loop.controlled_batches`` as its
   batch source (pause, stop, fast-forward on resume).
5. ``_finish`` saves the last checkpoint (with validation) and records the final status.
``resume_run`` re-enters at 4 from the newest complete checkpoint of an existing run folder.
"""

from __future__ import annotations

import heapq
import os
import shlex
import shutil
import socket
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from macfinetune.core import calibration, dataset, formats, gate, modelinfo, paths, run_index, runs
from macfinetune.core import hosts as hosts_mod
from macfinetune.core.control import JobControl
from macfinetune.core.events import RunContinued, RunFailed, RunFinished, RunStarted, Stage
from macfinetune.core.modelshape import read_shape
from macfinetune.core.plan import Plan, make_plan, schedule_spec
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, load_recipe, save_recipe
from macfinetune.core.timing import flops_per_token

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
    notes: tuple = ()  # what loading the data decided, e.g. how many chunks the documents became


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    state: str  # finished, stopped, failed
    iteration: int
    best_iteration: int | None
    best_val_loss: float | None
    message: str = ""


# --- 1. preflight -----------------------------------------------------------------------


def preflight(recipe: Recipe, run_dir: Path, hosts: int = 1) -> Preflight:
    """Every check that needs no model: raises ProblemError with all problems found."""
    problems = []
    if not recipe.model.path:
        problems.append(Problem("no model given; set model.path or pass --model", field="model.path"))
    if not recipe.data.path:
        problems.append(Problem("no dataset given; set data.path or pass --data", field="data.path"))
    problems += runs.check_new_dir(run_dir, "run folder")
    if hosts > 1 and recipe.training.objective != "sft":
        problems.append(Problem(f"training.objective: {recipe.training.objective} trains on one Mac; run it without "
                                "--hosts", field="training.objective", value=recipe.training.objective))
    local = Path(recipe.model.path).expanduser()
    if recipe.model.path and (local.exists() or not modelinfo.looks_like_repo_id(recipe.model.path)):
        problems += modelinfo.check_model_folder(local)
    if problems:
        raise ProblemError(problems)
    from macfinetune.backend.hfdata import load_hf_dataset  # imports `datasets` only when called

    train, valid, fmt, _, notes = formats.load_dataset_files(recipe.data.path, recipe.data.mask_prompt,
                                                             load_hf=load_hf_dataset, token_chunks=document_chunks(recipe))
    objective_problem = formats.pairs.objective_problem(recipe.training.objective, fmt, recipe.data.path)
    if objective_problem:
        raise ProblemError(objective_problem)
    if not valid:
        train, valid = dataset.split_rows(train, recipe.data.valid_fraction, recipe.training.seed)
    plan = make_plan(recipe, len(train), len(valid), data_file=recipe.data.path, hosts=hosts)
    return Preflight(recipe, Path(run_dir), train, valid, fmt, plan, tuple(notes) + plan.notes)


def document_chunks(recipe: Recipe) -> formats.TokenChunks:
    """.txt/.md documents become chunks of max_seq_length tokens of the model's tokenizer (loaded if needed)."""
    from macfinetune.backend.tokens import document_encoder

    d = recipe.data
    return formats.TokenChunks(document_encoder(recipe.model.path), d.max_seq_length, d.chunk_overlap)


# --- the run ----------------------------------------------------------------------------


def train_run(recipe: Recipe, run_dir: Path, emit: Emit, control: JobControl | None = None,
              allow_over_budget: bool = False, confirm: Callable[[Problem], bool] | None = None,
              hosts: int = 1, shadow: bool = False) -> RunResult:
    """Train one run to completion, stop or failure. Bad input raises ProblemError before
    anything is written; failures after the run started are recorded in the run folder.

    The memory gate runs before the weights load: a run the estimator says will not fit raises
    ProblemError (field ``memory``) unless ``allow_over_budget`` (the user confirmed beforehand)
    or ``confirm(problem)`` returns True (asked now, e.g. on a terminal).

    ``hosts`` > 1: this process is one of several training together (``backend.rank``); ``shadow``:
    it is not rank 0, and ``run_dir`` is its private scratch copy (not listed among the runs)."""
    from macfinetune.backend import models

    control = control or JobControl()
    pre = preflight(recipe, run_dir, hosts)
    for note in pre.notes:
        emit(Stage("train", note))
    folder = models.resolve_model_path(recipe.model.path)
    models.check_architecture(modelinfo.read_config(folder), folder)  # before any tokenizer reads the config
    tokenizer = check_templates(pre, folder)
    for key, words in _advice(recipe, folder).items():
        emit(Stage("train", f"{key}: {words}"))
    memory = memory_gate(pre, folder, allow_over_budget, confirm, tokenizer)
    if memory.warning:
        emit(Stage("train", memory.warning))
    emit(Stage("train", f"Loading model {recipe.model.path}"))
    model, tokenizer, base_folder = _load_base(pre, folder)
    _check_against_model(pre, model, base_folder)
    run = _start_run(pre, base_folder, emit, remember=not shadow)
    if hosts > 1:
        hosts_mod.write_run_layout(run.dir, hosts, pre.plan.global_batch)
    if memory.estimate is not None:
        calibration.write_run_estimate(run.dir, memory.estimate, flops_per_token(memory.shape, memory.settings),
                                       verdict=memory.verdict, overridden=memory.overridden)
    return _recorded(run, lambda: _train(pre, run, model, tokenizer, emit, control))


def memory_gate(pre: Preflight, folder: Path, allow_over_budget: bool = False,
                confirm: Callable[[Problem], bool] | None = None, tokenizer=None) -> gate.Gate:
    """The estimator's verdict for this run on this machine, from config.json and the longest rows (counted with
    ``tokenizer`` when the caller loaded it already)."""
    from macfinetune.backend.machine_probe import probe_machine

    try:
        shape = read_shape(folder)
    except ProblemError as e:
        return gate.Gate(None, None, None, None, note=str(e))
    longest, machine = longest_row_tokens(pre.train_rows + pre.valid_rows, folder, tokenizer), probe_machine()
    rows = calibration.this_mac_rows(paths.runs_home(), paths.calibration_home())  # this Mac's correction
    try:
        return gate.check(pre.recipe, shape, machine, longest, allow_over_budget, mac_rows=rows)
    except ProblemError as e:
        refusal = next((p for p in e.problems if p.field == "memory"), None)
        if refusal is not None:
            if confirm is not None and confirm(refusal):
                return gate.check(pre.recipe, shape, machine, longest, allow_over_budget=True, mac_rows=rows)
            raise
        # the estimator's own doubts about the settings; the checks against the loaded model decide
        return gate.Gate(None, None, None, None, note=str(e))


def _advice(recipe: Recipe, folder: Path) -> dict[str, str]:
    """Settings the seeds would not choose for this model (core.recommend.advice), said before training."""
    from macfinetune.core.recommend import advice

    try:
        return advice(recipe, read_shape(folder))
    except ProblemError:  # the estimator cannot read this config; loading the model decides
        return {}


_REFUSALS_SHOWN = 5


def check_templates(pre: Preflight, folder: Path):
    """Rows the model's chat template cannot render stop mlx-lm mid-run: refuse them before anything is written,
    naming each row's file and line (as ``data inspect --model`` does). Returns the tokenizer it loaded (None when
    it cannot load: loading the model reports that)."""
    from macfinetune.backend import tokens
    from macfinetune.backend.hfdata import load_hf_dataset

    try:
        tokenizer = tokens.load_tokenizer(folder)
    except ProblemError:
        return None
    if not tokens.template_refusals(pre.train_rows + pre.valid_rows, tokenizer):
        return tokenizer
    data = formats.load_any(pre.recipe.data.path, load_hf=load_hf_dataset)  # again, for the rows' files and lines
    refused = [(split.refs[i], error) for split in data.splits
               for i, error in tokens.template_refusals(split.rows, tokenizer)]
    problems = [Problem(f"the model's chat template cannot render this row ({error}); fix or remove the row, or "
                        "train a model whose template renders it", file=ref.file, line=ref.line,
                        value=None if ref.line else f"row {ref.index + 1}")
                for ref, error in refused[:_REFUSALS_SHOWN]]
    if len(refused) > _REFUSALS_SHOWN:
        inspect = shlex.join(["macfinetune", "data", "inspect", pre.recipe.data.path, "--model", pre.recipe.model.path])
        problems.append(Problem(f"and {len(refused) - _REFUSALS_SHOWN} more rows the template cannot render; "
                                f"{inspect} lists them all", file=refused[0][0].file))
    raise ProblemError(problems)


_LONGEST_SAMPLE = 64  # rows tokenized to find the longest: the longest by characters


def longest_row_tokens(rows: list[dict], folder: Path, tokenizer=None) -> int | None:
    """Tokens of the longest row (as mlx-lm templates it), from the longest rows by characters; ``tokenizer``:
    the model's, when already loaded."""
    from macfinetune.backend import tokens

    rows = heapq.nlargest(_LONGEST_SAMPLE, rows, key=lambda row: len(str(row)))
    try:
        counts = tokens.count_tokens(rows, tokenizer or tokens.load_tokenizer(folder))
    except Exception:  # a tokenizer problem shows when the model loads; assume max_seq_length
        return None
    return max((c.total for c in counts if not c.error), default=None)


def resume_run(run_dir: Path, emit: Emit, control: JobControl | None = None, hosts: int = 1) -> RunResult:
    """Continue an interrupted or stopped run from its newest complete checkpoint.

    A run started on several hosts keeps its global batch (so its data order): it continues on
    any number of hosts that divides it, one Mac included."""
    control = control or JobControl()
    run_dir = Path(run_dir).expanduser()
    _check_resumable(run_dir)
    lock = runs.RunLock(run_dir).acquire()  # before loading: a second resume of the same run is refused now
    try:
        status, start = _check_resumable(run_dir)  # again, holding the folder: the other process may have finished
        runs.remove_partial_files(run_dir)
        return _resume_locked(run_dir, status, start, emit, control, hosts)
    finally:
        lock.release()


def _resume_locked(run_dir: Path, status, start, emit: Emit, control: JobControl, hosts: int) -> RunResult:
    from macfinetune.backend import models

    recipe = load_recipe(run_dir / runs.RECIPE)
    _check_recipe_matches_checkpoints(recipe, run_dir)
    train_rows = dataset.read_jsonl(run_dir / runs.DATA / "train.jsonl")
    valid_rows = dataset.read_jsonl(run_dir / runs.DATA / "valid.jsonl")
    global_batch = hosts_mod.read_global_batch(run_dir)
    if global_batch:
        hosts_mod.resumed_layout(global_batch, hosts, str(run_dir))
    plan = make_plan(recipe, len(train_rows), len(valid_rows), data_file=str(run_dir / runs.DATA), hosts=hosts,
                     global_batch=global_batch)
    pre = Preflight(recipe, run_dir, train_rows, valid_rows, dataset.detect_format(train_rows[0]), plan)
    base = runs.base_model(run_dir) or status.model
    emit(Stage("train", f"Loading model {base}"))
    model, tokenizer, _ = models.load_model(models.resolve_model_path(base))
    run = _Run(run_dir, status, emit)
    run.update(state="running", pid=os.getpid(), host=socket.gethostname(), message="")
    run.emit(RunContinued(str(run_dir), start.iteration))
    return _recorded(run, lambda: _train(pre, run, model, tokenizer, emit, control, start=start))


def _check_recipe_matches_checkpoints(recipe: Recipe, run_dir: Path) -> None:
    """recipe.yaml edited by hand so that the checkpoints no longer fit it (method, rank, blocks) or the run could not
    continue exactly (batch, accumulation: the data order): said before the model loads, naming the key, the
    recipe's value and the run's (the run is not marked failed)."""
    from macfinetune.backend.adapters import read_adapter_config

    config = read_adapter_config(run_dir / runs.ADAPTERS)
    m = recipe.method
    saved = {"method.type": config.get("fine_tune_type", m.type), "method.num_layers": config.get("num_layers", m.num_layers)}
    if m.type != "full":
        saved["method.rank"] = config.get("lora_parameters", {}).get("rank", m.rank)
    first = next((r for r in runs.read_metrics(run_dir) if r.get("event") == "start"), {})
    if first and not hosts_mod.read_global_batch(run_dir):  # one Mac: the data order follows batch and accumulation
        saved["training.batch_size"] = first.get("batch_size", recipe.training.batch_size)
        saved["training.grad_accumulation"] = first.get("grad_accumulation", recipe.training.grad_accumulation)
    now = {"method.type": m.type, "method.num_layers": m.num_layers, "method.rank": m.rank,
           "training.batch_size": recipe.training.batch_size,
           "training.grad_accumulation": recipe.training.grad_accumulation}
    problems = [Problem(f"recipe.yaml sets {key}: {now[key]}, but the run's checkpoints were trained with {value}; a "
                        f"resume keeps the run's settings: put {value} back, or start a new run with the new value",
                        file=str(run_dir / runs.RECIPE), field=key, value=now[key])
                for key, value in saved.items() if value != now[key]]
    if problems:
        raise ProblemError(problems)


def _check_resumable(run_dir: Path) -> tuple[runs.RunStatus, runs.CheckpointState]:
    status = runs.read_status(run_dir)
    if status is None and (run_dir / runs.STATUS).is_file():
        raise ProblemError(Problem(f"{runs.STATUS} cannot be read (damaged or edited by hand); the run's checkpoints "
                                   f"are intact: restore {runs.STATUS} or train again", file=str(run_dir / runs.STATUS)))
    if status is None or not (run_dir / runs.RECIPE).exists():
        raise ProblemError(Problem("not a run folder (no status.json or recipe.yaml)", file=str(run_dir)))
    if status.state in ("running", "paused"):
        raise ProblemError(
            Problem(f"the run is still {status.state} in process {status.pid}; stop it first", file=str(run_dir))
        )
    if status.state == "finished":
        raise ProblemError(Problem("the run already finished; nothing to resume", file=str(run_dir)))
    complete = runs.complete_checkpoints(run_dir)
    if not complete:
        raise ProblemError(
            Problem("the run has no complete checkpoint to resume from; start it again", file=str(run_dir))
        )
    return status, complete[-1]


def _recorded(run: _Run, body) -> RunResult:
    """Run ``body``; once the folder exists a failure is recorded in it, not raised."""
    try:
        return body()
    except Exception as e:
        message = _failure_message(e)
        run.update(state="failed", message=message)
        run.emit(RunFailed(str(run.dir), message, getattr(e, "problems", ())))
        st = run.status
        return RunResult(run.dir, "failed", st.iteration, st.best_iteration, st.best_val_loss, message)
    finally:
        run.close()


def _failure_message(error: Exception) -> str:
    if isinstance(error, ProblemError):
        return str(error)
    return f"{type(error).__name__}: {error}"


# --- 2. model ---------------------------------------------------------------------------


def _load_base(pre: Preflight, folder: Path):
    from macfinetune.backend import models

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

    def __init__(self, run_dir: Path, status: runs.RunStatus, emit: Emit, lock: runs.RunLock | None = None):
        self.dir = run_dir
        self._hold = lock  # the folder's RunLock, let go when the run ends
        self.status = status
        self._emit = emit
        self.log = runs.MetricsLog(run_dir)
        self._lock = threading.Lock()  # the training thread and the watch thread both emit

    def emit(self, event) -> None:
        with self._lock:
            self.log.write(event)
            self._emit(event)

    def update(self, **changes) -> None:
        self.status = replace(self.status, updated=time.time(), **changes)
        runs.write_status(self.dir, self.status)

    def close(self) -> None:
        self.log.close()
        if self._hold is not None:
            self._hold.release()


def _start_run(pre: Preflight, base_folder: Path, emit: Emit, remember: bool = True) -> _Run:
    r = pre.recipe
    run_dir = pre.run_dir
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:  # another run that started at the same moment took the name
        raise ProblemError(Problem("the run folder was just created by another run started at the same moment; "
                                   "start again (or choose another --out)", file=str(run_dir))) from None
    lock = runs.RunLock(run_dir).acquire()
    try:
        resolved = _resolved_recipe(r, base_folder)
        save_recipe(run_dir / runs.RECIPE, resolved, header=_recipe_header(pre))
        data_dir = run_dir / runs.DATA
        data_dir.mkdir()
        dataset.write_jsonl(data_dir / "train.jsonl", pre.train_rows)
        dataset.write_jsonl(data_dir / "valid.jsonl", pre.valid_rows)
        (run_dir / runs.ADAPTERS).mkdir()
        (run_dir / runs.CHECKPOINTS).mkdir()
        status = runs.new_status(str(base_folder), runs.method_label(r.method.type, r.training.objective),
                                 pre.plan.iterations)
        runs.write_status(run_dir, status)
        if remember:
            run_index.remember(run_dir)
    except BaseException:
        lock.release()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return _Run(run_dir, status, emit, lock)


def resolved_recipe(r: Recipe, base_folder: Path) -> Recipe:
    """The recipe with absolute model and data paths, as the run folder keeps it."""
    return _resolved_recipe(r, base_folder)


def _resolved_recipe(r: Recipe, base_folder: Path) -> Recipe:
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


@dataclass
class _Context:
    """Everything one training session shares with the loop's callback and batch wrapper."""

    recipe: Recipe
    plan: Plan
    run: _Run
    model: object
    optimizer: object
    valid_set: object
    control: JobControl
    hook: object = None
    watch: object = None
    trouble: str = ""
    tokenizer: object = None
    sample_prompts: list | None = None  # core.samples.SamplePrompt, when eval.samples is on
    loss: object = None  # the training loss function (backend/attention.py); validation uses it too
    preference: object = None  # DPO/ORPO: backend/preference.Validator, which validates instead


def _train(pre: Preflight, run: _Run, model, tokenizer, emit: Emit, control: JobControl,
           start: runs.CheckpointState | None = None) -> RunResult:
    import mlx.core as mx
    import numpy as np
    from mlx_lm.utils import get_total_parameters

    from macfinetune.backend import adapters, attention, loop, preference, quiet

    r, plan = pre.recipe, pre.plan
    if start is None:
        model, tokenizer = _maybe_quantize(pre, run, model, tokenizer)
    np.random.seed(r.training.seed)
    mx.random.seed(r.training.seed)
    keys = adapters.prepare_model(model, r)
    if start is None:
        adapters.write_adapter_config(run.dir / runs.ADAPTERS, r, keys, run.status.model)
    train_set, valid_set = _datasets(pre, tokenizer)
    if _preference(r):
        run.emit(Stage("train", preference.describe(r)))
        if preference.attach_reference(model, train_set, valid_set, run.dir, r):
            run.emit(Stage("train", "Reference log-probabilities of every pair computed with the starting weights"))
    optimizer = adapters.make_optimizer(r, schedule_spec(r, plan))
    state = loop.LoopState()
    if start is not None:
        adapters.restore_checkpoint(start, model, optimizer)
        mx.random.seed(loop.step_seed(r.training.seed, start.iteration))
        state = _resumed_state(run, start)
    ctx = _Context(r, plan, run, model, optimizer, valid_set, control, loss=attention.make_loss(r.training.loss))
    if _preference(r):
        t = r.training
        ctx.loss = preference.make_loss(t.objective, t.dpo_beta, t.orpo_lambda)
        ctx.preference = preference.Validator(r, plan.val_batch_size)
    ctx.hook = loop.StepHook(ctx, state)
    ctx.tokenizer, ctx.sample_prompts = tokenizer, _sample_prompts(pre)
    ctx.watch = loop.Watch(run.emit, state, *_budget_and_estimate(run.dir))
    run.emit(
        RunStarted(str(run.dir), runs.method_label(r.method.type, r.training.objective), plan.iterations,
                   plan.epochs, plan.train_rows, plan.valid_rows,
                   plan.batch_size, plan.grad_accumulation, adapters.count_trainable(model),
                   get_total_parameters(model))
    )
    say = quiet.once(lambda text: emit(Stage("train", text)))  # mlx-lm's warnings: each kind once, in our words
    with _training_paths(model, r, run):
        return _run_trainer(ctx, model, optimizer, train_set, start, state, say)


def _training_paths(model, r: Recipe, run: _Run):
    """The attention and loss the recipe asks for (backend/attention.py), for this run only."""
    import contextlib

    from macfinetune.backend import attention

    if r.training.attention == "stock" and not r.data.packing:
        return contextlib.nullcontext()  # exactly mlx-lm's attention
    return attention.training_paths(model, r.training.attention)


def _run_trainer(ctx: _Context, model, optimizer, train_set, start, state, say) -> RunResult:
    from mlx_lm.tuner.trainer import TrainingArgs, train

    from macfinetune.backend import attention, batching, hardware, loop, quiet

    r, plan, run, control = ctx.recipe, ctx.plan, ctx.run, ctx.control
    train_loss = (attention.make_packed_loss(r.training.loss, batching.longest_row(train_set, r.data.max_seq_length))
                  if r.data.packing else ctx.loss)
    note = batching.describe(train_set, r, r.training.seed)
    if note:
        run.emit(Stage("train", note))
    if start is None:
        with quiet.quiet_trainer(say):
            ctx.hook.validate_and_maybe_save(0, save=False)
    args = TrainingArgs(
        batch_size=plan.global_batch or plan.batch_size,  # mlx-lm gives each host its share
        iters=plan.iterations - state.iteration,
        val_batches=r.eval.val_batches,
        steps_per_report=1,
        steps_per_eval=plan.iterations + 1,
        steps_per_save=plan.iterations + 1,
        max_seq_length=r.data.max_seq_length,
        adapter_file=str(run.dir / runs.CHECKPOINTS / _SCRATCH),
        grad_checkpoint=r.training.grad_checkpoint,
        grad_accumulation_steps=plan.grad_accumulation,
    )
    batches = loop.controlled_batches(control, *loop.pause_events(ctx), skip=state.iteration,
                                      accumulation=plan.grad_accumulation, on_step=ctx.watch.step_began,
                                      agree=loop.agree_on_stop if plan.hosts > 1 else None,
                                      on_batch=_batch_taken(ctx),
                                      source=_batch_source(r),
                                      on_remote_pause=lambda: _paused_for_another_mac(ctx))
    layer_class = type(model.layers[0])
    original_call = layer_class.__call__
    hardware.apply_cache_limit(hardware.apply_memory_limit(), calibration.read_run_estimate(run.dir))
    try:
        with quiet.quiet_trainer(say), hardware.keep_awake(), ctx.watch:
            if args.iters > 0:
                train(model, optimizer, train_set, None, args, loss=train_loss, iterate_batches=batches,
                      training_callback=ctx.hook)
    finally:
        layer_class.__call__ = original_call  # mlx-lm patches the block class for checkpointing
        (run.dir / runs.CHECKPOINTS / _SCRATCH).unlink(missing_ok=True)
    with quiet.quiet_trainer(say):  # the last validation batches too
        return _finish(ctx, stopped=control.stop_requested)


def _preference(r: Recipe) -> bool:
    return r.training.objective != "sft"


def _batch_taken(ctx: _Context):
    """The batch wrapper's ``on_batch``: the loop's token count, and for preference runs the measures of
    each report step's batch before its update (``preference.Validator.batch_report``)."""
    if ctx.preference is None:
        return ctx.hook.batch_taken

    def taken(batch) -> None:
        ctx.hook.batch_taken(batch)
        it, ev = ctx.hook.state.iteration + 1, ctx.recipe.eval
        if it % ev.report_every == 0 or it == ctx.plan.iterations:
            ctx.run.emit(ctx.preference.batch_report(ctx.model, batch, it))

    return taken


def _batch_source(r: Recipe):
    from macfinetune.backend import batching, preference

    if _preference(r):
        return preference.batch_source(r.training.seed)
    return batching.batch_source(r, r.training.seed)


def _sample_prompts(pre: Preflight) -> list | None:
    """The prompts every checkpoint answers (eval.samples), from the recipe or the validation rows."""
    from macfinetune.core import samples

    ev = pre.recipe.eval
    rows = pre.valid_rows
    if rows and formats.pairs.is_pair(rows[0]):  # a pair's prompt is what the checkpoints answer
        rows = [formats.pairs.pair_as_chat(row) for row in rows]
    return samples.prompts_for(ev.sample_prompts, rows, ev.sample_count) if ev.samples else None


def _budget_and_estimate(run_dir: Path) -> tuple[float | None, float | None]:
    """The usable memory and the estimate the gate judged this run by (estimate.json), in GB."""
    record = calibration.read_run_estimate(run_dir) or {}
    return record.get("usable_gb"), record.get("total_gb")


def _resumed_state(run: _Run, start: runs.CheckpointState):
    from macfinetune.backend.loop import LoopState

    status = run.status
    return LoopState(iteration=start.iteration, trained_tokens=start.trained_tokens,
                     best_iteration=status.best_iteration, best_val_loss=status.best_val_loss,
                     last_saved=start.iteration)


def _maybe_quantize(pre: Preflight, run: _Run, model, tokenizer):
    from macfinetune.backend import models

    q = pre.recipe.model
    if not q.quantize:
        return model, tokenizer
    run.emit(Stage("train", f"Quantizing the base model to {q.quantize} bits into the run folder"))
    base = run.dir / runs.BASE_MODEL
    model, tokenizer, _ = models.quantize_into(Path(run.status.model), base, q.quantize, q.quantize_group_size,
                                               loaded=(model, tokenizer))
    run.update(model=str(base))
    return model, tokenizer


def _datasets(pre: Preflight, tokenizer):
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset

    if _preference(pre.recipe):
        from macfinetune.backend import preference

        return preference.datasets(pre.train_rows, pre.valid_rows, tokenizer)

    options = types.SimpleNamespace(mask_prompt=pre.recipe.data.mask_prompt)
    train = CacheDataset(create_dataset(pre.train_rows, tokenizer, options))
    valid = CacheDataset(create_dataset(pre.valid_rows, tokenizer, options))
    return train, valid


def validation_loss(model, valid_set, pre: Preflight) -> float:
    """The validation loss the run logs for a model's current weights."""
    from macfinetune.backend.loop import validation_loss as loss

    p, r = pre.plan, pre.recipe
    return loss(model, valid_set, p.val_batch_size, r.eval.val_batches, r.data.max_seq_length, r.training.seed)


# --- 6. the end -------------------------------------------------------------------------


def _finish(ctx: _Context, stopped: bool) -> RunResult:
    s, run = ctx.hook.state, ctx.run
    it = s.iteration
    if it > 0 and s.last_saved != it and not s.save_failed:
        ctx.hook.validate_and_maybe_save(it, save=True)
    state = "stopped" if stopped and it < ctx.plan.iterations and not s.stop_reason.startswith("early") else "finished"
    run.update(state=state, iteration=it, message=s.stop_reason)
    run.emit(RunFinished(str(run.dir), it, state == "stopped", s.best_iteration, s.best_val_loss, s.stop_reason))
    return RunResult(run.dir, state, it, s.best_iteration, s.best_val_loss, s.stop_reason)


def _paused_for_another_mac(ctx) -> None:
    """A multi-Mac run paused because another Mac asked (its memory pressure, or a pause sent to all)."""
    if not ctx.trouble:
        ctx.trouble = "paused on every Mac of the run: one of them is short of memory or was paused"
