"""The seams around mlx-lm's train(): the batch wrapper and the per-step callback.

mlx-lm's train() runs with steps_per_report=1 and no validation set of its own. The callback
(``StepHook``) sees every step: it aggregates reports, validates and saves atomic checkpoints
at our intervals (so each checkpoint carries the validation loss of exactly its weights),
guards the loss and the machine's memory, stops early, and reseeds MLX's RNG from
(seed, iteration) after every step so that a resumed run draws the same random numbers.
The batch wrapper blocks while paused, stops yielding on a stop request, and on resume
fast-forwards past the batches already trained.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from macfinetune.core import health, runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import CheckpointSaved, RunPaused, RunResumed, TrainReport, ValReport


class TrainingStopped(Exception):
    """Raised from the callback when training must end now (bad loss)."""


def step_seed(seed: int, iteration: int) -> int:
    return zlib.crc32(f"{seed}:{iteration}".encode())


def controlled_batches(control: JobControl, on_pause: Callable[[], None], on_unpause: Callable[[], None],
                       skip: int = 0):
    """mlx-lm's iterate_batches, honouring pause and stop between steps; skips ``skip`` batches."""
    from mlx_lm.tuner.trainer import iterate_batches

    def batches(**kwargs):
        for n, batch in enumerate(iterate_batches(**kwargs)):
            if n < skip:
                continue
            if control.paused:
                on_pause()
                control.wait_while_paused()
                on_unpause()
            if control.stop_requested:
                return
            yield batch

    return batches


def validation_loss(model, valid_set, batch_size: int, num_batches: int, max_seq_length: int, seed: int) -> float:
    """mlx-lm's evaluate on the same validation batches every time.

    mlx-lm draws the batches from NumPy's global RNG: unseeded, each checkpoint would be judged
    on a different subset, and validating would shift the training data order. So seed it for
    the pass and restore it afterwards."""
    import numpy as np
    from mlx_lm.tuner.trainer import evaluate

    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        return evaluate(model, valid_set, batch_size=batch_size, num_batches=num_batches,
                        max_seq_length=max_seq_length)
    finally:
        np.random.set_state(saved)


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
        self.ctx = ctx  # training._Context: recipe, plan, run, model, optimizer, valid set, control
        self.state = state
        self.offset = state.iteration
        self.tokens_offset = state.trained_tokens
        self._window = _Window()
        self._min_loss: float | None = None
        self._best_seen: float | None = state.best_val_loss
        self._steps = 0
        self._swap_start = _swap_used()

    # --- called by mlx-lm after each step ----------------------------------------------

    def on_train_loss_report(self, info: dict) -> None:
        import mlx.core as mx

        it = self.offset + info["iteration"]
        self.state.iteration = it
        self.state.trained_tokens = self.tokens_offset + int(info["trained_tokens"])
        self._check_loss(info)
        self._window.add(info)
        ev = self.ctx.recipe.eval
        total = self.ctx.plan.iterations
        if it % ev.report_every == 0 or it == total:
            self.ctx.run.emit(self._window.report(it, total, info, self.state.trained_tokens))
            self.ctx.run.update(iteration=it)
            self._check_memory()
        if it != total and (it % ev.save_every == 0 or it % ev.eval_every == 0):
            self.validate_and_maybe_save(it, save=it % ev.save_every == 0)
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
        loss = validation_loss(c.model, c.valid_set, c.plan.val_batch_size, c.recipe.eval.val_batches,
                               c.recipe.data.max_seq_length, c.recipe.training.seed)
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
        self._prune(iteration)

    def _prune(self, latest: int) -> None:
        c = self.ctx
        saved = {s.iteration: s.val_loss for s in runs.complete_checkpoints(c.run.dir)}
        for it in runs.checkpoints_to_delete(saved, c.recipe.eval.keep_checkpoints, latest):
            runs.state_file(c.run.dir, it).unlink(missing_ok=True)  # the commit marker goes first
            (c.run.dir / runs.ADAPTERS / runs.checkpoint_name(it)).unlink(missing_ok=True)
            runs.optimizer_file(c.run.dir, it).unlink(missing_ok=True)

    # --- health -------------------------------------------------------------------------

    def _check_loss(self, info: dict) -> None:
        loss = float(info["train_loss"])
        self._steps += 1
        problem = health.loss_problem(loss, self._min_loss, self._steps, float(info["learning_rate"]))
        if problem:
            raise TrainingStopped(problem)
        self._min_loss = loss if self._min_loss is None else min(self._min_loss, loss)

    def _check_memory(self) -> None:
        import psutil

        memory = psutil.virtual_memory()
        danger = health.memory_danger(memory.available, memory.total, _swap_used() - self._swap_start)
        if danger:
            self.validate_and_maybe_save(self.state.iteration, save=True)
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


def _swap_used() -> int:
    import psutil

    try:
        return psutil.swap_memory().used
    except (OSError, RuntimeError):
        return 0


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
        )
        self.__init__()
        return out


def pause_events(ctx) -> tuple[Callable[[], None], Callable[[], None]]:
    """Callbacks for the batch wrapper: record and announce a pause, and the way out of it."""

    def on_pause():
        ctx.run.update(state="paused", message=ctx.trouble)
        ctx.run.emit(RunPaused(ctx.hook.state.iteration, ctx.trouble))

    def on_unpause():
        ctx.trouble = ""
        ctx.run.update(state="running", message="")
        ctx.run.emit(RunResumed(ctx.hook.state.iteration))

    return on_pause, on_unpause
