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
    time: float = field(default_factory=time.time, compare=False)


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
    time: float = field(default_factory=time.time, compare=False)


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
    time: float = field(default_factory=time.time, compare=False)
    # non-padding tokens that contribute to the loss, per second (mlx-lm's tokens/s counts one padding
    # target per padded row); None when not measured (older logs)
    real_tokens_per_second: float | None = None


@dataclass(frozen=True)
class ValReport:
    iteration: int
    val_loss: float
    val_time: float
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class CheckpointSaved:
    iteration: int
    path: str
    val_loss: float | None
    is_best: bool
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class RunPaused:
    iteration: int
    reason: str = ""
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class RunResumed:
    """A paused run goes on."""

    iteration: int
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class RunContinued:
    """An interrupted or stopped run continues from a checkpoint (``train --resume``)."""

    run_dir: str
    iteration: int
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class RunFinished:
    run_dir: str
    iteration: int
    stopped: bool
    best_iteration: int | None
    best_val_loss: float | None
    reason: str = ""
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class RunFailed:
    run_dir: str | None
    message: str
    problems: tuple[Problem, ...] = ()
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class TokenChunk:
    """A few generated tokens; ``source`` says which model wrote them (base, tuned, model)."""

    source: str
    text: str
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class GenerationFinished:
    source: str
    text: str
    prompt_tokens: int
    generated_tokens: int
    tokens_per_second: float
    stopped: bool = False  # cut short by a stop request
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class FuseFinished:
    out_dir: str
    gguf_path: str | None
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class Progress:
    """Part of a long non-training job done (``done`` of ``total`` units, e.g. rows tokenized)."""

    job: str
    done: int
    total: int
    message: str = ""
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class TrainReportBatch:
    """Train reports that arrived faster than the engine forwards them (~20/s), in order."""

    reports: tuple[TrainReport, ...]
    time: float = field(default_factory=time.time, compare=False)


# --- the engine's envelope and job lifecycle -----------------------------------------------


@dataclass(frozen=True)
class JobEvent:
    """The only thing ``Engine.event`` emits: an event of job ``job_id`` (a job name, see engine)."""

    job_id: int
    job: str
    event: object
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class JobQueued:
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class JobStarted:
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class JobCancelled:
    """Cancelled while queued (it never ran) or stopped by cancel before it produced a result."""

    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class JobFinished:
    result: object | None = None
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class JobFailed:
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
class HostSample:
    """A run on several Macs: one rank's throughput and memory at its train report (every rank sends
    them; the Monitor shows one row per Mac). Figures the rank did not sample are None."""

    rank: int
    host: str
    iteration: int
    tokens_per_second: float
    peak_memory_gb: float
    process_gb: float | None = None
    system_used_gb: float | None = None
    system_total_gb: float | None = None
    swap_used_gb: float | None = None
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class Heartbeat:  # every ~2 s while a training step is in progress (time-based, not per iteration)
    iteration: int  # last completed iteration
    step_elapsed_s: float  # seconds since the current step began
    trained_tokens: int
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class SamplesSaved:
    """Greedy answers of a checkpoint's weights to the run's fixed sample prompts (``samples.jsonl``)."""

    run_dir: str
    iteration: int
    prompts: tuple[str, ...]
    texts: tuple[str, ...]
    seconds: float  # how long generating them took
    time: float = field(default_factory=time.time, compare=False)


# --- the Playground ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLoaded:
    """The model for a Playground ``pane`` is ready: read from disk, or ``reused`` from the engine's cache
    (then ``swapped`` says whether only a checkpoint's adapter weights were loaded into it)."""

    pane: str
    model: str
    checkpoint: str  # "" for the base model, else the checkpoint's file name
    seconds: float
    reused: bool
    swapped: bool = False
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class ModelsReleased:
    """The engine let go of the models it kept for the Playground (a training job starts, or memory is tight)."""

    count: int
    reason: str
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class ExportFinished:
    """An export is done: where it went (a folder, or the hub repository's URL), the files it wrote,
    a command to run next (Ollama's ``ollama create``) and notes to show."""

    target: str  # gguf, ollama, lmstudio, hub, mlx
    location: str
    files: tuple[str, ...]
    command: str | None = None
    notes: tuple[str, ...] = ()
    time: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True)
class PreferenceReport:
    """DPO/ORPO measures of one pass over preference pairs (``split``: valid, the held-out pairs).

    Log-probabilities are per pair: summed over the answer's tokens (``logps_*``). Rewards are DPO's
    implicit rewards beta x (policy - reference log-probability), ORPO's the answer's mean per-token
    log-probability; ``accuracy`` is the share of pairs whose chosen reward beats the rejected one,
    ``likelihood_accuracy`` the share whose chosen answer has the higher mean per-token
    log-probability (the same measure before and after training, for any objective)."""

    iteration: int
    split: str
    objective: str
    loss: float
    rewards_chosen: float
    rewards_rejected: float
    reward_margin: float
    accuracy: float
    logps_chosen: float
    logps_rejected: float
    likelihood_accuracy: float
    pairs: int
    time: float = field(default_factory=time.time, compare=False)
