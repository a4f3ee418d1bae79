"""Reading recipes: YAML to typed dataclasses, unknown keys, types, ranges and cross-field rules, --set overrides."""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path

from macfinetune.core import yamlfast
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe.convert import _INVALID, _convert
from macfinetune.core.recipe.dump import recipe_to_dict
from macfinetune.core.recipe.schema import (
    _TOP_SCALARS,
    FOREIGN_KEYS,
    SCHEMA_VERSION,
    SECTIONS,
    Recipe,
    _field,
    _section_class,
    all_keys,
)

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
    import yaml  # here, not at import: the app paints before it needs YAML

    try:
        data = yamlfast.safe_load(text)
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
    elif key in SECTIONS:  # '--set training=5': a section, not a key
        some = [k for k in all_keys() if k.startswith(key + ".")][:3]
        return Problem(f"{key} is a section, not a key; set one of its keys, e.g. {', '.join(some)}",
                       file=where["file"], line=where["line"], field=key, value=value)
    else:
        candidates = all_keys() + list(SECTIONS) if "." not in key else all_keys()
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        if not close:
            leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys()}
            close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.7)]
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(all_keys())}"
    return Problem(f"unknown key {key!r}; {hint}", file=where["file"], line=where["line"], field=key, value=value)


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
            recipe.data.chunk_overlap * 2 >= recipe.data.max_seq_length,
            "data.chunk_overlap",
            f"chunk_overlap must be less than half of data.max_seq_length ({recipe.data.max_seq_length}) so that "
            "every chunk brings new text",
            recipe.data.chunk_overlap,
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
            t.iterations is not None and t.iterations % t.grad_accumulation != 0,
            "training.iterations",
            f"iterations must be a multiple of training.grad_accumulation ({t.grad_accumulation}) so that every "
            "iteration's gradients reach an optimizer update; use "
            f"{max(t.grad_accumulation, (t.iterations or 0) // t.grad_accumulation * t.grad_accumulation)} or "
            f"{-(-(t.iterations or 0) // t.grad_accumulation) * t.grad_accumulation}",
            t.iterations,
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
        (
            t.objective != "sft" and (recipe.data.packing or recipe.data.length_buckets),
            "data.packing" if recipe.data.packing else "data.length_buckets",
            f"training.objective: {t.objective} batches each pair's two answers together; turn packing and "
            "length_buckets off",
            True,
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
    problems, chosen = [], set()
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        dotted = _resolve_key(key)
        if not sep or dotted is None:
            problems.append(_unknown_key(key, {"file": "--set", "line": None}, value) if sep
                            else Problem(f"expected key=value, got {text!r}", file="--set", value=text))
            continue
        parsed = _yaml().safe_load(value) if value.strip() else None
        _assign(data, dotted, parsed)
        if dotted in _EITHER_OR and parsed not in (None, 0):
            _assign(data, _EITHER_OR[dotted], _EITHER_OR_OFF[dotted])
            problems += _both_set(dotted, chosen)
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


def _both_set(dotted: str, chosen: set) -> list[Problem]:
    """One --set list that sets both of a pair (iterations and epochs) is a contradiction, not an order."""
    chosen.add(dotted)
    other = _EITHER_OR[dotted]
    if other not in chosen:
        return []
    return [Problem(f"both {other} and {dotted} are set; set one of them", file="--set", field=dotted)]


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


def _key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every key, dotted, from the YAML node tree."""
    yaml = _yaml()
    root = yamlfast.compose(text)
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


def _yaml():
    import yaml

    return yaml
