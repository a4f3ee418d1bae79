"""The engine contract's events (``/work ENGINE-API``) as the app sees them.

Each name comes from ``core.events`` when that module defines it; until the engine and
reliability work is merged, the missing ones are defined here with the contract's fields,
so the app, its tests and its recorded demo run speak the contract either way. Delete this
module once ``core.events`` has them all.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field

from macfinetune.core import events as _events
from macfinetune.core.events import TrainReport
from macfinetune.core.problems import Problem


@dataclass(frozen=True)
class _JobEvent:
    job_id: int
    job: str
    event: object


@dataclass(frozen=True)
class _JobQueued:
    time: float = field(default_factory=_time.time, compare=False)


@dataclass(frozen=True)
class _JobStarted:
    time: float = field(default_factory=_time.time, compare=False)


@dataclass(frozen=True)
class _JobFinished:
    result: object = None
    time: float = field(default_factory=_time.time, compare=False)


@dataclass(frozen=True)
class _JobFailed:
    message: str
    problems: tuple[Problem, ...] = ()
    time: float = field(default_factory=_time.time, compare=False)


@dataclass(frozen=True)
class _JobCancelled:
    time: float = field(default_factory=_time.time, compare=False)


@dataclass(frozen=True)
class _TrainReportBatch:
    reports: tuple[TrainReport, ...]
    time: float = field(default_factory=_time.time, compare=False)


@dataclass(frozen=True)
class _MemorySample:
    iteration: int
    active_gb: float | None
    cache_gb: float | None
    peak_gb: float | None
    process_gb: float
    system_used_gb: float
    system_total_gb: float
    swap_used_gb: float
    budget_gb: float | None
    estimate_gb: float | None
    time: float = field(default_factory=_time.time, compare=False)


@dataclass(frozen=True)
class _Heartbeat:
    iteration: int
    step_elapsed_s: float
    trained_tokens: int
    time: float = field(default_factory=_time.time, compare=False)


def _contract(name: str, fallback: type) -> type:
    """The engine's class when it has the contract's shape, else the stand-in."""
    real = getattr(_events, name, None)
    if real is None:
        return fallback
    wanted = set(fallback.__dataclass_fields__) - {"time"}
    return real if wanted == set(getattr(real, "__dataclass_fields__", {})) - {"time"} else fallback


JobEvent = _contract("JobEvent", _JobEvent)
JobQueued = _contract("JobQueued", _JobQueued)
JobStarted = _contract("JobStarted", _JobStarted)
JobFinished = _contract("JobFinished", _JobFinished)
JobFailed = _contract("JobFailed", _JobFailed)
JobCancelled = _contract("JobCancelled", _JobCancelled)
TrainReportBatch = _contract("TrainReportBatch", _TrainReportBatch)
MemorySample = _contract("MemorySample", _MemorySample)
Heartbeat = _contract("Heartbeat", _Heartbeat)
