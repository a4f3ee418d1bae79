"""What a model folder holds, read from its files without loading weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

from macfinetune.core.problems import Problem, ProblemError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# files that hold a vocabulary (tokenizer_config.json alone does not); vocab.json: BPE with merges.txt
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model", "vocab.json")


def looks_like_repo_id(text: str) -> bool:
    """'org/name' that is not an existing path: a Hugging Face repo id."""
    return bool(_REPO_ID.match(text)) and not Path(text).expanduser().exists()


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise ProblemError(Problem("the model folder has no config.json", file=str(folder), value=str(folder)))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        line = getattr(e, "lineno", None)  # the file is named once, by the problem's file and line
        why = f"{e.msg.removesuffix(' at')} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else e
        raise ProblemError(Problem(f"not valid JSON: {why}", file=str(path), line=line)) from None
    if not isinstance(config, dict):
        raise ProblemError(Problem("not a JSON object", file=str(path)))
    if "model_type" not in config:
        raise ProblemError(Problem("has no 'model_type'", file=str(path), field="model_type"))
    return config


def check_model_folder(folder: Path) -> list[Problem]:
    """Problems that stop mlx-lm from loading the folder: config, safetensors weights, tokenizer."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return [Problem("model folder not found", file=str(folder), field="model.path", value=str(folder))]
    try:
        read_config(folder)
    except ProblemError as e:
        return list(e.problems)
    problems = []
    names = {p.name for p in folder.iterdir()}
    if not any(n.endswith(".safetensors") for n in names):
        pickled = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")))
        hint = (
            f" (found {', '.join(pickled)}: pickle weights are refused because loading them can run code; "
            "convert the model to safetensors first)"
            if pickled
            else ""
        )
        problems.append(Problem(f"the model folder has no .safetensors weights{hint}", file=str(folder)))
    if _tokenizer_needs_code(folder):
        problems.append(
            Problem(
                "the tokenizer needs custom code from the model repository (auto_map in tokenizer_config.json); "
                "macfinetune never runs code from a model repository",
                file=str(folder / "tokenizer_config.json"),
                field="auto_map",
            )
        )
    if not names.intersection(_TOKENIZER_FILES):
        problems.append(
            Problem("the model folder has no tokenizer files (tokenizer.json or tokenizer.model); the download may "
                    "be incomplete", file=str(folder))
        )
    return problems


def quantization_bits(config: dict) -> int | None:
    """Bits of an MLX-quantized model, or None for full precision."""
    quant = config.get("quantization") or config.get("quantization_config") or {}
    bits = quant.get("bits") if isinstance(quant, dict) else None
    return int(bits) if bits else None


def num_hidden_layers(config: dict) -> int | None:
    for source in (config, config.get("text_config") or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(source.get(key), int):
                return source[key]
    return None


def _tokenizer_needs_code(folder: Path) -> bool:
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("auto_map"))


def needs_remote_code(config: dict) -> bool:
    """config.json points at Python classes shipped in the repository."""
    return bool(config.get("auto_map"))


def has_tokenizer(folder: Path) -> bool:
    """Whether a model folder holds tokenizer files (a known name's config alone does not)."""
    return any((Path(folder) / name).exists() for name in _TOKENIZER_FILES)
