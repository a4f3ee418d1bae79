"""Load a base model from a folder or the Hugging Face hub, with messages people can act on."""

from __future__ import annotations

import shutil
from pathlib import Path

from macfinetune.core import modelinfo
from macfinetune.core.problems import Problem, ProblemError

_TOKENIZER_GLOBS = ("tokenizer*", "special_tokens_map.json", "*.jinja", "chat_template.json", "generation_config.json")


def resolve_model_path(path_or_repo: str) -> Path:
    """A local folder for ``path_or_repo``: the folder itself, or a hub download (real, cached)."""
    local = Path(path_or_repo).expanduser()
    if local.exists():
        problems = modelinfo.check_model_folder(local)
        if problems:
            raise ProblemError(problems)
        return local.resolve()
    if not modelinfo.looks_like_repo_id(path_or_repo):
        raise ProblemError(
            Problem("model folder not found (and not a Hugging Face repo id like org/name)", file=path_or_repo,
                    field="model.path", value=path_or_repo)
        )
    return _download(path_or_repo)


def _download(repo_id: str) -> Path:
    """Only weights, config and tokenizer files: no Python files from the repository."""
    from huggingface_hub import constants, snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    from macfinetune.backend.hub import hub_reason
    from macfinetune.core.secrets import load_hf_token

    patterns = [p for p in DEFAULT_ALLOW_PATTERNS if not p.endswith(".py")] + ["*.jinja"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, token=load_hf_token()))
    except Exception as e:  # the hub client raises many types: offline, 404, gated, network
        raise ProblemError(
            Problem(
                f"could not get {repo_id!r} from Hugging Face: {hub_reason(e, constants.is_offline_mode())}",
                field="model.path",
                value=repo_id,
            )
        ) from None
    problems = modelinfo.check_model_folder(folder)
    if problems:
        raise ProblemError(problems)
    return folder


def check_architecture(config: dict, folder: Path) -> None:
    """mlx-lm implements config.json's model_type and the config has every field that model requires."""
    from mlx_lm.utils import _get_classes

    try:
        _, args_class = _get_classes(config)
    except ValueError:
        extra = (
            "; the repository ships its own model code (auto_map), which macfinetune never runs"
            if modelinfo.needs_remote_code(config)
            else ""
        )
        raise ProblemError(
            Problem(
                f"mlx-lm has no implementation of model_type {config.get('model_type')!r}{extra}",
                file=str(Path(folder) / "config.json"),
                field="model_type",
                value=config.get("model_type"),
            )
        ) from None
    except (ImportError, AttributeError) as e:
        raise ProblemError(Problem(f"mlx-lm cannot load this architecture: {e}", file=str(folder))) from None
    missing = _missing_fields(args_class, config)
    if missing:
        raise ProblemError(Problem(f"config.json lacks {', '.join(missing)}, which mlx-lm's {config['model_type']} "
                                   "model needs", file=str(folder), field=missing[0]))


def _missing_fields(args_class, config: dict) -> list[str]:
    """ModelArgs fields without a default that config.json lacks (for the models that take them as they are)."""
    import inspect

    from mlx_lm.models.base import BaseModelArgs

    if getattr(args_class.from_dict, "__func__", None) is not BaseModelArgs.from_dict.__func__:
        return []  # its own from_dict may derive or rename fields
    params = inspect.signature(args_class).parameters.values()
    return [p.name for p in params if p.default is p.empty and p.name not in config]


def load_model(folder: Path):
    """(model, tokenizer, config) from a checked local folder; remote code is never run."""
    from mlx_lm.utils import load

    config = modelinfo.read_config(folder)
    check_architecture(config, folder)
    try:
        model, tokenizer, config = load(str(folder), return_config=True, trust_remote_code=False)
    except Exception as e:
        raise ProblemError(Problem(f"mlx-lm could not load the model: {type(e).__name__}: {e}", file=str(folder))) from None
    model.eval()
    return model, tokenizer, config


def quantize_into(folder: Path, out: Path, bits: int, group_size: int, loaded: tuple | None = None):
    """Quantize a full-precision model to ``bits``, save it into ``out`` and return (model, tokenizer, config).

    ``loaded`` is the (model, tokenizer) already in memory: it is quantized in place, layer by
    layer, so the full-precision weights are held once, never twice (the estimator's loading phase)."""
    import mlx.core as mx
    from mlx_lm.utils import quantize_model, save_config, save_model

    from macfinetune.backend.convert import mlx_lm_prints

    if loaded is None:
        model, tokenizer, config = load_model(folder)
    else:
        (model, tokenizer), config = loaded, modelinfo.read_config(folder)
    if modelinfo.quantization_bits(config):
        raise ProblemError(
            Problem("the model is already quantized; set model.quantize: null", file=str(folder), field="model.quantize", value=bits)
        )
    with mlx_lm_prints(lambda text: None, ("mlx_lm.utils",)):  # "[INFO] Quantized model with ..."
        model, config = quantize_model(model, config, group_size, bits)
    mx.eval(model.parameters())
    out.mkdir(parents=True)
    save_model(out, model)
    save_config(dict(config), out / "config.json")
    copy_tokenizer_files(folder, out)
    return model, tokenizer, config


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for pattern in _TOKENIZER_GLOBS:
        for file in Path(src).glob(pattern):
            if file.is_file():
                shutil.copy2(file, dst / file.name)
