"""Converting one YAML value to a field's declared type, with the range and choice checks."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields

from macfinetune.core.problems import Problem
from macfinetune.core.recipe.schema import (
    DataSection,
    EvalSection,
    MethodSection,
    ModelSection,
    Recipe,
    TrainingSection,
)

_INVALID = object()


def _convert(value, f, where: dict, problems: list[Problem]):
    """Convert one YAML value to the field's declared type, or record a problem."""
    kind = _field_type(f)
    optional = type(None) in typing.get_args(kind)
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if value is None and optional:
        return None
    try:
        out = (_to_texts if f.metadata.get("texts") else _CONVERTERS[base])(value)
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


def _to_texts(value) -> tuple[str, ...]:
    """A list of free text (prompts): a YAML list, or one item per line of a string."""
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.splitlines()
    elif isinstance(value, (list, tuple)):
        items = [_to_str(v) for v in value]
    else:
        raise TypeError("use a list of texts")
    return tuple(i.strip() for i in items if i.strip())


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
