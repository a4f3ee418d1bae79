"""Writing recipes: YAML with every key commented by its help text, floats with a dot."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from macfinetune.core import atomic
from macfinetune.core.recipe.schema import _TOP_SCALARS, SECTIONS, Recipe, _field, _section_class


def recipe_to_dict(recipe: Recipe) -> dict:
    out: dict = {k: getattr(recipe, k) for k in _TOP_SCALARS}
    for section in SECTIONS:
        obj = getattr(recipe, section)
        out[section] = {f.name: _plain(getattr(obj, f.name), f.metadata.get("texts")) for f in fields(obj)}
    return out


def _plain(value, texts: bool = False):
    if isinstance(value, tuple):
        return list(value) if value or texts else "all"
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
        return "[" + ", ".join(_yaml_item(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    import yaml  # here, not at import: the app paints before it needs YAML

    return yaml.safe_dump(value, default_style=None, width=10_000).strip().removesuffix("...").strip()


def _yaml_item(text: str) -> str:
    """A list item: a plain name as it is, anything else double-quoted (JSON strings are YAML)."""
    return text if re.fullmatch(r"[A-Za-z0-9_.-]+", text) else json.dumps(text, ensure_ascii=False)
