"""Events are values: frozen dataclasses carried across the engine thread boundary.

The backend emits them through a plain ``emit(event)`` callable; the engine forwards
them on one ``Signal(object)``; the run folder logs them to ``metrics.jsonl``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from macfinetune.core.problems import Problem


@dataclass(frozen=True)
class Stage:
    """A long step that is not training: loading, quantizing, tokenizing, fusing."""

    job: str
    message: str


@dataclass(frozen=True)
class RunStarted:
    run_dir: str
    method: str
    iterations: int
    epochs: float
    train_rows: int
    valid_rows: int
    batch_size: int
    grad_accumulation: int
    trainable_parameters: int
    total_parameters: int


@dataclass(frozen=True)
class TrainReport:
    iteration: int
    total_iterations: int
    train_loss: float
    learning_rate: float
    iterations_per_second: float
    tokens_per_second: float
    trained_tokens: int
    peak_memory_gb: float


@dataclass(frozen=True)
class ValReport:
    iteration: int
    val_loss: float
    val_time: float


@dataclass(frozen=True)
class CheckpointSaved:
    iteration: int
    path: str
    val_loss: float | None
    is_best: bool


@dataclass(frozen=True)
class RunPaused:
    iteration: int
    reason: str = ""


@dataclass(frozen=True)
class RunResumed:
    """A paused run goes on."""

    iteration: int


@dataclass(frozen=True)
class RunContinued:
    """An interrupted or stopped run continues from a checkpoint (``train --resume``)."""

    run_dir: str
    iteration: int


@dataclass(frozen=True)
class RunFinished:
    run_dir: str
    iteration: int
    stopped: bool
    best_iteration: int | None
    best_val_loss: float | None
    reason: str = ""


@dataclass(frozen=True)
class RunFailed:
    run_dir: str | None
    message: str
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class TokenChunk:
    """A few generated tokens; ``source`` says which model wrote them (base, tuned, model)."""

    source: str
    text: str


@dataclass(frozen=True)
class GenerationFinished:
    source: str
    text: str
    prompt_tokens: int
    generated_tokens: int
    tokens_per_second: float


@dataclass(frozen=True)
class FuseFinished:
    out_dir: str
    gguf_path: str | None


@dataclass(frozen=True)
class JobStarted:
    job: str


@dataclass(frozen=True)
class JobFinished:
    job: str


@dataclass(frozen=True)
class JobFailed:
    job: str
    message: str
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class MemorySample:  # at every train report AND from the ~1 s time-based pressure watch
    iteration: int
    active_gb: float | None  # mx.get_active_memory(); None when sampled off the MLX thread
    cache_gb: float | None  # mx.get_cache_memory()
    peak_gb: float | None  # mx.get_peak_memory() (reset at the start of every job)
    process_gb: float  # RSS of this process (psutil)
    system_used_gb: float  # total - available
    system_total_gb: float
    swap_used_gb: float
    budget_gb: float | None  # the memory budget the estimator judged against (None if unknown)
    estimate_gb: float | None  # the estimator's peak for this run (None if unknown)
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class Heartbeat:  # every ~2 s while a training step is in progress (time-based, not per iteration)
    iteration: int  # last completed iteration
    step_elapsed_s: float  # seconds since the current step began
    trained_tokens: int
    time: float = field(default_factory=time.time, compare=False)
