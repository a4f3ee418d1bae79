"""Where things live: the user's data folder and the files shipped with the package."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

HOME_ENV = "MACFINETUNE_HOME"


def data_home() -> Path:
    """The user's macfinetune folder; ``MACFINETUNE_HOME`` overrides platformdirs."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("macfinetune", appauthor=False))


def runs_home() -> Path:
    return data_home() / "runs"


def demo_home() -> Path:
    """The demo's own area: demo runs stay out of the user's runs folder."""
    return data_home() / "demo"


def models_home() -> Path:
    """Models macfinetune made or converted (``models list`` looks here)."""
    return data_home() / "models"


def demo_model_dir() -> Path:
    return models_home() / "macfinetune-demo-tiny"


def runs_index_file() -> Path:
    """Every run folder created on this machine, wherever it is (``--out``): ``runs`` reads it."""
    return data_home() / "runs-index.json"


def calibration_home() -> Path:
    """'Measure this Mac' probes: run folders and rows.jsonl, kept apart from the user's runs."""
    return data_home() / "calibration"


def user_recipes_home() -> Path:
    return data_home() / "recipes"


def shipped(kind: str, *parts: str) -> Path:
    """A runtime file shipped inside the package: ``kind`` is 'recipes' or 'resources'."""
    if kind not in ("recipes", "resources"):
        raise ValueError(f"unknown shipped kind {kind!r}; expected 'recipes' or 'resources'")
    checkout = Path(__file__).resolve().parents[2]  # a source checkout (a git worktree) reads its own files
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        return checkout.joinpath(kind, *parts)
    root = resources.files(f"macfinetune.{kind}")
    return Path(str(root.joinpath(*parts)))
