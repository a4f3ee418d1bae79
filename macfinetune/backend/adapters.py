"""The one place a recipe becomes mlx-lm objects: trainable layers, adapter config, optimizer."""

from __future__ import annotations

import json
from pathlib import Path

from macfinetune.core import atomic, runs
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe

_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "adafactor": "Adafactor"}
_TAKES_WEIGHT_DECAY = {"adamw", "sgd", "adafactor"}


def lora_parameters(recipe: Recipe, keys: list[str] | None) -> dict:
    """mlx-lm's ``lora_parameters``: scale = alpha / rank; keys only when not 'all'."""
    m = recipe.method
    params = {"rank": m.rank, "scale": m.scale, "dropout": m.dropout}
    if keys is not None:
        params["keys"] = keys
    return params


def resolve_keys(model, target_modules: tuple[str, ...]) -> list[str] | None:
    """Full module paths inside a block ('self_attn.q_proj') for short or full names; None = all."""
    if not target_modules:
        return None
    available = _linear_paths(model.layers[0])
    keys, missing = [], []
    for name in target_modules:
        found = [p for p in available if p == name or p.endswith("." + name)]
        keys += [p for p in found if p not in keys]
        if not found:
            missing.append(name)
    if missing:
        raise ProblemError(
            Problem(
                f"no module named {', '.join(missing)} in this model's blocks; available: {', '.join(available)}",
                field="method.target_modules",
                value=list(target_modules),
            )
        )
    return keys


def _linear_paths(block) -> list[str]:
    import mlx.nn as nn

    kinds = (nn.Linear, nn.QuantizedLinear)
    return [path for path, module in block.named_modules() if isinstance(module, kinds) or hasattr(module, "to_lora")]


def prepare_model(model, recipe: Recipe) -> list[str] | None:
    """Freeze the base and make the trained part trainable (LoRA/DoRA layers, or the last blocks).

    Returns the adapted module keys (None: all linear layers, or full fine-tuning)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    m = recipe.method
    model.freeze()
    if m.type == "full":
        for layer in model.layers[-max(m.num_layers, 0) :]:
            layer.unfreeze()
        return None
    keys = resolve_keys(model, m.target_modules)
    linear_to_lora_layers(model, m.num_layers, lora_parameters(recipe, keys), use_dora=m.type == "dora")
    return keys


def adapter_config(recipe: Recipe, keys: list[str] | None, base_model: str) -> dict:
    """adapter_config.json as mlx-lm writes and reads it, plus our own notes."""
    m = recipe.method
    return {
        "model": base_model,
        "fine_tune_type": m.type,
        "num_layers": m.num_layers,
        "lora_parameters": lora_parameters(recipe, keys) if m.type != "full" else None,
        "lora_alpha": m.alpha if m.type != "full" else None,
        "mask_prompt": recipe.data.mask_prompt,
        "max_seq_length": recipe.data.max_seq_length,
        "written_by": "macfinetune",
    }


def write_adapter_config(adapters: Path, recipe: Recipe, keys: list[str] | None, base_model: str) -> None:
    atomic.write_json(adapters / runs.ADAPTER_CONFIG, adapter_config(recipe, keys, base_model))


def make_optimizer(recipe: Recipe, schedule: dict | None):
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import build_schedule

    t = recipe.training
    learning_rate = build_schedule(schedule) if schedule else t.learning_rate
    kwargs = {"learning_rate": learning_rate}
    if t.optimizer in _TAKES_WEIGHT_DECAY:
        kwargs["weight_decay"] = t.weight_decay
    if t.optimizer == "adafactor":
        kwargs["relative_step"] = False  # use our learning rate, not Adafactor's own
        kwargs["scale_parameter"] = False
    return getattr(optim, _OPTIMIZERS[t.optimizer])(**kwargs)


def count_trainable(model) -> int:
    from mlx.utils import tree_flatten

    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def save_checkpoint(run_dir: Path, iteration: int, model, optimizer) -> Path:
    """Atomically write NNNNNNN_adapters.safetensors (+ adapters.safetensors) and optimizer state."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = dict(tree_flatten(model.trainable_parameters()))
    adapters = run_dir / runs.ADAPTERS
    path = adapters / runs.checkpoint_name(iteration)
    _save_tensors(path, weights, "checkpoint-adapters")
    atomic.copy_atomically(path, adapters / runs.FINAL_ADAPTERS, "final-adapters")  # a clone on APFS
    state = {k: v for k, v in tree_flatten(optimizer.state) if isinstance(v, mx.array)}
    _save_tensors(runs.optimizer_file(run_dir, iteration), state, "optimizer")
    return path


def restore_checkpoint(start: runs.CheckpointState, model, optimizer) -> None:
    """Trainable weights and optimizer state (step, moments, schedule position) of a checkpoint."""
    from mlx.utils import tree_unflatten

    weights = _read_tensors(start.adapters)
    _check_fits(model, weights, start.adapters)
    model.load_weights(list(weights.items()), strict=False)
    optimizer.init(model.trainable_parameters())
    optimizer.state = tree_unflatten(list(_read_tensors(start.optimizer).items()))


def _save_tensors(path: Path, arrays: dict, label: str = "") -> None:
    import mlx.core as mx

    atomic.write_atomically(path, lambda tmp: mx.save_safetensors(str(tmp), arrays), suffix=".safetensors",
                            label=label)


def read_adapter_config(adapters: Path) -> dict:
    path = Path(adapters) / runs.ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ProblemError(Problem(f"cannot read the adapter config: {e}", file=str(path))) from None
    if not isinstance(config, dict):
        raise ProblemError(Problem("adapter_config.json is not an object", file=str(path)))
    return config


def apply_adapter(model, adapters: Path, weights_file: Path) -> None:
    """Add the adapter layers described by adapter_config.json and load one checkpoint's weights."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    config = read_adapter_config(adapters)
    kind = config.get("fine_tune_type", "lora")
    if kind != "full":
        params = config.get("lora_parameters") or {}
        missing = [k for k in ("rank", "scale", "dropout") if k not in params]
        if missing:
            raise ProblemError(
                Problem(f"lora_parameters lacks {', '.join(missing)}", file=str(Path(adapters) / runs.ADAPTER_CONFIG))
            )
        linear_to_lora_layers(model, config.get("num_layers", 16), params, use_dora=kind == "dora")
    weights = _read_tensors(weights_file)
    _check_fits(model, weights, weights_file)
    model.load_weights(list(weights.items()), strict=False)
    model.eval()


def _read_tensors(path: Path) -> dict:
    import mlx.core as mx

    try:
        return mx.load(str(path))
    except Exception as e:
        raise ProblemError(Problem(f"cannot read the checkpoint (damaged or incomplete?): {e}", file=str(path))) from None


def _check_fits(model, weights: dict, path: Path) -> None:
    from mlx.utils import tree_flatten

    params = dict(tree_flatten(model.parameters()))
    wrong = [
        f"{name} {tuple(w.shape)} vs {tuple(params[name].shape) if name in params else 'absent'}"
        for name, w in weights.items()
        if name not in params or params[name].shape != w.shape
    ]
    if wrong:
        raise ProblemError(
            Problem(f"the checkpoint does not fit this model: {'; '.join(wrong[:5])}", file=str(path))
        )


def load_adapter_weights(model, weights_file: Path) -> None:
    """One checkpoint's weights into a model that already has its adapter layers (a checkpoint switch)."""
    weights = _read_tensors(weights_file)
    _check_fits(model, weights, weights_file)
    model.load_weights(list(weights.items()), strict=False)
    model.eval()
