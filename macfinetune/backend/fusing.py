"""Fuse a checkpoint into a standalone model folder (optionally de-quantized, optionally GGUF)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from macfinetune.core import modelinfo, runs
from macfinetune.core.events import FuseFinished, Stage
from macfinetune.core.problems import Problem, ProblemError

GGUF_ARCHITECTURES = ("llama", "mixtral", "mistral")


def base_model_of(adapters: Path, override: str | None = None) -> str:
    """The base model an adapter folder was trained on: --model, the run's status, or adapter_config."""
    from macfinetune.backend.adapters import read_adapter_config

    if override:
        return override
    if adapters.name == runs.ADAPTERS:
        status = runs.read_status(adapters.parent)
        if status and status.model:
            return status.model
    model = read_adapter_config(adapters).get("model")
    if not model:
        raise ProblemError(
            Problem("the adapter folder does not say which base model it belongs to; pass --model", file=str(adapters))
        )
    return model


def default_fuse_dir(path: Path, which: str) -> Path:
    adapters = runs.adapters_dir(path)
    root = adapters.parent if adapters.name == runs.ADAPTERS else adapters
    return root / f"fused-{which}"


def fuse(path: Path, which: str, out_dir: Path | None, *, dequantize: bool = False, gguf: bool = False,
         model: str | None = None, emit=lambda e: None) -> FuseFinished:
    """Load base + checkpoint, fuse the adapter layers, save to ``out_dir`` atomically (temp folder + rename)."""
    from macfinetune.backend import adapters as adapter_ops
    from macfinetune.backend import models

    adapters = runs.adapters_dir(path)
    weights, iteration = runs.resolve_checkpoint(path, which)
    label = str(iteration) if iteration is not None else "final"
    out_dir = Path(out_dir) if out_dir else default_fuse_dir(path, label if which.isdigit() else which)
    problems = runs.check_new_dir(out_dir, "fused model folder")
    if problems:
        raise ProblemError(problems)
    base = models.resolve_model_path(base_model_of(adapters, model))
    config = modelinfo.read_config(base)
    if gguf:
        _check_gguf(config, base)
    emit(Stage("fuse", f"Loading {base} with checkpoint {weights.name}"))
    net, tokenizer, config = models.load_model(base)
    adapter_ops.apply_adapter(net, adapters, weights)
    emit(Stage("fuse", "Fusing adapter layers into the weights"))
    net, config = _fused(net, config, dequantize)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    try:
        _save(tmp, base, net, tokenizer, config, gguf)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gguf_path = str(out_dir / "model.gguf") if gguf else None
    return FuseFinished(str(out_dir), gguf_path)


def _check_gguf(config: dict, base: Path) -> None:
    kind = config.get("model_type")
    if kind not in GGUF_ARCHITECTURES:
        raise ProblemError(
            Problem(
                f"mlx-lm exports GGUF only for {', '.join(GGUF_ARCHITECTURES)}; this model is {kind!r}. "
                "Fuse without --gguf and convert with llama.cpp's convert_hf_to_gguf.py",
                file=str(base / "config.json"),
                field="model_type",
                value=kind,
            )
        )
    if modelinfo.quantization_bits(config):
        raise ProblemError(
            Problem("GGUF export needs full-precision weights; add --dequantize", field="gguf", value=True)
        )


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


def _save(tmp: Path, base: Path, net, tokenizer, config: dict, gguf: bool) -> None:
    from mlx.utils import tree_flatten
    from mlx_lm.gguf import convert_to_gguf
    from mlx_lm.utils import save

    from macfinetune.backend.quiet import captured_stdout

    save(tmp, str(base), net, tokenizer, dict(config), donate_model=False)
    if gguf:
        weights = dict(tree_flatten(net.parameters()))
        with captured_stdout():  # mlx-lm prints the temporary folder's path; the CLI prints the final one
            convert_to_gguf(tmp, weights, dict(config), str(tmp / "model.gguf"))
    (tmp / "macfinetune.json").write_text(json.dumps({"base_model": str(base)}, indent=2) + "\n")
