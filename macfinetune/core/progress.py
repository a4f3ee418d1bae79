"""The numbers the Monitor shows about a run's progress and memory, and its event log in words."""

from __future__ import annotations

from pathlib import Path

from macfinetune.core import events

STATE_WORDS = {"idle": "Idle", "running": "Running", "paused": "Paused", "finished": "Finished",
               "stopped": "Stopped", "failed": "Failed", "interrupted": "Interrupted"}
AMBER_FRACTION = 0.9


def clock(seconds: float | None) -> str:
    """03:12, or 1:02:03 past an hour; '--:--' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def eta_seconds(iteration: int, total: int, elapsed_s: float, start_iteration: int = 0) -> float | None:
    """Time left at the average pace since this job started (iterations done in ``elapsed_s``)."""
    done = iteration - start_iteration
    if iteration >= total > 0:
        return 0.0
    if done <= 0 or elapsed_s <= 0:
        return None
    return (total - iteration) * elapsed_s / done


def progress_line(state: str, iteration: int, total: int, elapsed_s: float | None, left_s: float | None) -> str:
    """'Running 420/1000 · 03:12 elapsed · 04:10 left'."""
    parts = [f"{STATE_WORDS.get(state, state.title())} {iteration}/{total}"]
    if elapsed_s is not None:
        parts.append(f"{clock(elapsed_s)} elapsed")
    if state in ("running", "paused") and left_s is not None:
        parts.append(f"{clock(left_s)} left")
    return " · ".join(parts)


def epoch_of(iteration: int, total: int, epochs: float) -> float:
    return epochs * iteration / total if total > 0 else 0.0


def pressure_level(in_use_gb: float | None, budget_gb: float | None) -> str:
    """green / amber / red like Activity Monitor: amber from 90% of the budget, red above it."""
    if in_use_gb is None or not budget_gb:
        return "green"
    if in_use_gb > budget_gb:
        return "red"
    return "amber" if in_use_gb >= AMBER_FRACTION * budget_gb else "green"


def memory_in_use(sample) -> float:
    """MLX's own footprint (active + cache) when sampled on the MLX thread, else the process RSS."""
    if sample.active_gb is not None:
        return sample.active_gb + (sample.cache_gb or 0.0)
    return sample.process_gb


def is_exploding(loss: float, first_loss: float | None) -> bool:
    """NaN, infinite, or more than 4x the first loss: worth a warning."""
    if loss != loss or loss in (float("inf"), float("-inf")):
        return True
    return first_loss is not None and first_loss > 0 and loss > 4 * first_loss


def describe(event) -> str | None:
    """One line for the event log pane, or None for events that are not worth a line."""
    describe_one = _DESCRIBE.get(type(event))
    return describe_one(event) if describe_one else None


def _started(e) -> str:
    return (f"Run started: {e.method}, {e.iterations} iterations ({e.epochs:.2f} epochs of {e.train_rows} rows), "
            f"{e.trainable_parameters:,} of {e.total_parameters:,} parameters trainable")


def _checkpoint(e) -> str:
    best = " (best so far)" if e.is_best else ""
    return f"Checkpoint saved at {e.iteration}: {Path(e.path).name}{best}"


def _finished(e) -> str:
    word = "Stopped" if e.stopped else "Finished"
    best = f"; best validation loss {e.best_val_loss:.3f} at {e.best_iteration}" if e.best_val_loss is not None else ""
    reason = f" ({e.reason})" if e.reason else ""
    return f"{word} at iteration {e.iteration}{reason}{best}"


_DESCRIBE = {
    events.Stage: lambda e: e.message,
    events.RunStarted: _started,
    events.ValReport: lambda e: f"Validation at {e.iteration}: loss {e.val_loss:.3f} ({e.val_time:.1f} s)",
    events.CheckpointSaved: _checkpoint,
    events.RunPaused: lambda e: f"Paused at {e.iteration}" + (f": {e.reason}" if e.reason else ""),
    events.RunResumed: lambda e: f"Resumed at {e.iteration}",
    events.RunContinued: lambda e: f"Continuing from checkpoint {e.iteration}",
    events.RunFinished: _finished,
    events.RunFailed: lambda e: f"Failed: {e.message}",
    events.PreferenceReport: lambda e: None if e.split == "train" else (  # training batches: plots only
        f"Preference ({e.split}, {e.pairs} pairs) at {e.iteration}: accuracy {e.accuracy:.0%}, reward margin "
        f"{e.reward_margin:+.3f}"),
}


def host_line(s) -> str:
    """One Mac of a multi-Mac run (``events.HostSample``) for the Monitor's row per Mac."""
    parts = [f"rank {s.rank} · {s.host}", f"{s.tokens_per_second:,.0f} tok/s", f"peak {s.peak_memory_gb:.1f} GB"]
    if s.system_used_gb is not None and s.system_total_gb:
        parts.append(f"memory {s.system_used_gb:.1f} of {s.system_total_gb:.1f} GB")
    if s.swap_used_gb:
        parts.append(f"swap {s.swap_used_gb:.1f} GB")
    return " · ".join(parts) + f" · at iteration {s.iteration:,}"
