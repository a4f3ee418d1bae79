"""The memory gate: the estimator's verdict decides whether a run may start.

``check`` estimates a run that is about to start from its recipe, the model's config.json, the
longest row of its data (in tokens) and the machine, and returns a ``Gate``:

- *fits*: start.
- *tight*: start, with a warning (it may swap when other apps need memory).
- *will not fit*: refused with a ``ProblemError`` that names the estimate, the budget and the
  auto-fit change, unless the user confirmed the override (``allow_over_budget``; the CLI asks or
  takes ``--force``, the app asks in a dialog). Then it starts with a warning: the memory guard
  still pauses it before the machine swaps.

A model config the estimator cannot read never blocks a run: the gate says so and lets it start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from macfinetune.core.autofit import Fit, Prequantized, auto_fit, prequantized
from macfinetune.core.estimator import (
    Estimate,
    Settings,
    Verdict,
    estimate,
    judge,
    settings_from_recipe,
)
from macfinetune.core.hardware import GB, Machine
from macfinetune.core.modelshape import ModelShape
from macfinetune.core.problems import Problem, ProblemError

PAD_TO = 32  # mlx-lm pads each batch to a multiple of 32 tokens (iterate_batches)


@dataclass(frozen=True)
class Gate:
    estimate: Estimate | None
    verdict: Verdict | None
    fit: Fit | None
    settings: Settings | None
    overridden: bool = False
    note: str = ""  # why there is no estimate
    shape: ModelShape | None = None
    correction: object = None  # core.calibration.Correction applied to the estimate, or None

    @property
    def warning(self) -> str:
        """What to tell the user when the run starts ('' when it fits)."""
        if self.verdict is None:
            return f"memory not estimated: {self.note}" if self.note else ""
        if self.verdict.status == "fits":
            return ""
        text = f"memory {self.verdict.status}: {self.verdict.message}"
        if self.overridden:
            text += "; started anyway as you confirmed: the memory guard stops it before the Mac swaps"
        elif self.verdict.status == "tight":
            text += "; it may swap if other apps need memory"
        return text


def sequence_length(max_seq_length: int, longest_row_tokens: int | None, model_max: int | None = None) -> int:
    """The longest batch mlx-lm will build: the longest row, padded to 32, capped by max_seq_length."""
    length = max_seq_length
    if longest_row_tokens:
        length = min(length, PAD_TO * -(-longest_row_tokens // PAD_TO))
    if model_max:
        length = min(length, model_max)
    return max(1, length)


def run_settings(recipe, shape: ModelShape, device: str, longest_row_tokens: int | None = None):
    """The estimator's settings for a run as it will train: its longest batch is the longest row (padded),
    except with packing, whose sequences fill ``max_seq_length`` and whose attention looks back at most the
    longest example (``Settings.packed_window``)."""
    s = replace(settings_from_recipe(recipe), device=device)
    if getattr(recipe.data, "packing", False):
        return replace(s, max_seq_length=sequence_length(s.max_seq_length, None, shape.max_positions),
                       packed_window=longest_row_tokens)
    return replace(s, max_seq_length=sequence_length(s.max_seq_length, longest_row_tokens, shape.max_positions))


def check(recipe, shape: ModelShape, machine: Machine, longest_row_tokens: int | None = None,
          allow_over_budget: bool = False, mac_rows: list | None = None) -> Gate:
    """The gate for a run about to start; raises ProblemError when it will not fit and nobody confirmed.

    ``mac_rows`` (``calibration.this_mac_rows``): this Mac's finished runs; the estimate is judged after
    their correction for the run's family and method (bounded, ``calibration.mac_correction``), the same
    figure ``macfinetune estimate`` and the wizard show.
    """
    from macfinetune.core.calibration import correct_with_rows

    settings = run_settings(recipe, shape, machine.device, longest_row_tokens)
    est, correction = correct_with_rows(estimate(shape, settings), mac_rows)
    verdict = judge(est, machine)
    if verdict.status != "will not fit":
        return Gate(est, verdict, None, settings, shape=shape, correction=correction)
    fit = auto_fit(shape, settings, machine, factor=correction.factor if correction else 1.0)
    if allow_over_budget:
        return Gate(est, verdict, fit, settings, overridden=True, shape=shape, correction=correction)
    raise ProblemError(refusal(est, verdict, fit, machine, prequantized(recipe.model.path, shape, settings, machine)))


def refusal(est: Estimate, verdict: Verdict, fit: Fit, machine: Machine, pre: Prequantized | None = None) -> Problem:
    biggest = max(est.terms, key=lambda t: t.bytes)
    advice = (f"auto-fit: {fit.summary()}; apply it with {overrides_text(fit)}" if fit.found and fit.changes
              else f"auto-fit found no setting that fits: {fit.summary()}")
    if pre is not None and pre.verdict.fits:
        advice += f". Or {pre.summary()}"
    return Problem(
        f"this run will not fit in memory: the estimate is {est.total_gb:.1f} GB at its peak "
        + (f"({est.correction}) " if est.correction else "") +
        f"(largest part: {biggest.key} {biggest.bytes / GB:.1f} GB) and {machine.usable_bytes / GB:.1f} GB is usable "
        f"on {machine.source or 'this machine'}. {advice}. To start anyway, confirm the override "
        "(--force on the command line)",
        field="memory", value=round(est.total_gb, 2))


def overrides_text(fit: Fit) -> str:
    """The auto-fit changes as ``--set key=value`` arguments (``Change.key`` is the recipe key)."""
    parts = []
    for change in fit.changes:
        parts.append(f"--set {change.key}={_value(change.new)}")
        if change.key == "training.batch_size":
            parts.append(f"--set training.grad_accumulation={fit.settings.grad_accumulation}")
    return " ".join(parts)


def _value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ",".join(value) + "]" if value else "all"
    return "null" if value is None else str(value)
