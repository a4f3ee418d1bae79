"""Arithmetic that turns a recipe plus a dataset size into concrete training numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe


@dataclass(frozen=True)
class Plan:
    iterations: int
    epochs: float
    train_rows: int
    valid_rows: int
    batch_size: int
    grad_accumulation: int
    effective_batch: int
    optimizer_updates: int
    warmup_updates: int
    val_batch_size: int
    lora_scale: float
    hosts: int = 1  # processes (Macs) that train it together; batch_size is each one's share
    global_batch: int = 0  # rows per step over all hosts (what mlx-lm's iterate_batches is given)
    notes: tuple[str, ...] = ()  # where the numbers differ from what the recipe asked for, in words


def make_plan(recipe: Recipe, train_rows: int, valid_rows: int, data_file: str = "data", hosts: int = 1,
              global_batch: int | None = None) -> Plan:
    """Iterations from epochs (or epochs implied by iterations), updates, warmup.

    On several hosts each takes ``batch_size`` rows of a ``global_batch`` (default batch_size × hosts);
    a resumed run keeps its global batch, so on fewer hosts each takes more."""
    t = recipe.training
    per_host = (global_batch // hosts) if global_batch else t.batch_size
    global_batch = per_host * hosts
    if global_batch != t.batch_size:
        t = replace(t, batch_size=global_batch)  # epochs and the row checks count whole steps
    if 0 < valid_rows < hosts:
        raise ProblemError(Problem(f"the validation set has {valid_rows} rows; {hosts} hosts need at least one each",
                                   file=data_file, field="data.valid_fraction", value=valid_rows))
    if train_rows < t.batch_size:
        raise ProblemError(
            Problem(
                f"the training set has {train_rows} rows, fewer than training.batch_size = {t.batch_size}; "
                f"lower the batch size to at most {train_rows} or add rows",
                file=data_file,
                field="training.batch_size",
                value=t.batch_size,
            )
        )
    batches_per_epoch = train_rows // t.batch_size
    notes = []
    if t.iterations is not None:
        iterations = t.iterations
    else:  # whole optimizer updates: the last accumulated gradients are applied
        steps = t.epochs * batches_per_epoch
        iterations = t.grad_accumulation * max(1, math.ceil(steps / t.grad_accumulation))
        if steps < 1:
            notes.append(f"training.epochs {t.epochs:g} of {train_rows} rows is less than one batch of "
                         f"{t.batch_size}: training {iterations} iteration{'s' if iterations > 1 else ''}")
    updates = max(1, iterations // t.grad_accumulation)
    warmup = t.warmup_steps if t.warmup_steps else round(t.warmup_ratio * updates)
    if t.warmup_steps and warmup > max(updates - 1, 0):
        notes.append(f"training.warmup_steps {t.warmup_steps} exceeds the run's {updates} optimizer "
                     f"update{'s' if updates > 1 else ''}: warming up over {max(updates - 1, 0)}")
    return Plan(
        iterations=iterations,
        epochs=iterations / batches_per_epoch,
        train_rows=train_rows,
        valid_rows=valid_rows,
        batch_size=per_host,
        grad_accumulation=t.grad_accumulation,
        effective_batch=t.batch_size * t.grad_accumulation,
        optimizer_updates=updates,
        warmup_updates=min(warmup, max(updates - 1, 0)),
        val_batch_size=_val_batch(t.batch_size, valid_rows, hosts),
        lora_scale=recipe.method.scale,
        hosts=hosts,
        global_batch=global_batch,
        notes=tuple(notes),
    )


def _val_batch(batch: int, valid_rows: int, hosts: int) -> int:
    """Validation batches hold a whole number of rows per host (mlx-lm splits each batch by host)."""
    if not valid_rows:
        return 0
    size = max(1, min(batch, valid_rows))
    return max(hosts, size - size % hosts)


def schedule_spec(recipe: Recipe, plan: Plan) -> dict | None:
    """The learning-rate schedule in mlx-lm's ``build_schedule`` format (None: a constant rate)."""
    t = recipe.training
    lr = t.learning_rate
    end = lr * t.min_lr_ratio
    steps = max(1, plan.optimizer_updates - plan.warmup_updates)
    by_name = {
        "constant": ("linear_schedule", [lr, lr, 1]),
        "cosine": ("cosine_decay", [lr, steps, end]),
        "linear": ("linear_schedule", [lr, end, steps]),
    }
    name, arguments = by_name[t.lr_schedule]
    if t.lr_schedule == "constant" and plan.warmup_updates == 0:
        return None
    spec = {"name": name, "arguments": arguments}
    if plan.warmup_updates:
        spec["warmup"] = plan.warmup_updates
    return spec


def eta_seconds(iteration: int, total: int, iterations_per_second: float) -> float | None:
    if iterations_per_second <= 0 or iteration >= total:
        return None if iteration < total else 0.0
    return (total - iteration) / iterations_per_second
