"""Recommend a configuration for a model on a machine, with the reason for each choice.

The rules are the seeds' (resources/estimator/rules.yaml names them): hyperparameters by model
size, then the best method that fits this machine (full fine-tuning, DoRA, LoRA, then LoRA on a
quantized base), then auto-fit for whatever still does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import yaml

from macfinetune.core.autofit import Fit, auto_fit, prequantized_repo
from macfinetune.core.estimator import Settings, format_params
from macfinetune.core.hardware import GB, Machine
from macfinetune.core.modelshape import ModelShape
from macfinetune.core.paths import shipped
from macfinetune.core.recipe import (
    DataSection,
    EvalSection,
    MethodSection,
    ModelSection,
    Recipe,
    TrainingSection,
)

# Methods in the order of the quality they reach (seed 000: full > DoRA > LoRA when memory allows).
METHOD_ORDER = (("full", None), ("dora", None), ("lora", None), ("lora", 4))


@dataclass(frozen=True)
class Choice:
    key: str  # recipe key, 'training.learning_rate'
    value: object
    reason: str


@dataclass(frozen=True)
class Recommendation:
    recipe: Recipe
    choices: tuple[Choice, ...]
    fit: Fit
    shape: ModelShape  # the model the estimate is for: a 4-bit copy when only that fits

    def reason(self, key: str) -> str:
        return next(c.reason for c in self.choices if c.key == key)


@lru_cache(maxsize=1)
def rules() -> dict:
    with open(shipped("resources", "estimator", "rules.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def size_band(shape: ModelShape) -> dict:
    billions = shape.total_params / 1e9
    return next(b for b in rules()["bands"] if billions <= b["up_to_billion"])


LR_FACTOR = 10  # a rate this many times the seeds' for the size and method is called unusual (either way)


def advice(recipe, shape: ModelShape) -> dict[str, str]:
    """Settings that run but that the seeds would not choose, per recipe key, in words (never blocking)."""
    band, lr = size_band(shape), recipe.training.learning_rate
    full = recipe.method.type == "full"
    usual = band["lr_full" if full else "lr_adapter"]
    source = ("the demo recipe's rate" if band.get("below_seeds") else
              "seed 000's full fine-tuning rate" if full else "litgpt's adapter rate (seed 002)")
    size = f"{format_params(shape.total_params)} parameters"
    if lr > LR_FACTOR * usual:
        return {"training.learning_rate": f"unusually high: {source} for {size} is {usual:g}; "
                                          f"over {LR_FACTOR}x that, the loss often diverges"}
    if lr < usual / LR_FACTOR**2:
        return {"training.learning_rate": f"unusually low: {source} for {size} is {usual:g}; "
                                          "it may barely learn"}
    return {}


def recommend(shape: ModelShape, machine: Machine, *, model_path: str = "", data_path: str = "",
              train_rows: int | None = None, longest_row_tokens: int | None = None,
              sequences_per_row: int = 1) -> Recommendation:
    """A recipe for ``shape`` on ``machine``; every choice carries its reason. ``sequences_per_row``: 2 for
    preference pairs (DPO, ORPO), whose batch rows are two sequences each: the fit is judged for them."""
    band = {**size_band(shape), "sequences_per_row": sequences_per_row}
    trained, fit, method_reason = _choose_method(shape, machine, band, longest_row_tokens)
    s = fit.settings
    choices = [Choice("method.type", s.method, method_reason)]
    if trained is not shape:  # the recipe trains the copy quantized beforehand, as estimated
        model_path = prequantized_repo(model_path or "model", trained.quant_bits)
        choices.append(Choice("model.path", model_path, _prequantized_reason(shape, s)))
    choices += _adapter_choices(shape, band, s) + _training_choices(shape, band, s, train_rows)
    choices += _fit_choices(fit, _length_reason(shape, band, longest_row_tokens))
    choices += _schedule_choices(train_rows, s.grad_accumulation)
    return Recommendation(_recipe(choices, model_path, data_path, s), tuple(choices), fit, trained)


def _base_settings(shape: ModelShape, band: dict, method: str, quantize: int | None,
                   longest: int | None) -> Settings:
    prefix = "dora" if method == "dora" else "lora"
    length = _sequence_length(shape, band, longest)
    return Settings(
        method=method, quantize=quantize, batch_size=band["batch_size"], max_seq_length=length,
        num_layers=min(band[f"{prefix}_layers"], shape.layers) if method != "full" else -1,
        rank=band[f"{prefix}_rank"], grad_checkpoint=band["grad_checkpoint"],
        optimizer="adamw" if method == "full" else "adam", attention="auto", loss="auto",
        sequences_per_row=band.get("sequences_per_row", 1),
    )


def _sequence_length(shape: ModelShape, band: dict, longest: int | None) -> int:
    length = band["max_seq_length"]
    if longest:
        length = min(length, 256 * -(-longest // 256))  # the longest row, rounded up to 256
    return min(length, shape.max_positions or length)


def _length_reason(shape: ModelShape, band: dict, longest: int | None) -> str:
    """Why ``_sequence_length`` chose its length: seed 000's rule, the data's longest row or the model's positions."""
    length, rule = _sequence_length(shape, band, longest), band["max_seq_length"]
    if length == rule:
        return "seed 000: 3072 only below 15B, 1536-2048 for 20B+"
    if shape.max_positions and length == shape.max_positions:
        return f"the model's {shape.max_positions} positions (seed 000's rule: {rule})"
    return f"your longest row is {longest} tokens, rounded up to 256 (seed 000's {rule} would only add padding)"


def _choose_method(shape: ModelShape, machine: Machine, band: dict,
                   longest: int | None) -> tuple[ModelShape, Fit, str]:
    """The first method, in quality order, that fits with at most checkpointing, shorter rows and a
    smaller batch; else LoRA on a 4-bit base (quantized on the fly, or beforehand when loading the
    full-precision model is what does not fit), auto-fitted."""
    candidates = [(m, q) for m, q in METHOD_ORDER if not (shape.quant_bits and (m == "full" or q))]
    if band.get("below_seeds"):  # no seed rule below 1B: the demo recipe's LoRA, which learns there
        candidates = [(m, q) for m, q in candidates if m == "lora"]
    for method, quantize in candidates:
        fit = auto_fit(shape, _base_settings(shape, band, method, quantize, longest), machine)
        gentle = all(c.key in _GENTLE for c in fit.changes)
        if fit.found and gentle:
            return shape, fit, _method_reason(method, quantize, fit, machine, band.get("below_seeds", False))
    method, quantize = candidates[-1]
    fit = auto_fit(shape, _base_settings(shape, band, method, quantize, longest), machine)
    if quantize and not fit.found:
        shape = replace(shape, quant_bits=quantize, quant_group=64)
        fit = auto_fit(shape, _base_settings(shape, band, method, None, longest), machine)
    return shape, fit, _method_reason(method, quantize, fit, machine) + "; nothing better fits this machine"


_GENTLE = ("training.grad_checkpoint", "data.max_seq_length", "training.batch_size")


def _prequantized_reason(shape: ModelShape, s: Settings) -> str:
    from macfinetune.core.estimator import weight_bytes

    full = weight_bytes(shape, None) / GB
    return (f"a 4-bit copy of this model quantized beforehand (this mlx-community repository, or "
            f"`macfinetune models convert --quantize 4`): "
            f"quantizing it while loading holds the {full:.0f} GB full-precision weights")


def _method_reason(method: str, quantize: int | None, fit: Fit, machine: Machine, below_seeds: bool = False) -> str:
    need = f"{fit.estimate.total_gb:.1f} GB of {machine.usable_bytes / GB:.1f} GB usable"
    if below_seeds:
        return (f"LoRA fits ({need}): below the seeds' 1B-32B range the demo recipe's method, which learns there "
                "(full fine-tuning and DoRA were not weighed)")
    texts = {
        ("full", None): f"full fine-tuning fits ({need}): it trains every weight, the most capacity",
        ("dora", None): f"DoRA fits ({need}): better convergence than LoRA at a similar memory (seed 000)",
        ("lora", None): f"LoRA fits ({need}); full fine-tuning and DoRA do not fit this machine",
        ("lora", 4): f"LoRA on a 4-bit base (QLoRA) fits ({need}); full-precision bases do not",
    }
    return texts[(method, quantize)]


def _adapter_choices(shape: ModelShape, band: dict, s: Settings) -> list[Choice]:
    billions = f"{format_params(shape.total_params)} parameters"
    if band.get("below_seeds"):
        billions += " (below the seeds' 1B-32B range: the demo recipe's rules)"
    if s.method == "full":
        return [Choice("method.num_layers", -1, "full fine-tuning trains every block (the seeds' baselines)")]
    prefix = "dora" if s.method == "dora" else "lora"
    scale = float(band[f"{prefix}_alpha"]) / band[f"{prefix}_rank"]
    alpha = scale * s.rank
    rule = "the demo recipe's rules" if band.get("below_seeds") else "seed 000"
    source = "seed 000's DoRA recipes" if s.method == "dora" else "seed 000's LoRA table"
    return [
        Choice("method.rank", s.rank, f"{source} for {billions}: rank {band[f'{prefix}_rank']}"),
        Choice("method.alpha", alpha, f"alpha = {scale:g} x rank ({rule}): mlx-lm's scale alpha / rank = {scale:g}"),
        Choice("method.num_layers", s.num_layers, f"{source}: {_blocks(band[f'{prefix}_layers'], shape)} for {billions}"),
        Choice("method.dropout", rules()["lora_dropout"], "LoRA dropout 0.05 (seeds 001, 002, 004)"),
    ]


def _blocks(rule: int, shape: ModelShape) -> str:
    return f"all {shape.layers} blocks" if rule >= shape.layers else f"{rule} of {shape.layers} blocks"


def _training_choices(shape: ModelShape, band: dict, s: Settings, rows: int | None) -> list[Choice]:
    billions = format_params(shape.total_params) + (" (below the seeds' range: the demo recipe's rate)"
                                                     if band.get("below_seeds") else "")
    if s.method == "full":
        lr = Choice("training.learning_rate", band["lr_full"],
                    f"seed 000's full fine-tuning rate for {billions} parameters")
        extra = [Choice("training.optimizer", "adamw", "AdamW for its decoupled weight decay"),
                 Choice("training.weight_decay", rules()["full_weight_decay"], "weight decay 0.01 against overfitting (seed 000)")]
    else:
        lr = Choice("training.learning_rate", band["lr_adapter"],
                    f"litgpt's LoRA rate for {billions} parameters (seed 002): an adapter starts at zero and needs "
                    "a larger rate than full-weight training")
        extra = [Choice("training.optimizer", "adam", "Adam: mlx-lm's default")]
    return [lr, *extra]


def _fit_choices(fit: Fit, length_reason: str) -> list[Choice]:
    s, changed = fit.settings, {c.key: c for c in fit.changes}
    out = []
    for key, value, default_reason in (
        ("training.batch_size", s.batch_size, "seed 000: batch 3+ below 10B, 2 for 10-20B, 1 above 20B"),
        ("training.grad_accumulation", s.grad_accumulation, "no accumulation needed"),
        ("data.max_seq_length", s.max_seq_length, length_reason),
        ("training.grad_checkpoint", s.grad_checkpoint, "seed 000: gradient checkpointing for large models"),
        ("model.quantize", s.quantize, "the base is trained as it is"),
    ):
        change = changed.get(key) or (changed.get("training.batch_size") if key == "training.grad_accumulation" else None)
        reason = f"auto-fit: {change.what}, {change.cost}" if change else default_reason
        out.append(Choice(key, value, reason))
    return out


def _schedule_choices(rows: int | None, accumulation: int) -> list[Choice]:
    r = rules()
    passes = r["passes_small_data"] if rows and rows < r["small_data_rows"] else r["passes"]
    iterations_hint = "" if rows else " (converted to iterations from your data's size)"
    # checkpoints fall on optimizer updates: the largest multiple of the accumulation within 25-50 iterations
    save_every = accumulation * max(1, r["save_every"] // accumulation)
    return [
        Choice("training.epochs", float(passes), f"2-3 passes over the data (seed 000){iterations_hint}"),
        Choice("training.lr_schedule", r["lr_schedule"], "cosine decay (seed 000's recipes)"),
        Choice("training.warmup_ratio", r["warmup_ratio"], "warmup of about 5% of the updates (seed 000's recipes)"),
        Choice("eval.eval_every", r["eval_every"], "validate every 25 iterations (seed 000)"),
        Choice("eval.save_every", save_every, "a checkpoint every 25-50 iterations (seed 000), on an optimizer update"),
    ]


def _recipe(choices: list[Choice], model_path: str, data_path: str, s: Settings) -> Recipe:
    values = {c.key: c.value for c in choices}
    model = ModelSection(path=model_path, quantize=s.quantize)  # a pre-quantized copy: see the model.path choice
    method = MethodSection(type=s.method, num_layers=s.num_layers, rank=s.rank,
                           alpha=float(values.get("method.alpha", 2.0 * s.rank)),
                           dropout=float(values.get("method.dropout", 0.0)))
    training = TrainingSection(
        iterations=None, epochs=values["training.epochs"], batch_size=s.batch_size,
        grad_accumulation=s.grad_accumulation, learning_rate=values["training.learning_rate"],
        lr_schedule=values["training.lr_schedule"], warmup_ratio=values["training.warmup_ratio"],
        optimizer=values["training.optimizer"], weight_decay=values.get("training.weight_decay", 0.0),
        grad_checkpoint=s.grad_checkpoint, attention=s.attention, loss=s.loss)
    return Recipe(name="recommended", description="Recommended by macfinetune for this model and machine.",
                  model=model, data=replace(DataSection(), path=data_path, max_seq_length=s.max_seq_length),
                  method=method, training=training,
                  eval=EvalSection(eval_every=values["eval.eval_every"], save_every=values["eval.save_every"]))
