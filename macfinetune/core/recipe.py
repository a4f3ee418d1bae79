"""Recipes: every setting of a fine-tuning run, as typed frozen dataclasses.

A recipe is YAML on disk (``recipes/*.yaml``, a run's ``recipe.yaml``). It is read with
``yaml.safe_load`` and converted field by field: unknown keys are rejected by name,
wrong types and out-of-range values are reported with the file, line and value.
The help text lives once, on the field, and feeds YAML comments and CLI help.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from macfinetune.core import atomic
from macfinetune.core.problems import Problem, ProblemError

SCHEMA_VERSION = 1


def knob(default, help: str, *, choices=None, low=None, high=None, special=()):
    """A recipe field: its default, its help text and its allowed values."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "special": special}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelSection:
    path: str = knob("", "Local model folder or Hugging Face repo id (e.g. mlx-community/Qwen3-0.6B-bf16).")
    quantize: int | None = knob(
        None,
        "Quantize a full-precision base to 4 or 8 bits into the run folder before training "
        "(QLoRA); null trains the model as it is.",
        choices=(None, 4, 8),
    )
    quantize_group_size: int = knob(64, "Group size of on-the-fly quantization.", choices=(32, 64, 128))


@dataclass(frozen=True)
class DataSection:
    path: str = knob(
        "",
        "A dataset file (.jsonl, .json, .csv, .tsv, .txt/.md), a folder (train/valid[/test] files, "
        ".txt/.md files, or a saved Hugging Face dataset), or a Hugging Face dataset name; "
        "a seeded validation split is made when there is none.",
    )
    mask_prompt: bool = knob(
        False, "Train on completions only: the loss ignores the prompt (chat and completions data)."
    )
    max_seq_length: int = knob(2048, "Longest sequence in tokens; longer rows are truncated.", low=8)
    valid_fraction: float = knob(
        0.1, "Share of rows held out for validation when the data has no valid.jsonl.", low=0.01, high=0.5
    )


@dataclass(frozen=True)
class MethodSection:
    type: str = knob("lora", "lora, dora (weight-decomposed LoRA) or full fine-tuning.", choices=("lora", "dora", "full"))
    num_layers: int = knob(
        16, "Transformer blocks trained, counted from the last; -1 for all.", low=1, special=(-1,)
    )
    rank: int = knob(8, "LoRA/DoRA rank r: the width of the low-rank update.", low=1, high=4096)
    alpha: float = knob(
        16.0, "LoRA/DoRA alpha; the update is scaled by alpha / rank (mlx-lm's 'scale').", low=1e-6
    )
    dropout: float = knob(0.0, "Dropout on the LoRA/DoRA input during training.", low=0.0, high=0.9)
    target_modules: tuple[str, ...] = knob(
        (),
        "Module names to adapt inside each block, e.g. [q_proj, v_proj]; 'all' (or empty) "
        "adapts every linear layer (mlx-lm's default).",
    )

    @property
    def scale(self) -> float:
        """mlx-lm's LoRA scale."""
        return self.alpha / self.rank


@dataclass(frozen=True)
class TrainingSection:
    iterations: int | None = knob(
        1000,
        "Training iterations (one batch each); set this or epochs, not both.",
        low=1,
    )
    epochs: float | None = knob(
        None, "Passes over the training rows; converted to iterations from the data size and batch.", low=0.001
    )
    batch_size: int = knob(4, "Rows per iteration.", low=1, high=4096)
    grad_accumulation: int = knob(
        1, "Iterations whose gradients are summed before one optimizer update.", low=1, high=1024
    )
    learning_rate: float = knob(1e-5, "Peak learning rate.", low=1e-12, high=1.0)
    lr_schedule: str = knob(
        "constant", "Learning-rate schedule after warmup.", choices=("constant", "cosine", "linear")
    )
    min_lr_ratio: float = knob(
        0.0, "Final learning rate of the cosine or linear schedule, as a share of the peak.", low=0.0, high=1.0
    )
    warmup_steps: int = knob(0, "Optimizer updates of linear warmup from 0 to the peak rate.", low=0)
    warmup_ratio: float = knob(
        0.0, "Warmup as a share of all optimizer updates (instead of warmup_steps).", low=0.0, high=0.5
    )
    optimizer: str = knob("adam", "Optimizer: adam, adamw (decoupled weight decay), sgd or adafactor (least memory).", choices=("adam", "adamw", "sgd", "adafactor"))
    weight_decay: float = knob(0.0, "Decoupled weight decay (adamw, sgd, adafactor).", low=0.0, high=1.0)
    grad_checkpoint: bool = knob(
        False, "Recompute activations in the backward pass: less memory, about 30% slower."
    )
    seed: int = knob(0, "Seed for data order, LoRA initialisation and dropout.", low=0)


@dataclass(frozen=True)
class EvalSection:
    report_every: int = knob(10, "Iterations between training-loss reports.", low=1)
    eval_every: int = knob(50, "Iterations between validation passes.", low=1)
    save_every: int = knob(50, "Iterations between checkpoints.", low=1)
    val_batches: int = knob(25, "Validation batches per pass; -1 for the whole validation set.", low=1, special=(-1,))
    early_stopping_patience: int = knob(
        0, "Stop after this many validations without improvement (0: never stop early).", low=0
    )
    early_stopping_min_delta: float = knob(
        0.0, "Smallest drop in validation loss that counts as an improvement.", low=0.0
    )
    keep_checkpoints: int = knob(
        0, "Keep only the best N checkpoints by validation loss, plus the latest (0: keep all).", low=0
    )


@dataclass(frozen=True)
class Recipe:
    schema: int = knob(SCHEMA_VERSION, "Recipe schema version.")
    name: str = knob("", "Short name of the recipe.")
    description: str = knob("", "What the recipe is for.")
    model: ModelSection = field(default_factory=ModelSection, metadata={"help": "The base model."})
    data: DataSection = field(default_factory=DataSection, metadata={"help": "The dataset."})
    method: MethodSection = field(default_factory=MethodSection, metadata={"help": "How weights are trained."})
    training: TrainingSection = field(default_factory=TrainingSection, metadata={"help": "Optimisation."})
    eval: EvalSection = field(default_factory=EvalSection, metadata={"help": "Reports, validation and checkpoints."})


SECTIONS = ("model", "data", "method", "training", "eval")
_TOP_SCALARS = ("schema", "name", "description")

# Keys people bring from other tools: where they go in a recipe, or why they do not exist here.
FOREIGN_KEYS: dict[str, str] = {
    "lora_r": "use method.rank",
    "lora_rank": "use method.rank",
    "r": "use method.rank",
    "lora_alpha": "use method.alpha (mlx-lm's scale = alpha / rank)",
    "scale": "use method.alpha: mlx-lm's scale = alpha / rank",
    "lora_dropout": "use method.dropout",
    "lora_layers": "use method.num_layers",
    "dora_layers": "use method.num_layers with method.type: dora",
    "fine_tune_type": "use method.type",
    "iters": "use training.iterations",
    "max_iterations": "use training.iterations",
    "num_train_epochs": "use training.epochs",
    "gradient_accumulation_steps": "use training.grad_accumulation",
    "gradient_checkpointing": "use training.grad_checkpoint",
    "max_length": "use data.max_seq_length",
    "lr": "use training.learning_rate",
    "torch_compile": "MLX compiles the training step itself; remove the key",
    "load_in_4bit": "use model.quantize: 4 (MLX affine 4-bit, not nf4)",
    "bnb_4bit_quant_type": "nf4 is a bitsandbytes format; MLX uses affine quantization: model.quantize: 4",
    "fp16": "MLX trains in the model's own dtype; remove the key",
    "bf16": "MLX trains in the model's own dtype; remove the key",
    # litgpt, Hugging Face Trainer/PEFT/TRL and mlx-lm command-line names (issue 3)
    "micro_batch_size": "use training.batch_size (rows per iteration; litgpt's micro batch)",
    "per_device_train_batch_size": "use training.batch_size",
    "global_batch_size": "use training.batch_size x training.grad_accumulation (global batch / micro batch)",
    "grad_accumulation_steps": "use training.grad_accumulation",
    "lr_warmup_steps": "use training.warmup_steps",
    "lr_scheduler_type": "use training.lr_schedule (constant, cosine or linear)",
    "min_lr": "use training.min_lr_ratio = min_lr / learning_rate",
    "lr_decay_iters": "the schedule decays over the whole run; set training.iterations",
    "max_steps": "use training.iterations",
    "optim": "use training.optimizer (adam, adamw, sgd or adafactor)",
    "use_dora": "use method.type: dora",
    "lora_query": "use method.target_modules, e.g. [q_proj, v_proj]",
    "lora_key": "use method.target_modules, e.g. [q_proj, k_proj, v_proj]",
    "lora_value": "use method.target_modules, e.g. [q_proj, v_proj]",
    "lora_projection": "use method.target_modules with o_proj",
    "lora_mlp": "use method.target_modules with gate_proj, up_proj, down_proj",
    "lora_head": "mlx-lm adapts the layers inside the blocks, not the output head; remove the key",
    "bnb_4bit_use_double_quant": "MLX affine quantization has no double quantization; model.quantize: 4 is enough",
    "bnb_4bit_compute_dtype": "MLX computes in the model's own dtype; remove the key",
    "quantization_config": "use model.quantize: 4 or 8 (MLX affine, group model.quantize_group_size)",
    "precision": "MLX trains in the model's own dtype (bf16 weights train in bf16); remove the key",
    "eval_steps": "use eval.eval_every",
    "steps_per_eval": "use eval.eval_every",
    "save_steps": "use eval.save_every",
    "logging_steps": "use eval.report_every",
    "steps_per_report": "use eval.report_every",
    "load_best_model_at_end": "the best checkpoint by validation loss is always kept (fuse RUN --checkpoint best)",
    "task_type": "macfinetune trains causal language models; remove the key",
    "devices": "MLX trains on one Mac's GPU; remove the key",
}


def field_help(section: str, name: str) -> str:
    cls = _section_class(section)
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def all_keys() -> list[str]:
    """Every settable key, dotted: 'training.batch_size', ..."""
    keys = [k for k in _TOP_SCALARS if k != "schema"]
    for section in SECTIONS:
        keys += [f"{section}.{f.name}" for f in fields(_section_class(section))]
    return keys


# --- reading ---------------------------------------------------------------------------


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate a recipe file; raise ProblemError naming file, line and value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProblemError(Problem("recipe file not found", file=str(path))) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProblemError(Problem(f"cannot read the recipe: {e}", file=str(path))) from None
    return parse_recipe(text, file=str(path))


def parse_recipe(text: str, file: str = "<recipe>") -> Recipe:
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ProblemError(Problem(f"not valid YAML: {getattr(e, 'problem', e)}", file=file, line=line)) from None
    if data is None:
        raise ProblemError(Problem("the recipe is empty", file=file))
    if not isinstance(data, dict):
        raise ProblemError(Problem(f"expected a mapping of settings, got {type(data).__name__}", file=file, line=1))
    return recipe_from_dict(data, file=file, lines=lines)


def recipe_from_dict(data: dict, file: str = "<recipe>", lines: dict[str, int] | None = None) -> Recipe:
    lines = lines or {}
    problems: list[Problem] = []
    data = _migrate(dict(data), file, problems)

    def where(key):
        return {"file": file, "line": lines.get(key), "field": key}

    top = {}
    for key, value in data.items():
        if key in _TOP_SCALARS:
            top[key] = _convert(value, _field(Recipe, key), where(key), problems)
        elif key in SECTIONS:
            top[key] = _section_from_dict(key, value, where, problems)
        else:
            problems.append(_unknown_key(key, where(key), value))
    if problems:
        raise ProblemError(problems)
    recipe = Recipe(**{k: v for k, v in top.items() if v is not _INVALID})
    problems += check_recipe(recipe, file=file, lines=lines)
    if problems:
        raise ProblemError(problems)
    return recipe


def _section_from_dict(section, value, where, problems):
    cls = _section_class(section)
    if value is None:
        return cls()
    if not isinstance(value, dict):
        problems.append(Problem(f"expected a mapping, got {value!r}", **where(section), value=value))
        return _INVALID
    kwargs = {}
    for key, item in value.items():
        dotted = f"{section}.{key}"
        f = _field(cls, key)
        if f is None:
            problems.append(_unknown_key(dotted, where(dotted), item))
            continue
        converted = _convert(item, f, where(dotted), problems)
        if converted is not _INVALID:
            kwargs[key] = converted
    return cls(**kwargs)


def _migrate(data: dict, file: str, problems: list[Problem]) -> dict:
    """Bring older schemas to the current one; refuse newer ones."""
    version = data.get("schema", SCHEMA_VERSION)
    if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
        problems.append(
            Problem(
                f"schema {version!r} is not supported; this macfinetune reads schema 1..{SCHEMA_VERSION}",
                file=file,
                field="schema",
                value=version,
            )
        )
    for step in _MIGRATIONS[version - 1 if isinstance(version, int) and version >= 1 else len(_MIGRATIONS):]:
        data = step(data)
    return data


_MIGRATIONS: list = []  # _MIGRATIONS[i] turns schema i+1 into schema i+2


def _unknown_key(key: str, where: dict, value) -> Problem:
    leaf = key.rsplit(".", 1)[-1]
    if leaf in FOREIGN_KEYS:
        hint = FOREIGN_KEYS[leaf]
    else:
        candidates = all_keys() + list(SECTIONS) if "." not in key else all_keys()
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        if not close:
            leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys()}
            close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.7)]
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(all_keys())}"
    return Problem(f"unknown key {key!r}; {hint}", file=where["file"], line=where["line"], field=key, value=value)


# --- conversion -------------------------------------------------------------------------

_INVALID = object()


def _convert(value, f, where: dict, problems: list[Problem]):
    """Convert one YAML value to the field's declared type, or record a problem."""
    kind = _field_type(f)
    optional = type(None) in typing.get_args(kind)
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if value is None and optional:
        return None
    try:
        out = _CONVERTERS[base](value)
    except (TypeError, ValueError) as e:
        problems.append(Problem(f"expected {_type_name(base)}, got {value!r}{_reason(e)}", value=value, **where))
        return _INVALID
    problem = _check_range(out, f.metadata)
    if problem:
        problems.append(Problem(problem, value=value, **where))
        return _INVALID
    return out


def _to_int(value) -> int:
    if isinstance(value, bool):
        raise TypeError("a yes/no value is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    return int(str(value).strip())


def _to_float(value) -> float:
    if isinstance(value, bool):
        raise TypeError("a yes/no value is not a number")
    out = float(str(value).strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(out):
        raise ValueError("not a finite number")
    return out


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError("use true or false")


def _to_str(value) -> str:
    if isinstance(value, (dict, list)):
        raise TypeError("a mapping or list is not text")
    return str(value)


def _to_names(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        raise TypeError("use 'all' or a list of module names")
    items = [i for i in items if i]
    return () if items in ([], ["all"]) else tuple(items)


_CONVERTERS = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str, tuple: _to_names}


def _check_range(value, meta) -> str | None:
    if value in meta.get("special", ()) or value is None:
        return None
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        return f"{value!r} is not one of {shown}"
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        extra = f" (or {', '.join(map(str, meta['special']))})" if meta.get("special") else ""
        return f"{value!r} is out of range; allowed {_range_text(low, high)}{extra}"
    return None


def _range_text(low, high) -> str:
    if high is None:
        return f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"{low} to {high}"


def _type_name(t) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text", tuple: "a list of names"}[t]


def _reason(e: Exception) -> str:
    text = str(e)
    return f" ({text})" if text and "invalid literal" not in text and "could not convert" not in text else ""


def _field(cls, name):
    return next((f for f in fields(cls) if f.name == name), None)


def _section_class(section: str):
    return typing.get_type_hints(Recipe)[section]


_HINTS_CACHE: dict = {}


def _field_type(f):
    owner = next(c for c in (Recipe, ModelSection, DataSection, MethodSection, TrainingSection, EvalSection) if f in fields(c))
    if owner not in _HINTS_CACHE:
        _HINTS_CACHE[owner] = typing.get_type_hints(owner)
    kind = _HINTS_CACHE[owner][f.name]
    if typing.get_origin(kind) in (tuple,):
        return tuple
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return kind
    return kind


# --- cross-field rules ------------------------------------------------------------------


def check_recipe(recipe: Recipe, file: str = "<recipe>", lines: dict[str, int] | None = None) -> list[Problem]:
    """Rules that involve more than one field."""
    lines = lines or {}
    t, m = recipe.training, recipe.method
    rules = [
        (
            (t.iterations is None) == (t.epochs is None),
            "training.epochs",
            "set either training.iterations or training.epochs (set the other to null)",
            (t.iterations, t.epochs),
        ),
        (
            t.warmup_steps > 0 and t.warmup_ratio > 0,
            "training.warmup_ratio",
            "set warmup_steps or warmup_ratio, not both",
            t.warmup_ratio,
        ),
        (
            t.weight_decay > 0 and t.optimizer == "adam",
            "training.weight_decay",
            "adam has no weight decay in MLX; use optimizer: adamw",
            t.weight_decay,
        ),
        (
            recipe.eval.save_every % t.grad_accumulation != 0,
            "eval.save_every",
            f"save_every must be a multiple of training.grad_accumulation ({t.grad_accumulation}) so that "
            "every checkpoint falls on an optimizer update and resumes exactly",
            recipe.eval.save_every,
        ),
        (
            recipe.model.quantize is not None and m.type == "full",
            "model.quantize",
            "full fine-tuning cannot train quantized weights; use method.type: lora (QLoRA) or no quantization",
            recipe.model.quantize,
        ),
    ]
    return [
        Problem(msg, file=file, line=lines.get(key), field=key, value=value)
        for bad, key, msg, value in rules
        if bad
    ]


def apply_overrides(recipe: Recipe, assignments: list[str]) -> Recipe:
    """Apply 'key=value' strings (dotted keys, or a leaf name that is unique)."""
    data = recipe_to_dict(recipe)
    problems = []
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        dotted = _resolve_key(key)
        if not sep or dotted is None:
            problems.append(_unknown_key(key, {"file": "--set", "line": None}, value) if sep
                            else Problem(f"expected key=value, got {text!r}", file="--set", value=text))
            continue
        parsed = yaml.safe_load(value) if value.strip() else None
        _assign(data, dotted, parsed)
        if dotted in _EITHER_OR and parsed not in (None, 0):
            _assign(data, _EITHER_OR[dotted], _EITHER_OR_OFF[dotted])
    if problems:
        raise ProblemError(problems)
    return recipe_from_dict(data, file="--set")


# Setting one of a pair on the command line switches the other off.
_EITHER_OR = {
    "training.epochs": "training.iterations",
    "training.iterations": "training.epochs",
    "training.warmup_ratio": "training.warmup_steps",
    "training.warmup_steps": "training.warmup_ratio",
}
_EITHER_OR_OFF = {
    "training.epochs": None,
    "training.iterations": None,
    "training.warmup_ratio": 0,
    "training.warmup_steps": 0.0,
}


def _resolve_key(key: str) -> str | None:
    keys = all_keys()
    if key in keys:
        return key
    matches = [k for k in keys if k.endswith("." + key)]
    return matches[0] if len(matches) == 1 else None


def _assign(data: dict, dotted: str, value) -> None:
    section, _, leaf = dotted.partition(".")
    if leaf:
        data.setdefault(section, {})[leaf] = value
    else:
        data[section] = value


def with_paths(recipe: Recipe, model: str | None = None, data: str | None = None) -> Recipe:
    """The recipe with the model and/or data path replaced (CLI --model / --data)."""
    if model:
        recipe = replace(recipe, model=replace(recipe.model, path=model))
    if data:
        recipe = replace(recipe, data=replace(recipe.data, path=data))
    return recipe


# --- writing ----------------------------------------------------------------------------


def recipe_to_dict(recipe: Recipe) -> dict:
    out: dict = {k: getattr(recipe, k) for k in _TOP_SCALARS}
    for section in SECTIONS:
        obj = getattr(recipe, section)
        out[section] = {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    return out


def _plain(value):
    if isinstance(value, tuple):
        return list(value) if value else "all"
    return value


def dump_recipe(recipe: Recipe, header: str = "") -> str:
    """YAML with every key commented by its help text; floats always carry a dot."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    data = recipe_to_dict(recipe)
    for key in _TOP_SCALARS:
        lines.append(f"{key}: {_yaml_scalar(data[key])}  # {_field(Recipe, key).metadata['help']}")
    for section in SECTIONS:
        lines.append("")
        lines.append(f"{section}:  # {_field(Recipe, section).metadata['help']}")
        cls = _section_class(section)
        for f in fields(cls):
            value = _yaml_scalar(data[section][f.name])
            lines.append(f"  {f.name}: {value}  # {f.metadata['help']}")
    return "\n".join(lines) + "\n"


def save_recipe(path: Path, recipe: Recipe, header: str = "") -> None:
    atomic.write_text(Path(path), dump_recipe(recipe, header))


def _yaml_scalar(value) -> str:
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exp = text.split("e")
            text = f"{mantissa}.0e{exp}"
        return text
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return yaml.safe_dump(value, default_style=None, width=10_000).strip().removesuffix("...").strip()


def _key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every key, dotted, from the YAML node tree."""
    root = yaml.compose(text)
    out: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return out
    for key_node, value_node in root.value:
        key = str(key_node.value)
        out[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                out[f"{key}.{sub_key.value}"] = sub_key.start_mark.line + 1
    return out
