"""Which model types mlx-lm implements: read from its package's files, no model module imported."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


@functools.cache
def supported_model_types() -> frozenset[str]:
    """``model_type`` values mlx-lm can load: its model modules plus the names it remaps to them."""
    from mlx_lm.utils import MODEL_REMAPPING

    modules = frozenset(_model_modules(_models_folder()))
    return modules | {name for name, target in MODEL_REMAPPING.items() if target in modules}


def _models_folder() -> Path:
    spec = importlib.util.find_spec("mlx_lm.models")
    return Path(next(iter(spec.submodule_search_locations)))


def _model_modules(folder: Path) -> list[str]:
    """Modules that define a ``Model`` class (the rest are shared layers: cache, rope_utils, ...)."""
    return [p.stem for p in folder.glob("*.py") if "class Model(" in p.read_text(encoding="utf-8")]
