"""The seams around mlx-lm's train(): the batch wrapper, the per-step callback, the watch thread.

mlx-lm's train() runs with steps_per_report=1 and no validation set of its own. The callback
(``StepHook``) sees every step: it aggregates reports, validates and saves atomic checkpoints
at our intervals (so each checkpoint carries the validation loss of exactly its weights),
guards the loss and the machine's memory, stops early, and reseeds MLX's RNG from
(seed, iteration) after every step so that a resumed run draws the same random numbers.
The batch wrapper blocks while paused, stops yielding on a stop request, and on resume
fast-forwards past the batches already trained. ``Watch`` is a thread that reads memory with
psutil about once a second and sends heartbeats while a step runs; it never touches MLX.

Update boundaries: with gradient accumulation A, mlx-lm applies an update after every A-th
step of its own counter, which restarts at 1 on resume, and keeps the partial sum in a local.
So every checkpoint (periodic save, stop, early stop, memory trouble) and every validation
happens at an iteration that is a multiple of A: a save that falls due mid-accumulation is
taken at the next update boundary, and a stop finishes the accumulation first. Resuming from
such a checkpoint keeps the update boundaries where an uninterrupted run has them.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from macfinetune.core import atomic, health, runs, samples
from macfinetune.core.control import JobControl
from macfinetune.core.events import (
    CheckpointSaved,
    Heartbeat,
    MemorySample,
    RunPaused,
    RunResumed,
    SamplesSaved,
    Stage,
    TrainReport,
    ValReport,
)

SAMPLE_SECONDS = 1.0  # the memory watch's period
HEARTBEAT_SECONDS = 2.0  # a Heartbeat at least this often while a step runs
GB = 1e9


class TrainingStopped(Exception):
    """Raised from the callback when training must end now (bad loss)."""


def step_seed(seed: int, iteration: int) -> int:
    return zlib.crc32(f"{seed}:{iteration}".encode())


def is_due(iteration: int, every: int, accumulation: int) -> bool:
    """At an update boundary, whether a multiple of ``every`` fell since the previous boundary."""
    if iteration % accumulation:
        return False
    return iteration // every > (iteration - accumulation) // every


def real_tokens(batch) -> int:
    """Tokens of a batch that are not padding and that the loss trains on.

    A batch that knows its count says so (``batch.real_tokens``: packed batches); for mlx-lm's
    ``(tokens, [[offset, length], ...])`` each row trains the targets at positions
    ``max(offset, 1) .. length - 1`` (the first token is never a target, a masked prompt is not
    trained). mlx-lm's own count also takes one padding target per padded row."""
    count = getattr(batch, "real_tokens", None)
    if count is not None:
        return int(count)
    import numpy as np

    lengths = np.array(batch[1]).reshape(-1, 2)
    return int(np.maximum(lengths[:, 1] - np.maximum(lengths[:, 0], 1), 0).sum())


def controlled_batches(control: JobControl, on_pause: Callable[[], None], on_unpause: Callable[[], None],
                       skip: int = 0, accumulation: int = 1, on_step: Callable[[], None] = lambda: None,
                       agree: Callable[[bool, bool], tuple[bool, bool]] | None = None,
                       on_batch: Callable[[object], None] = lambda batch: None, source=None,
                       on_remote_pause: Callable[[], None] = lambda: None):
    """mlx-lm's iterate_batches, honouring pause and stop between steps; skips ``skip`` batches.

    A stop ends the loop only at an update boundary (``accumulation``); ``on_step`` is called
    when a step begins (the next batch is asked for), ``on_batch`` with each batch trained on.
    ``source`` replaces mlx-lm's iterate_batches (packing, length buckets: backend/batching.py).
    With several hosts, ``agree`` turns this host's wishes to stop and to pause (memory pressure here,
    or the user's pause) into everyone's decision at every boundary, so all stop at the same step, and
    all pause together: while paused every host votes again about once a second (a collective that
    keeps the connections alive) until no host wants the pause any more; ``on_remote_pause`` is called
    on a host that pauses for another's sake."""
    from mlx_lm.tuner import trainer

    source = source or trainer.iterate_batches

    def batches(**kwargs):
        on_step()
        for n, batch in enumerate(source(**kwargs)):
            if n < skip:
                continue
            if control.paused and agree is None:
                on_pause()
                control.wait_while_paused()
                on_unpause()
            at_boundary = n % accumulation == 0
            stop = control.stop_requested
            if agree is not None and at_boundary:
                stop, pause = agree(stop, control.paused)
                if pause and not stop:
                    if not control.paused:
                        on_remote_pause()
                    on_pause()
                    while pause and not stop:
                        control.wait_while_paused(timeout=PAUSE_VOTE_S)
                        stop, pause = agree(control.stop_requested, control.paused)
                    on_unpause()
                if stop:
                    control.request_stop()
            if stop and at_boundary:
                return
            on_batch(batch)
            yield batch
            on_step()

    return batches


PAUSE_VOTE_S = 1.0  # while a multi-host run is paused, every host votes again this often


def agree_on_stop(stop: bool, pause: bool = False) -> tuple[bool, bool]:
    """(stop, pause) on every host: true when any host wants it (one two-value all-reduce per update)."""
    import mlx.core as mx

    votes = mx.distributed.all_sum(mx.array([int(stop), int(pause)], dtype=mx.int32), stream=mx.cpu).tolist()
    return bool(votes[0]), bool(votes[1])


def validation_loss(model, valid_set, batch_size: int, num_batches: int, max_seq_length: int, seed: int,
                    loss=None) -> float:
    """mlx-lm's evaluate on the same validation batches every time.

    mlx-lm draws the batches from NumPy's global RNG: unseeded, each checkpoint would be judged
    on a different subset, and validating would shift the training data order. So seed it for
    the pass and restore it afterwards. The batches are mlx-lm's, with less padding
    (``trimmed_batches``): the same rows and the same loss, for less work."""
    import numpy as np
    from mlx_lm.tuner.trainer import default_loss, evaluate

    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        return evaluate(model, valid_set, batch_size=batch_size, num_batches=num_batches,
                        max_seq_length=max_seq_length, loss=loss or default_loss, iterate_batches=trimmed_batches)
    finally:
        np.random.set_state(saved)


TRIM_TO = 8


def trimmed_batches(**kwargs):
    """mlx-lm's batches cut to the longest row rounded up to TRIM_TO plus one (mlx-lm pads to 32
    plus one). Causal attention never lets a token see the padding after it, and one padding
    column stays (mlx-lm's loss counts one padding target per row), so every loss term is the same."""
    from mlx_lm.tuner.trainer import iterate_batches

    for batch, lengths in iterate_batches(**kwargs):
        longest = int(lengths[:, 1].max().item())
        width = min(batch.shape[1], 1 + TRIM_TO * -(-longest // TRIM_TO))
        yield batch[:, :width], lengths


@dataclass
class LoopState:
    """What the loop knows so far; restored from a checkpoint on resume."""

    iteration: int = 0
    trained_tokens: int = 0
    best_iteration: int | None = None
    best_val_loss: float | None = None
    validations_without_improvement: int = 0
    last_saved: int = -1
    stop_reason: str = ""
    save_failed: bool = False


class StepHook:
    """mlx-lm TrainingCallback called after every step (steps_per_report=1)."""

    def __init__(self, ctx, state: LoopState):
        self.ctx = ctx  # training._Context: recipe, plan, run, model, optimizer, valid set, control, watch
        self.state = state
        self.offset = state.iteration
        self.tokens_offset = state.trained_tokens
        self._window = _Window()
        self._min_loss: float | None = None
        self._best_seen: float | None = state.best_val_loss
        self._steps = 0
        self._real: list[int] = []  # real tokens of the batches taken and not yet reported

    def batch_taken(self, batch) -> None:
        """The batch wrapper's ``on_batch``: count the batch's real tokens for its step's report."""
        self._real.append(real_tokens(batch))

    # --- called by mlx-lm after each step ----------------------------------------------

    def on_train_loss_report(self, info: dict) -> None:
        import mlx.core as mx

        it = self.offset + info["iteration"]
        self.state.iteration = it
        self.state.trained_tokens = self.tokens_offset + int(info["trained_tokens"])
        self._check_loss(info)
        self._window.add(info, self._real.pop(0) if self._real else None)
        ev, plan = self.ctx.recipe.eval, self.ctx.plan
        total, accumulation = plan.iterations, plan.grad_accumulation
        if it % ev.report_every == 0 or it == total:
            self.ctx.run.emit(self._window.report(it, total, info, self.state.trained_tokens))
            self.ctx.run.emit(self.ctx.watch.sample(it, mlx_memory()))
            self.ctx.run.update(iteration=it)
        save = is_due(it, ev.save_every, accumulation)
        if it != total and (save or is_due(it, ev.eval_every, accumulation)):
            self.validate_and_maybe_save(it, save=save)
        if it % accumulation == 0:
            self._check_memory(it)
        mx.random.seed(step_seed(self.ctx.recipe.training.seed, it))

    def on_val_loss_report(self, info: dict) -> None:  # mlx-lm validates nothing itself here
        pass

    # --- validation and checkpoints ------------------------------------------------------

    def validate_and_maybe_save(self, iteration: int, save: bool) -> None:
        val_loss = self._validate(iteration)
        if save:
            self._save(iteration, val_loss)
        if val_loss is not None:
            self._track_early_stopping(val_loss)

    def _validate(self, iteration: int) -> float | None:
        c = self.ctx
        if not len(c.valid_set):
            return None
        tic = time.perf_counter()
        if getattr(c, "preference", None) is not None:  # DPO/ORPO: held-out pairs (backend/preference.py)
            loss = c.preference(c.model, c.valid_set, iteration, c.run.emit)
        else:
            loss = validation_loss(c.model, c.valid_set, c.plan.val_batch_size, c.recipe.eval.val_batches,
                                   c.recipe.data.max_seq_length, c.recipe.training.seed, loss=getattr(c, "loss", None))
        c.model.train()
        c.run.emit(ValReport(iteration, loss, time.perf_counter() - tic))
        return loss

    def _save(self, iteration: int, val_loss: float | None) -> None:
        from macfinetune.backend import adapters

        c, s = self.ctx, self.state
        try:
            path = adapters.save_checkpoint(c.run.dir, iteration, c.model, c.optimizer)
            runs.write_checkpoint_state(c.run.dir, iteration, s.trained_tokens, val_loss)
        except OSError as e:
            self._trouble(f"could not save checkpoint {iteration} ({e.strerror or e}); the previous "
                          "checkpoint is intact. Free disk space or fix the folder's permissions, then resume")
            s.save_failed = True
            return
        s.save_failed = False
        s.last_saved = iteration
        is_best = val_loss is not None and (s.best_val_loss is None or val_loss < s.best_val_loss)
        if is_best:
            s.best_iteration, s.best_val_loss = iteration, val_loss
            c.run.update(best_iteration=iteration, best_val_loss=val_loss)
        c.run.emit(CheckpointSaved(iteration, str(path), val_loss, is_best))
        self._samples(iteration)
        self._prune(iteration)

    def _samples(self, iteration: int) -> None:
        """Answer the sample prompts with the weights just saved; samples.jsonl, then SamplesSaved."""
        from macfinetune.backend.samples import answer_prompts

        c = self.ctx
        if not c.recipe.eval.samples or not c.sample_prompts:
            return
        prompts = c.sample_prompts
        try:
            texts, seconds = answer_prompts(c.model, c.tokenizer, prompts, c.recipe.eval.sample_max_tokens)
            event = SamplesSaved(str(c.run.dir), iteration, tuple(p.shown for p in prompts), texts, seconds)
            samples.append_samples(c.run.dir, event)
        except Exception as e:  # a template, tokenizer or disk problem: the run goes on without samples
            c.sample_prompts = None
            c.run.emit(Stage("train", f"No more checkpoint samples: {type(e).__name__}: {e}"))
            return
        c.run.emit(event)

    def _prune(self, latest: int) -> None:
        c = self.ctx
        saved = {s.iteration: s.val_loss for s in runs.complete_checkpoints(c.run.dir)}
        for it in runs.checkpoints_to_delete(saved, c.recipe.eval.keep_checkpoints, latest):
            runs.state_file(c.run.dir, it).unlink(missing_ok=True)  # the commit marker goes first
            atomic.fault_point("prune.marker-removed")
            (c.run.dir / runs.ADAPTERS / runs.checkpoint_name(it)).unlink(missing_ok=True)
            runs.optimizer_file(c.run.dir, it).unlink(missing_ok=True)

    # --- health -------------------------------------------------------------------------

    def _check_loss(self, info: dict) -> None:
        loss = float(info["train_loss"])
        self._steps += 1
        floor = getattr(self.ctx.preference, "loss_floor", 1e-3) if getattr(self.ctx, "preference", None) else 1e-3
        problem = health.loss_problem(loss, self._min_loss, self._steps, float(info["learning_rate"]), floor)
        if problem:
            raise TrainingStopped(problem)
        self._min_loss = loss if self._min_loss is None else min(self._min_loss, loss)

    def _check_memory(self, iteration: int) -> None:
        """Act on the watch's verdict at an update boundary: save, then pause or stop."""
        danger = self.ctx.watch.take_danger()
        if danger:
            if self.state.last_saved != iteration:
                self.validate_and_maybe_save(iteration, save=True)
            self._trouble(danger)

    def _track_early_stopping(self, val_loss: float) -> None:
        ev, s = self.ctx.recipe.eval, self.state
        best = self._best_seen
        if best is None or val_loss < best - ev.early_stopping_min_delta:
            self._best_seen = val_loss
            s.validations_without_improvement = 0
            return
        s.validations_without_improvement += 1
        if ev.early_stopping_patience and s.validations_without_improvement >= ev.early_stopping_patience:
            s.stop_reason = (f"early stopping: no improvement in validation loss for "
                             f"{s.validations_without_improvement} validations")
            self.ctx.control.request_stop()

    def _trouble(self, message: str) -> None:
        """Pause with a message (the app resumes it), or stop when nobody can resume it (the CLI)."""
        c = self.ctx
        if c.control.pause_on_trouble:
            c.control.pause()
            c.trouble = message
        else:
            self.state.stop_reason = message
            c.control.request_stop()


def mlx_memory() -> tuple[float, float, float]:
    """MLX's active, cache and peak memory in GB (only on the MLX thread)."""
    import mlx.core as mx

    return mx.get_active_memory() / GB, mx.get_cache_memory() / GB, mx.get_peak_memory() / GB


def _swap_used() -> int:
    import psutil

    try:
        return psutil.swap_memory().used
    except (OSError, RuntimeError):
        return 0


class Watch:
    """A daemon thread, psutil only: every SAMPLE_SECONDS a MemorySample (MLX figures None) and the
    pressure verdict, which the loop takes at its next update boundary; every HEARTBEAT_SECONDS,
    while a step runs, a Heartbeat. ``emit`` must be safe to call from this thread."""

    def __init__(self, emit: Callable[[object], None], state: LoopState, budget_gb: float | None = None,
                 estimate_gb: float | None = None):
        self._emit, self._state = emit, state
        self.budget_gb, self.estimate_gb = budget_gb, estimate_gb
        self._swap_start = _swap_used()
        self._danger: str | None = None
        self._step_began: float | None = None
        self._last_beat = time.monotonic()
        self._beat_lock = threading.Lock()  # a heartbeat is never emitted after idle() returned
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="macfinetune-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    # --- called from the training thread ------------------------------------------------

    def step_began(self) -> None:
        self._step_began = time.monotonic()

    def idle(self) -> None:
        """Paused: no step runs, no heartbeat."""
        with self._beat_lock:
            self._step_began = None

    def take_danger(self) -> str | None:
        danger, self._danger = self._danger, None
        return danger

    def forget_pressure(self) -> None:
        """After the user resumed a paused run: judge memory afresh from now."""
        self._danger = None
        self._swap_start = _swap_used()

    def sample(self, iteration: int, mlx: tuple[float, float, float] | None = None) -> MemorySample:
        """A MemorySample now; the MLX figures only when given (the training thread has them)."""
        import psutil

        memory = psutil.virtual_memory()
        try:
            process = psutil.Process().memory_info().rss
        except (OSError, psutil.Error):
            process = 0
        active, cache, peak = mlx if mlx is not None else (None, None, None)
        return MemorySample(iteration, active, cache, peak, process / GB, (memory.total - memory.available) / GB,
                            memory.total / GB, _swap_used() / GB, self.budget_gb, self.estimate_gb)

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self._watch_memory()
            self._maybe_beat()

    def _watch_memory(self) -> None:
        sample = self.sample(self._state.iteration)
        self._emit(sample)
        available = (sample.system_total_gb - sample.system_used_gb) * GB
        swap_growth = sample.swap_used_gb * GB - self._swap_start
        danger = health.memory_danger(int(available), int(sample.system_total_gb * GB), int(swap_growth))
        if danger:
            self._danger = danger

    def _maybe_beat(self) -> None:
        with self._beat_lock:
            began, now = self._step_began, time.monotonic()
            if began is None or now - self._last_beat < HEARTBEAT_SECONDS - SAMPLE_SECONDS / 2:
                return
            self._last_beat = now
            self._emit(Heartbeat(self._state.iteration, now - began, self._state.trained_tokens))


class _Window:
    """Sums per-step reports into one report over the reporting window."""

    def __init__(self):
        self.steps = 0
        self.loss = 0.0
        self.seconds = 0.0
        self.tokens = 0.0
        self.real: float | None = 0.0  # None once a step's real tokens are unknown

    def add(self, info: dict, real: int | None = None) -> None:
        seconds = 1.0 / info["iterations_per_second"] if info["iterations_per_second"] else 0.0
        self.steps += 1
        self.loss += info["train_loss"]
        self.seconds += seconds
        self.tokens += info["tokens_per_second"] * seconds
        self.real = None if real is None or self.real is None else self.real + real

    def report(self, it: int, total: int, info: dict, trained_tokens: int) -> TrainReport:
        seconds = self.seconds or math.inf
        out = TrainReport(
            iteration=it,
            total_iterations=total,
            train_loss=self.loss / self.steps,
            learning_rate=float(info["learning_rate"]),
            iterations_per_second=self.steps / seconds,
            tokens_per_second=self.tokens / seconds,
            trained_tokens=trained_tokens,
            peak_memory_gb=float(info["peak_memory"]),
            real_tokens_per_second=None if self.real is None else self.real / seconds,
        )
        self.__init__()
        return out


def pause_events(ctx) -> tuple[Callable[[], None], Callable[[], None]]:
    """Callbacks for the batch wrapper: record and announce a pause, and the way out of it."""

    def on_pause():
        ctx.watch.idle()
        ctx.run.update(state="paused", message=ctx.trouble)
        ctx.run.emit(RunPaused(ctx.hook.state.iteration, ctx.trouble))

    def on_unpause():
        ctx.watch.forget_pressure()
        ctx.trouble = ""
        ctx.run.update(state="running", message="")
        ctx.run.emit(RunResumed(ctx.hook.state.iteration))
        ctx.watch.step_began()  # heartbeats again, after RunResumed

    return on_pause, on_unpause
