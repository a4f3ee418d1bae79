"""The New-run wizard's decisions, as pure functions the window only draws.

Every number the wizard shows is computed here, without Qt: which settings are wrong and why
(``field_problems``), the review plan (``review``: estimate, verdict, auto-fit, iterations,
duration, YAML, the equivalent command), presets from the seeds (``apply_preset``), what to say
about the data (``data_warnings``), and the token-length histogram with its truncation count
(``length_histogram``). The estimate runs on every keystroke: it takes well under a millisecond.
"""

from __future__ import annotations

import bisect
import math
import shlex
import typing
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from macfinetune.core import gate, plan, timing
from macfinetune.core.autofit import Fit, auto_fit
from macfinetune.core.estimator import (
    TERMS,
    Estimate,
    Verdict,
    estimate,
    judge,
    settings_from_recipe,
)
from macfinetune.core.hardware import GB, Machine
from macfinetune.core.modelshape import ModelShape
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import (
    SECTIONS,
    Recipe,
    apply_overrides,
    field_help,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
)

# The estimator's names for a setting -> the recipe key shown beside the field.
ESTIMATOR_KEYS = {
    "method": "method.type", "rank": "method.rank", "num_layers": "method.num_layers",
    "target_modules": "method.target_modules", "batch_size": "training.batch_size",
    "max_seq_length": "data.max_seq_length", "grad_accumulation": "training.grad_accumulation",
    "quantize": "model.quantize", "optimizer": "training.optimizer",
}
# Settings shown without unfolding "Advanced" (issue 11: the basics).
BASIC_KEYS = (
    "training.iterations", "training.epochs", "training.learning_rate", "training.batch_size",
    "data.max_seq_length", "method.rank", "method.num_layers",
)
# Presets from the seeds: shipped recipes whose training knobs apply to any model and data.
PRESETS = ("quick-test", "production", "memory-limited", "m3-18gb-safe", "m3-18gb-low", "m3-18gb-balanced",
           "m3-18gb-high")
_PRESET_SECTIONS = ("method", "training", "eval")
SPLIT_CHOICES = (0.1, 0.15, 0.2)  # validation share offered when the data has none
MAX_PASSES = 10  # more passes than this over the data: the model memorises it
MIN_TRAIN_ROWS = 20


# --- wrong settings, by field --------------------------------------------------------------------


def field_problems(values: dict, shape: ModelShape | None) -> tuple[Recipe | None, dict[str, str]]:
    """The recipe from the wizard's values (``recipe_to_dict`` form), and a message per wrong field.

    Type and range errors come from the recipe schema, cross-field rules from ``check_recipe``, and
    what cannot run on this model (rank above its width, more blocks than it has) from the estimator."""
    try:
        recipe = recipe_from_dict(values, file="wizard")
    except ProblemError as e:
        return None, _by_field(e.problems)
    if shape is None:
        return recipe, {}
    from macfinetune.core.estimator import check_settings

    problems = check_settings(shape, settings_from_recipe(recipe))
    return recipe, _by_field([replace(p, field=ESTIMATOR_KEYS.get(p.field, p.field)) for p in problems])


def _by_field(problems: Sequence[Problem]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in problems:
        key = p.field or "recipe"
        out[key] = f"{out[key]}; {p.message}" if key in out else p.message
    return out


def range_hint(key: str) -> str:
    """'1 to 4096' for a recipe key, from the schema (shown beside the field)."""
    meta, _ = field_spec(key)
    if meta.get("choices") is not None:
        return "one of " + ", ".join("none" if c is None else str(c) for c in meta["choices"])
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    text = f"{low} or more" if high is None else f"{low} to {high}"
    return text + "".join(f" (or {s})" for s in meta.get("special", ()))


def field_spec(key: str) -> tuple[dict, object]:
    """(the schema's metadata: help, choices, low, high, special; the declared type) of a recipe key."""
    section, _, name = key.partition(".")
    cls = type(getattr(Recipe(), section))
    f = next(f for f in fields(cls) if f.name == name)
    return f.metadata, typing.get_type_hints(cls)[name]


def help_text(key: str) -> str:
    section, _, name = key.partition(".")
    return field_help(section, name)


# --- presets ------------------------------------------------------------------------------------


def apply_preset(recipe: Recipe, preset: Recipe, shape: ModelShape | None = None) -> Recipe:
    """``recipe`` with the preset's method, training and eval knobs and sequence length; the model,
    the data, the method type and quantization stay the user's."""
    method = replace(preset.method, type=recipe.method.type)
    data = replace(recipe.data, max_seq_length=preset.data.max_seq_length)
    out = replace(recipe, method=method, training=preset.training, eval=preset.eval, data=data)
    return fit_to_model(out, shape) if shape is not None else out


def fit_to_model(recipe: Recipe, shape: ModelShape) -> Recipe:
    """Blocks and sequence length capped by what the model has."""
    method, data = recipe.method, recipe.data
    if method.num_layers > shape.layers:
        method = replace(method, num_layers=-1)
    if shape.max_positions and data.max_seq_length > shape.max_positions:
        data = replace(data, max_seq_length=shape.max_positions)
    return replace(recipe, method=method, data=data)


# --- the review plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    key: str  # an estimator term
    label: str
    gb: float


@dataclass(frozen=True)
class Gauge:
    """The always-visible memory bar: the estimate's parts against the budget."""

    segments: tuple[Segment, ...]
    total_gb: float
    budget_gb: float
    status: str  # fits, tight, will not fit
    text: str  # "3.1 of 12.6 GB · fits"


@dataclass(frozen=True)
class Review:
    recipe: Recipe
    estimate: Estimate
    verdict: Verdict
    fit: Fit | None  # the cheapest change that fits, when it does not fit as it is
    gauge: Gauge
    iterations: int | None  # None until the data size is known (epochs)
    iterations_per_epoch: int | None
    effective_batch: int
    tokens_per_iteration: int
    duration: str
    yaml: str
    command: str
    correction: object = None  # core.calibration.Correction from this Mac's runs, or None

    @property
    def correction_text(self) -> str:
        """'Corrected +6% from 4 runs on this Mac (...; confidence high)', or why there is none."""
        if self.correction is None:
            return ("Not corrected: no finished run of this model family and method on this Mac yet "
                    "(Measure this Mac runs a short probe).")
        return self.correction.label[0].upper() + self.correction.label[1:] + "."


def gauge(est: Estimate, verdict: Verdict, correction=None) -> Gauge:
    segments = tuple(Segment(t.key, t.label, t.bytes / GB) for t in est.terms if t.key in TERMS)
    text = f"{est.total_gb:.1f} of {verdict.usable_bytes / GB:.1f} GB · {verdict.status}"
    if correction is not None and correction.factor != 1.0:
        text += f" · corrected {correction.percent:+.0f}% on this Mac"
    return Gauge(segments, est.total_gb, verdict.usable_bytes / GB, verdict.status, text)


def settings_for(recipe: Recipe, shape: ModelShape, machine: Machine, longest_row_tokens: int | None):
    """The estimator's settings exactly as the memory gate will judge the run (``gate.check``)."""
    return gate.run_settings(recipe, shape, machine.device, longest_row_tokens)


def quick_gauge(recipe: Recipe, shape: ModelShape, machine: Machine, longest_row_tokens: int | None = None,
                mac_rows: list | None = None) -> Gauge:
    est, correction = _corrected(estimate(shape, settings_for(recipe, shape, machine, longest_row_tokens)), mac_rows)
    return gauge(est, judge(est, machine), correction)


def _corrected(est: Estimate, mac_rows: list | None):
    """The estimate after this Mac's correction, as the memory gate will judge it (``gate.check``)."""
    if not mac_rows:
        return est, None
    from macfinetune.core.calibration import correct_with_rows

    return correct_with_rows(est, mac_rows)


def review(recipe: Recipe, shape: ModelShape, machine: Machine, rate: timing.Rate, *,
           train_rows: int | None = None, valid_rows: int = 0, tokens_per_row: float | None = None,
           longest_row_tokens: int | None = None, run_dir: str = "", mac_rows: list | None = None,
           hosts: int = 1) -> Review:
    """Everything the Review step shows; raises ProblemError for settings the estimator refuses.
    ``mac_rows``: this Mac's finished runs (``calibration.this_mac_rows``), for its correction."""
    s = settings_for(recipe, shape, machine, longest_row_tokens)
    est, correction = _corrected(estimate(shape, s), mac_rows)
    verdict = judge(est, machine)
    fit = (auto_fit(shape, s, machine, factor=correction.factor if correction else 1.0)
           if verdict.status == "will not fit" else None)
    iterations, per_epoch = _iterations(recipe, train_rows, valid_rows, hosts)
    t = timing.estimate_time(shape, s, rate, iterations=iterations, train_rows=train_rows,
                             tokens_per_row=tokens_per_row)
    from macfinetune.core.recipe import dump_recipe

    return Review(recipe, est, verdict, fit, gauge(est, verdict, correction), iterations, per_epoch,
                  recipe.training.batch_size * recipe.training.grad_accumulation, t.tokens_per_iteration,
                  duration_text(t), dump_recipe(recipe), train_command(recipe, run_dir, verdict.status),
                  correction)


def _iterations(recipe: Recipe, train_rows: int | None, valid_rows: int,
                hosts: int = 1) -> tuple[int | None, int | None]:
    """(iterations, per epoch); on several hosts both count global steps (each takes its own rows)."""
    if not train_rows:
        return recipe.training.iterations, None
    try:
        p = plan.make_plan(recipe, train_rows, valid_rows, hosts=hosts)
    except ProblemError:
        return recipe.training.iterations, None
    return p.iterations, train_rows // (recipe.training.batch_size * hosts)


def duration_text(t: timing.TimeEstimate) -> str:
    if t.seconds is None:
        return "known once the data is read (epochs need its size)"
    low, high = (timing.format_duration(x) if x >= 60 else "under a minute" for x in t.seconds)
    return low if low == high else f"{low} to {high}"


def apply_fit(recipe: Recipe, fit: Fit) -> Recipe:
    """The recipe with auto-fit's changes (and the accumulation that keeps the effective batch)."""
    s = fit.settings
    sets = [f"{c.key}={_yaml_value(c.new)}" for c in fit.changes]
    if any(c.key == "training.batch_size" for c in fit.changes):
        sets.append(f"training.grad_accumulation={s.grad_accumulation}")
        sets += _save_every_on_update(recipe, s.grad_accumulation)
    return apply_overrides(recipe, sets) if sets else recipe


def _save_every_on_update(recipe: Recipe, accumulation: int) -> list[str]:
    """Checkpoints must fall on optimizer updates: round save_every up to the new accumulation."""
    every = recipe.eval.save_every
    if every % accumulation == 0:
        return []
    return [f"eval.save_every={accumulation * math.ceil(every / accumulation)}"]


def _yaml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


# --- the equivalent command ---------------------------------------------------------------------


def train_command(recipe: Recipe, run_dir: str = "", status: str = "fits") -> str:
    """``macfinetune train`` with the model, the data and every setting that differs from the defaults."""
    args = ["macfinetune", "train"]
    if recipe.model.path:
        args += ["--model", recipe.model.path]
    if recipe.data.path:
        args += ["--data", recipe.data.path]
    for key, value in changed_settings(recipe):
        args += ["--set", f"{key}={value}"]
    if run_dir:
        args += ["--out", run_dir]
    if status == "will not fit":
        args.append("--force")
    return " ".join(shlex.quote(a) for a in args)


def changed_settings(recipe: Recipe) -> list[tuple[str, str]]:
    """(dotted key, value text) of every setting that differs from ``Recipe()``, paths left out."""
    now, default = recipe_to_dict(recipe), recipe_to_dict(Recipe())
    out = []
    for section in SECTIONS:
        for name, value in now[section].items():
            if value != default[section][name] and f"{section}.{name}" not in ("model.path", "data.path"):
                out.append((f"{section}.{name}", _set_text(value)))
    return out


def _set_text(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(value) + "]"
    return _yaml_value(value)


# --- the data -----------------------------------------------------------------------------------


def data_warnings(recipe: Recipe, train_rows: int, valid_rows: int, leaked_rows: int = 0) -> list[str]:
    """What to tell the user about the data's size against the chosen iterations or epochs."""
    out = []
    t = recipe.training
    if train_rows < t.batch_size:
        out.append(f"{train_rows} training rows is fewer than the batch size {t.batch_size}")
    elif train_rows < MIN_TRAIN_ROWS:
        out.append(f"only {train_rows} training rows: the model will learn little and overfit quickly")
    if train_rows >= t.batch_size:
        passes = t.epochs if t.iterations is None else t.iterations * t.batch_size / train_rows
        if passes > MAX_PASSES:
            out.append(f"{passes:.0f} passes over {train_rows} rows: the model will memorise the data; "
                       f"use fewer iterations or more rows (at most {MAX_PASSES} passes)")
    if valid_rows == 0:
        out.append("no validation rows: the run cannot tell when it starts to overfit")
    if leaked_rows:
        out.append(f"{leaked_rows} validation row{'s' if leaked_rows != 1 else ''} also in train: "
                   "the validation loss will look better than it is")
    return out


def split_offer(train_rows: int, has_valid: bool, fraction: float) -> str:
    """The sentence offering a seeded validation split; '' when the data has its own."""
    if has_valid:
        return ""
    held = max(1, round(train_rows * fraction))
    return (f"No validation file: {held:,} of {train_rows:,} rows ({fraction:.0%}) will be held out, "
            "chosen with the recipe's seed (the same rows every run)")


@dataclass(frozen=True)
class Histogram:
    edges: tuple[int, ...]  # bins[i] covers edges[i] <= length < edges[i+1]
    counts: tuple[int, ...]
    max_seq_length: int
    truncated: int  # rows longer than max_seq_length
    rows: int
    longest: int

    @property
    def text(self) -> str:
        if not self.rows:
            return "no rows tokenized yet"
        share = self.truncated / self.rows
        shown = "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"
        cut = f"{self.truncated:,} rows ({shown}) longer than {self.max_seq_length:,} tokens are truncated"
        return f"{self.rows:,} rows, longest {self.longest:,} tokens; " + (
            cut if self.truncated else f"none longer than {self.max_seq_length:,} tokens")


def length_histogram(sorted_lengths: Sequence[int], max_seq_length: int, bins: int = 40) -> Histogram:
    """Equal bins from 0 to the longest row (or the max sequence length, whichever is larger);
    ``sorted_lengths`` sorted ascending, so counting is a binary search per edge."""
    if not sorted_lengths:
        return Histogram((0, 1), (0,), max_seq_length, 0, 0, 0)
    longest = sorted_lengths[-1]
    top = max(longest + 1, max_seq_length + 1)
    width = max(1, math.ceil(top / bins))
    edges = tuple(range(0, width * bins + 1, width))
    positions = [bisect.bisect_left(sorted_lengths, e) for e in edges]
    counts = tuple(b - a for a, b in zip(positions, positions[1:], strict=False))
    truncated = len(sorted_lengths) - bisect.bisect_right(sorted_lengths, max_seq_length)
    return Histogram(edges, counts, max_seq_length, truncated, len(sorted_lengths), longest)


def trained_part(full: str, prompt: str, mask_prompt: bool) -> tuple[str, str]:
    """(the part without loss, the part with loss) of a row rendered through the chat template.

    With prompt masking only what follows the prompt (the answer) carries loss, as in mlx-lm;
    without it, the whole row does."""
    if mask_prompt and prompt and full.startswith(prompt):
        return prompt, full[len(prompt):]
    return "", full


# --- opening a recipe ----------------------------------------------------------------------------


def open_recipe(path) -> Recipe:
    """A recipe file, or a run folder's recipe.yaml (Duplicate as new run); ProblemError when bad."""
    from pathlib import Path

    from macfinetune.core.runs import RECIPE

    path = Path(path)
    return load_recipe(path / RECIPE if path.is_dir() else path)


# --- the method step: catalog rows and quantization offer ----------------------------------------


@dataclass(frozen=True)
class CatalogRow:
    name: str
    description: str
    method: str  # "LoRA", "QLoRA 4-bit", ...
    status: str  # the verdict of this recipe's settings on the chosen model and this Mac
    total_gb: float
    seed: str  # the seed's own figures: "20.6 GB measured on MacBook Pro M4 Max, 128 GB; 300-450 tok/s"
    recipe: Recipe


SIZE_FACTOR = 2.5  # a recipe is listed for models within this factor of the size it was written for


def catalog_rows(entries, shape: ModelShape, machine: Machine, entry_shape=None) -> tuple[list[CatalogRow], int]:
    """Recipes written for a model of about this size (or for any model), judged on this model and
    Mac; those that will not fit are left out. Returns the rows and how many were left out."""
    rows, hidden = [], 0
    for entry in entries:
        written_for = entry_shape(entry) if entry_shape else None
        if written_for is not None and not _similar_size(written_for, shape):
            continue
        recipe = fit_to_model(entry.recipe, shape)
        try:
            g = quick_gauge(recipe, shape, machine)
        except ProblemError:
            continue
        if g.status == "will not fit":
            hidden += 1
            continue
        rows.append(CatalogRow(entry.name, entry.recipe.description, method_label(recipe), g.status, g.total_gb,
                               seed_figures(entry.meta), recipe))
    return rows, hidden


def _similar_size(a: ModelShape, b: ModelShape) -> bool:
    ratio = a.total_params / max(1, b.total_params)
    return 1 / SIZE_FACTOR <= ratio <= SIZE_FACTOR


def method_label(recipe: Recipe) -> str:
    names = {"lora": "LoRA", "dora": "DoRA", "full": "Full"}
    label = names.get(recipe.method.type, recipe.method.type)
    return f"Q{label} {recipe.model.quantize}-bit" if recipe.model.quantize else label


def seed_figures(meta: dict) -> str:
    parts = []
    if meta.get("memory_gb"):
        parts.append(f"{meta['memory_gb']} GB {meta.get('memory_kind', '')}".strip())
    if meta.get("machine"):
        parts.append(f"on {meta['machine']}")
    if meta.get("tokens_per_second"):
        low, high = meta["tokens_per_second"][0], meta["tokens_per_second"][-1]
        parts.append(f"{low}-{high} tokens/s" if low != high else f"{low} tokens/s")
    if meta.get("source"):
        parts.append(f"({meta['source']})")
    return " ".join(parts)


def quantize_offer(shape: ModelShape) -> list[tuple[int, float]]:
    """(bits, GB saved) for quantizing a full-precision base on the fly; [] when it is quantized."""
    from macfinetune.core.estimator import weight_bytes

    if shape.quant_bits:
        return []
    full = weight_bytes(shape, None)
    return [(bits, (full - weight_bytes(shape, bits)) / GB) for bits in (4, 8)]


def methods_for(shape: ModelShape | None) -> list[tuple[str, int | None, str]]:
    """(method type, quantize, label) the Method step offers; QLoRA only when it can apply."""
    quantized = bool(shape and shape.quant_bits)
    out = [("lora", None, "LoRA"), ("dora", None, "DoRA")]
    if quantized:
        return [("lora", None, f"QLoRA (the base is {shape.quant_bits}-bit)"),
                ("dora", None, f"DoRA on the {shape.quant_bits}-bit base")]
    return [("full", None, "Full fine-tuning"), *out, ("lora", 4, "QLoRA 4-bit (quantized on the fly)"),
            ("lora", 8, "QLoRA 8-bit (quantized on the fly)")]
