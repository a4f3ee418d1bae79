"""The recipe catalog (shipped and the user's own) and the model shapes it knows without a download.

Shipped recipes live in ``recipes/``; what is not a training setting (the seed they come from,
the memory and speed the seed reports, feasibility on the seed's machine) lives beside them in
``resources/estimator/catalog.yaml``, keyed by recipe name. The user's recipes live in
``paths.user_recipes_home()``; "save as recipe" copies a run's resolved recipe there.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml

from macfinetune.core import paths, runs
from macfinetune.core.models_catalog import cached_snapshot
from macfinetune.core.modelshape import ModelShape, read_shape
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, load_recipe, save_recipe

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_QUANT_SUFFIX = re.compile(r"-(4|8)bit$", re.IGNORECASE)
_SUFFIXES = re.compile(r"(-(mlx|bf16|fp16|float16|4bit|8bit|instruct-?\d*|it))+$", re.IGNORECASE)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    path: Path
    recipe: Recipe
    user: bool
    meta: dict  # catalog.yaml's notes for a shipped recipe; {} for the user's own


@lru_cache(maxsize=1)
def catalog_meta() -> dict:
    with open(paths.shipped("resources", "estimator", "catalog.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def list_recipes(include_user: bool = True) -> list[CatalogEntry]:
    """Every shipped recipe, then the user's; a user recipe that does not load is skipped."""
    meta = catalog_meta().get("recipes", {})
    shipped = sorted(paths.shipped("recipes", "x.yaml").parent.glob("*.yaml"))
    entries = [CatalogEntry(p.stem, p, load_recipe(p), False, meta.get(p.stem, {})) for p in shipped]
    if include_user:
        entries += _user_entries()
    return entries


def _user_entries() -> list[CatalogEntry]:
    folder = paths.user_recipes_home()
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            out.append(CatalogEntry(path.stem, path, load_recipe(path), True, {}))
        except ProblemError:
            continue
    return out


def entry_shape(entry: CatalogEntry) -> ModelShape | None:
    """The model shape a catalog entry trains, when it can be known without a download."""
    config = entry.meta.get("config")
    if config:
        return read_shape(paths.shipped("resources", "estimator", "configs", config))
    if entry.recipe.model.path:
        try:
            return find_shape(entry.recipe.model.path)
        except ProblemError:
            return None
    return None


# --- model shapes without weights -------------------------------------------------------


def find_shape(model: str) -> ModelShape:
    """A model's shape from a folder holding config.json, the Hugging Face cache, or the shipped configs."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return read_shape(folder)
    cached = _hub_cache_config(model)
    if cached is not None:
        return read_shape(cached.parent)
    shipped = shipped_config(model)
    if shipped is not None:
        return shipped
    if model.startswith(("/", "~", ".")) or "\\" in model:  # a path, not a name: say the folder is missing
        raise ProblemError(Problem("no such folder: pass a model folder that holds config.json", file=str(folder),
                                   field="model", value=model))
    names = sorted(known_models())
    raise ProblemError(Problem(
        "no config.json for this model: pass a folder that holds one, download the model first, "
        f"or use a known name ({', '.join(names[:3])}, … {len(names)} in all)", field="model", value=model))


def known_models() -> dict[str, str]:
    """Model ids and names with a shipped config: id -> config folder."""
    return dict(catalog_meta().get("models", {}))


def shipped_config(model: str) -> ModelShape | None:
    """A shipped config by repo id or name; a '-4bit'/'-8bit' suffix quantizes it (MLX affine, group 64)."""
    name = model.rstrip("/")
    folder = known_models().get(name) or known_models().get(name.rsplit("/", 1)[-1])
    if folder is None:
        folder = _by_stem(name.rsplit("/", 1)[-1])
    if folder is None:
        return None
    shape = read_shape(paths.shipped("resources", "estimator", "configs", folder))
    bits = _QUANT_SUFFIX.search(name)
    if bits and not shape.quant_bits:
        shape = replace(shape, quant_bits=int(bits.group(1)), quant_group=64)
    return shape


def _by_stem(name: str) -> str | None:
    stem = _SUFFIXES.sub("", name).lower()
    configs = paths.shipped("resources", "estimator", "configs", "x").parent
    for folder in sorted(p.name for p in configs.iterdir() if p.is_dir()):
        if _SUFFIXES.sub("", folder).lower() == stem:
            return folder
    return None


def _hub_cache_config(repo_id: str) -> Path | None:
    """config.json of a downloaded model in the Hugging Face cache (no hub client needed)."""
    snapshot = cached_snapshot(repo_id)
    config = snapshot / "config.json" if snapshot is not None else None
    return config if config is not None and config.is_file() else None


# --- save as recipe ---------------------------------------------------------------------


def recipe_path(name: str) -> Path:
    """A recipe file from what the user typed: a path, or the name of one of their recipes or a shipped one.

    Names may hold dots (``qwen3-1.7b-full``): only an existing path or a .yaml/.yml name is taken as a file.
    """
    path = Path(name).expanduser()
    if path.exists() or path.suffix.lower() in (".yaml", ".yml"):
        return path
    for candidate in (paths.user_recipes_home() / f"{name}.yaml", paths.shipped("recipes", f"{name}.yaml")):
        if candidate.exists():
            return candidate
    raise ProblemError(Problem(_unknown_recipe(name), field="recipe", value=name))


def _unknown_recipe(name: str) -> str:
    known = [p.stem for p in paths.shipped("recipes", "x.yaml").parent.glob("*.yaml")]
    known += [p.stem for p in paths.user_recipes_home().glob("*.yaml")]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"no recipe named {name!r}; {hint}`macfinetune recipes` lists them (a recipe file ends in .yaml)"


HIDES_SHIPPED = "a shipped recipe has this name, and yours would hide it; choose another name"


def hides_shipped(path: Path) -> bool:
    """A recipe file in the user's recipes named like a shipped one: it would hide it wherever a name is given."""
    path = Path(path)
    return path.parent.resolve() == paths.user_recipes_home().resolve() and \
        paths.shipped("recipes", path.name).exists()


def save_run_as_recipe(run_dir: Path, name: str, description: str = "") -> Path:
    """Copy a run's resolved recipe into the user's recipes as ``name``; returns the new file."""
    if not _NAME.match(name):
        raise ProblemError(Problem("a recipe name uses letters, digits, '.', '_' and '-' (at most 80)",
                                   field="name", value=name))
    source = Path(run_dir) / runs.RECIPE
    recipe = load_recipe(source)
    target = paths.user_recipes_home() / f"{name}.yaml"
    if target.exists():
        raise ProblemError(Problem("a recipe with this name already exists; choose another name",
                                   file=str(target), field="name", value=name))
    if hides_shipped(target):
        raise ProblemError(Problem(HIDES_SHIPPED, field="name", value=name))
    recipe = replace(recipe, name=name, description=description or recipe.description or f"saved from {run_dir}")
    target.parent.mkdir(parents=True, exist_ok=True)
    save_recipe(target, recipe, header=f"Saved from the run {Path(run_dir).resolve()}.")
    return target
