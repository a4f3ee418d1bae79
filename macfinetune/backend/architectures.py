"""Which model types mlx-lm implements: read from its package's files without importing mlx-lm.

Nothing here imports mlx or mlx_lm (the app's model list is scanned on a worker thread before any
MLX work, and MLX belongs to the engine thread): the model modules are found in mlx-lm's folder
and ``MODEL_REMAPPING`` is read from the source of ``mlx_lm/utils.py``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path


@functools.cache
def supported_model_types() -> frozenset[str]:
    """``model_type`` values mlx-lm can load: its model modules plus the names it remaps to them."""
    package = _package_folder()
    modules = frozenset(_model_modules(package / "models"))
    return modules | {name for name, target in _remapping(package / "utils.py").items() if target in modules}


def _package_folder() -> Path:
    spec = importlib.util.find_spec("mlx_lm")  # a top-level spec: the package is not imported
    return Path(next(iter(spec.submodule_search_locations)))


def _model_modules(folder: Path) -> list[str]:
    """Modules that define a ``Model`` class (the rest are shared layers: cache, rope_utils, ...), less those that
    exit the process at import when an extra package is missing (mlx-lm's ``olmo`` needs ``ai2-olmo``)."""
    return [p.stem for p in folder.glob("*.py") if _loads_without_extras(p.read_text(encoding="utf-8"))]


def _loads_without_extras(source: str) -> bool:
    return "class Model(" in source and "sys.exit(" not in source


def _remapping(utils: Path) -> dict[str, str]:
    """The ``MODEL_REMAPPING = {...}`` literal of mlx-lm's utils.py (empty if it is not a literal)."""
    for node in ast.parse(utils.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODEL_REMAPPING" for t in node.targets):
            try:
                return dict(ast.literal_eval(node.value))
            except ValueError:
                return {}
    return {}


def module_for(model_type: str) -> str:
    """The ``mlx_lm.models`` module that loads ``model_type`` (mlx-lm's remapping applied)."""
    return _remapping(_package_folder() / "utils.py").get(model_type, model_type)
