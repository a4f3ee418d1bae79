"""Fuse a checkpoint into a standalone model folder (optionally de-quantized, optionally GGUF)."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import modelinfo, runs
from macfinetune.core.events import FuseFinished, Stage
from macfinetune.core.problems import Problem, ProblemError


def base_model_of(adapters: Path, override: str | None = None) -> str:
    """The base model an adapter folder was trained on: --model, the run's records (``runs.base_model``),
    or adapter_config.json. A recorded folder that is no longer there is an error that says what to pass."""
    from macfinetune.backend.adapters import read_adapter_config

    if override:
        return override
    model = runs.base_model(adapters.parent) if adapters.name == runs.ADAPTERS else ""
    model = model or read_adapter_config(adapters).get("model")
    if not model:
        raise ProblemError(
            Problem("the adapter folder does not say which base model it belongs to; pass --model", file=str(adapters))
        )
    check_base_present(model)
    return model


def check_base_present(model: str) -> None:
    """A recorded base model folder that was moved or deleted: say so, and how to point at its new place."""
    if Path(model).expanduser().exists() or modelinfo.looks_like_repo_id(model):
        return
    raise ProblemError(Problem("the base model folder this adapter was trained on is not there any more; "
                               "pass --model NEWPATH with its new location", file=model, field="model", value=model))


def default_fuse_dir(path: Path, which: str) -> Path:
    adapters = runs.adapters_dir(path)
    root = adapters.parent if adapters.name == runs.ADAPTERS else adapters
    return root / f"fused-{which}"


def fuse(path: Path, which: str, out_dir: Path | None, *, dequantize: bool = False, gguf: bool = False,
         model: str | None = None, emit=lambda e: None, gguf_dtype: str | None = None) -> FuseFinished:
    """Load base + checkpoint, fuse the adapter layers, save to ``out_dir`` atomically (temp folder + rename).

    With ``gguf`` the folder also holds ``model.gguf`` (``backend.gguf_export``); a quantized base
    is then de-quantized first, since GGUF export needs full-precision weights."""
    weights, iteration = runs.resolve_checkpoint(path, which)
    label = str(iteration) if iteration is not None else "final"
    chosen = out_dir is not None
    out_dir = Path(out_dir) if out_dir else default_fuse_dir(path, label if which.isdigit() else which)
    problems = runs.check_new_dir(out_dir, "fused model folder")
    if problems and not chosen:
        problems = [_earlier_fuse(out_dir, label) or problems[0]]
    if problems:
        raise ProblemError(problems)
    loaded = load_fused(path, which, model=model, dequantize=dequantize or gguf, emit=emit,
                        gguf_dtype=gguf_dtype if gguf else None, plan_gguf=gguf)
    with partial_dir(out_dir) as tmp:
        save_fused(tmp, loaded)
        if gguf:
            emit(Stage("fuse", "Writing model.gguf"))
            write_loaded_gguf(loaded, tmp / "model.gguf")
    gguf_path = str(out_dir / "model.gguf") if gguf else None
    return FuseFinished(str(out_dir), gguf_path)


def _earlier_fuse(out_dir: Path, label: str) -> Problem | None:
    """The default folder holds an earlier fuse: say which checkpoint it holds against the one asked for."""
    import json

    try:
        held = str(json.loads((out_dir / "macfinetune.json").read_text(encoding="utf-8")).get("checkpoint"))
    except (OSError, ValueError, AttributeError):
        return None
    if held == label:
        return Problem(f"{out_dir.name} already holds checkpoint {label}, fused earlier: nothing to do, use it",
                       file=str(out_dir))
    return Problem(f"{out_dir.name} holds checkpoint {held}, fused before the run went on; this is checkpoint {label}: "
                   "pass --out NEW_FOLDER, or move the old one away", file=str(out_dir))


@dataclass
class Loaded:
    """A fused model in memory with what saving it needs."""

    base: Path
    net: object
    tokenizer: object
    config: dict
    label: str
    gguf_plan: object = None
    run: Path | None = None


def load_fused(path: Path, which: str, *, model: str | None = None, dequantize: bool = False, emit=lambda e: None,
               gguf_dtype: str | None = None, plan_gguf: bool = False) -> Loaded:
    """Base + checkpoint, fused (and de-quantized if asked). With ``plan_gguf`` the GGUF export is
    checked first (architecture, tokenizer), before any weight is loaded."""
    from macfinetune.backend import adapters as adapter_ops
    from macfinetune.backend import models

    adapters = runs.adapters_dir(path)
    weights, iteration = runs.resolve_checkpoint(path, which)
    base = models.resolve_model_path(base_model_of(adapters, model))
    config = modelinfo.read_config(base)
    plan = None
    if plan_gguf:
        from macfinetune.backend import gguf_export

        plan = gguf_export.plan_gguf(base, config, gguf_dtype, name=_model_name(path, iteration))
    emit(Stage("fuse", f"Loading {base} with checkpoint {weights.name}"))
    net, tokenizer, config = models.load_model(base)
    adapter_ops.apply_adapter(net, adapters, weights)
    emit(Stage("fuse", "Fusing adapter layers into the weights"))
    net, config = _fused(net, config, dequantize)
    label = str(iteration) if iteration is not None else "final"
    root = adapters.parent if adapters.name == runs.ADAPTERS else adapters
    return Loaded(base, net, tokenizer, config, label, plan, root.absolute())


def _model_name(path: Path, iteration: int | None) -> str:
    adapters = runs.adapters_dir(path)
    root = adapters.parent if adapters.name == runs.ADAPTERS else adapters
    return f"{root.name}-{iteration if iteration is not None else 'final'}"


@contextmanager
def partial_dir(out_dir: Path):
    """A temporary folder beside ``out_dir`` renamed to it when the block ends. On any error it is
    removed, and so are the parent folders it had to create (when still empty)."""
    out_dir = Path(out_dir)
    created = [p for p in [out_dir.parent, *out_dir.parent.parents] if not p.exists()]
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed export with the same pid
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def save_fused(tmp: Path, loaded: Loaded) -> None:
    from mlx_lm.utils import save

    save(tmp, str(loaded.base), loaded.net, loaded.tokenizer, dict(loaded.config), donate_model=False)
    record = {"base_model": str(loaded.base), "run": str(loaded.run) if loaded.run else None, "checkpoint": loaded.label}
    (tmp / "macfinetune.json").write_text(json.dumps(record, indent=2) + "\n")


def write_loaded_gguf(loaded: Loaded, path: Path, check=lambda: None) -> dict:
    """The fused model as GGUF at ``path`` (its plan was made by ``load_fused(plan_gguf=True)``)."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from macfinetune.backend import gguf_export

    weights = dict(tree_flatten(loaded.net.parameters()))
    return gguf_export.write_gguf(loaded.gguf_plan, weights, path, lambda a: np.array(a.astype(mx.float32)), check)


def _fused(net, config: dict, dequantize: bool):
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model

    fused = [(name, m.fuse(dequantize=dequantize)) for name, m in net.named_modules() if hasattr(m, "fuse")]
    if fused:
        net.update_modules(tree_unflatten(fused))
    if dequantize:
        net = dequantize_model(net)
        config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    return net, config
