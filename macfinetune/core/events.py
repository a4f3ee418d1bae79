"""Events are values: frozen dataclasses carried across the engine thread boundary.

The backend emits them through a plain ``emit(event)`` callable; the engine forwards
them on one ``Signal(object)``; the run folder logs them to ``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
