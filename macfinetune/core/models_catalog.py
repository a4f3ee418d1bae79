"""Models already on this machine, described from their files without loading weights.

Sources: the Hugging Face cache (scanned by huggingface_hub itself, in ``backend.hub.cached_models``,
passed in as a scanner: core does not import the hub client), LM Studio's models folder
(``publisher/model/``), macfinetune's own ``models`` folder and folders the user added. Each
model is described from ``config.json`` and the safetensors headers: architecture, parameter
count, quantization, size on disk, context length, and whether mlx-lm can fine-tune it (the set
of model types mlx-lm implements is passed in: ``backend.architectures.supported_model_types``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import modelinfo, paths
from macfinetune.core.problems import Problem, ProblemError

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx",
                 "max_sequence_length")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_SCAN_DEPTH = 3
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class ModelSource:
    kind: str  # hf-cache, lmstudio, macfinetune, folder
    path: Path


@dataclass(frozen=True)
class ModelEntry:
    """One model on disk, as the model list shows it."""

    name: str  # repo id for the hub cache, else the folder name (LM Studio: publisher/model)
    path: Path  # the folder mlx-lm loads (for the hub cache: the snapshot folder)
    source: str  # a ModelSource kind
    model_type: str | None
    architecture: str | None
    parameters: int | None
    parameters_from: str | None  # "weights" (safetensors headers, exact) or "config" (estimate)
    quantization: str | None  # None: full precision
    dtype: str | None
    size_bytes: int
    context_length: int | None
    supported: bool | None  # None when the supported set was not given
    problems: tuple = ()  # why it cannot be fine-tuned (Problem)
    notes: tuple = ()
    revision: str | None = None


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes and files of a hub download so far (emitted by backend.hub)."""

    repo_id: str
    done_bytes: int
    total_bytes: int | None
    files_done: int
    files_total: int | None


def download_progress_text(p: DownloadProgress) -> str:
    """'Downloading org/name: 0.50 GB of 2.00 GB, 1/4 files', in the unit the total needs (GB, MB, kB)."""
    scale, unit = next((s, u) for s, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "bytes"))
                       if max(p.total_bytes or 0, p.done_bytes) >= s or s == 1)
    digits = 0 if unit == "bytes" else 2 if unit == "GB" else 1
    total = f" of {p.total_bytes / scale:.{digits}f} {unit}" if p.total_bytes else ""
    files = f", {p.files_done}/{p.files_total} files" if p.files_total else ""
    return f"Downloading {p.repo_id}: {p.done_bytes / scale:.{digits}f} {unit}{total}{files}"


@dataclass(frozen=True)
class DownloadFinished:
    repo_id: str
    path: str


# --- where models live --------------------------------------------------------------------------


def hf_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """huggingface_hub's cache folder, resolved from the environment as the hub client does."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def download_options(env: Mapping[str, str] = os.environ) -> dict:
    """Where a download goes and comes from, read from the environment when it starts (not when the hub
    client was imported), so it lands in the cache folder the model scan reads."""
    return {"cache_dir": hf_cache_dir(env), "endpoint": env.get("HF_ENDPOINT") or None}


def lmstudio_dirs(home: Path | None = None) -> list[Path]:
    """LM Studio's models folders: the configured downloads folder, ~/.lmstudio/models, the old cache."""
    home = home or Path.home()
    found = [_lmstudio_setting(home / ".lmstudio" / "settings.json"),
             home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    return list(dict.fromkeys(p for p in found if p is not None and p.is_dir()))


def _lmstudio_setting(settings: Path) -> Path | None:
    try:
        folder = json.loads(settings.read_text(encoding="utf-8")).get("downloadsFolder")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(folder).expanduser() if isinstance(folder, str) and folder else None


def default_sources(extra_folders: Collection[Path] = (), env: Mapping[str, str] = os.environ) -> list[ModelSource]:
    sources = [ModelSource("hf-cache", hf_cache_dir(env))]
    sources += [ModelSource("lmstudio", p) for p in lmstudio_dirs()]
    sources.append(ModelSource("macfinetune", paths.data_home() / "models"))
    sources += [ModelSource("folder", Path(p).expanduser()) for p in extra_folders]
    return sources


# --- discovery ----------------------------------------------------------------------------------


Scanner = Callable[[Path], list]  # folder -> [(name, model folder, revision or None)]


def discover(sources: Collection[ModelSource], supported: Collection[str] | None = None,
             scanners: Mapping[str, Scanner] | None = None) -> list[ModelEntry]:
    """Every model in ``sources``, described; unreadable folders are skipped.

    ``scanners`` adds scanners by source kind; the hub cache's comes from the backend
    (``backend.hub.local_models`` passes it), so a "hf-cache" source needs one."""
    table = {**_SCANNERS, **(scanners or {})}
    entries: dict[Path, ModelEntry] = {}
    for source in sources:
        for name, folder, revision in table[source.kind](source.path):
            key = folder.resolve()
            if key not in entries:
                entries[key] = describe(folder, name=name, source=source.kind, supported=supported, revision=revision)
    return sorted(entries.values(), key=lambda e: (e.source, e.name.lower()))


def cached_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The current snapshot folder of ``org/name`` in the huggingface_hub cache, or None.

    A lookup of one known layout for core's estimator, which must not import the hub client;
    listing the whole cache is huggingface_hub's own scan (``backend.hub.cached_models``)."""
    if "/" not in repo_id:
        return None
    repo = (cache or hf_cache_dir()) / f"models--{repo_id.replace('/', '--')}"
    return _current_snapshot(repo) if repo.is_dir() else None


def _current_snapshot(repo: Path) -> Path | None:
    """The snapshot refs/main points at, else the newest snapshot."""
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = [p for p in (repo / "snapshots").glob("*") if p.is_dir()]
    return max(snapshots, key=lambda p: p.stat().st_mtime, default=None)


def scan_folder(root: Path, depth: int = _SCAN_DEPTH) -> list[tuple[str, Path, None]]:
    """Model folders (config.json or .gguf files) under ``root``, up to ``depth`` levels down."""
    if not root.is_dir():
        return []
    if _is_model_folder(root):
        return [(root.name, root, None)]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if depth > 1:
            found += [(_relative_name(root, folder), folder, None) for _, folder, _ in scan_folder(child, depth - 1)]
    return found


def _relative_name(root: Path, folder: Path) -> str:
    return folder.relative_to(root).as_posix() if folder != root else folder.name


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() or any(folder.glob("*.gguf"))


_SCANNERS: dict[str, Scanner] = {
    "lmstudio": scan_folder,
    "macfinetune": scan_folder,
    "folder": scan_folder,
}


# --- describing one model -----------------------------------------------------------------------


def describe(folder: Path, *, name: str | None = None, source: str = "folder",
             supported: Collection[str] | None = None, revision: str | None = None) -> ModelEntry:
    """A model folder described from its files; nothing is loaded."""
    folder = Path(folder)
    files = _file_names(folder)
    config = _read_json(folder / "config.json")
    unreadable = _config_problem(folder) if config is None and "config.json" in files else None
    config = config or {}
    problems = tuple(usability_problems(config, files, supported, _read_json(folder / "tokenizer_config.json"),
                                        where=str(folder), unreadable=unreadable))
    parameters, parameters_from = parameter_count(folder, config)
    return ModelEntry(
        name=name or folder.name, path=folder, source=source, model_type=config.get("model_type"),
        architecture=_first(config.get("architectures")), parameters=parameters, parameters_from=parameters_from,
        quantization=quantization_label(config), dtype=config.get("torch_dtype") or config.get("dtype"),
        size_bytes=folder_size(folder), context_length=context_length(config),
        supported=None if supported is None else not problems, problems=problems,
        notes=tuple(_notes(config, supported)), revision=revision,
    )


def _first(value) -> str | None:
    if isinstance(value, list):
        return str(value[0]) if value else None
    return value if isinstance(value, str) else None


def _file_names(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir()}
    except OSError:
        return set()


def _config_problem(folder: Path) -> Problem:
    """A config.json that is not a JSON object, in the words training uses (``modelinfo.read_config``:
    the file, line and column)."""
    try:
        modelinfo.read_config(folder)
    except ProblemError as e:
        return Problem(str(e.problems[0]), file=str(folder), field="config.json")
    return Problem("config.json cannot be read", file=str(folder), field="config.json")


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def usability_problems(config: dict, files: Collection[str], supported: Collection[str] | None,
                       tokenizer_config: dict | None = None, where: str = "",
                       unreadable: Problem | None = None) -> list[Problem]:
    """Why mlx-lm cannot fine-tune this model: architecture, remote code, weights, tokenizer.

    ``files`` are the names in the model folder (or the repository); ``supported`` the model
    types mlx-lm implements (None: not checked); ``unreadable`` why config.json could not be read.
    """
    problems = []
    if not files:
        return [Problem("the folder is empty or cannot be read", file=where)]
    if "config.json" not in files:
        problems.append(Problem(_no_config_message(files), file=where, field="config.json"))
    elif unreadable:
        problems.append(unreadable)
    else:
        problems += _architecture_problems(config, supported, where)
    problems += _weight_problems(files, where)
    problems += _tokenizer_problems(files, tokenizer_config or {}, where)
    return problems


def _no_config_message(files: Collection[str]) -> str:
    if any(f.endswith(".gguf") for f in files):
        return ("GGUF files are for llama.cpp-style runtimes; mlx-lm cannot fine-tune them. "
                "Download the original model (safetensors) instead")
    return "there is no config.json"


def _architecture_problems(config: dict, supported: Collection[str] | None, where: str) -> list[Problem]:
    model_type = config.get("model_type")
    if not model_type:
        return [Problem("config.json has no 'model_type'", file=where, field="model_type")]
    if supported is None or model_type in supported:
        return []
    arch = _first(config.get("architectures")) or model_type
    if config.get("auto_map"):
        return [Problem(f"{arch} needs the repository's own Python code (auto_map in config.json) and mlx-lm has "
                        f"no implementation of model_type {model_type!r}; macfinetune never runs code from a "
                        "model repository", file=where, field="auto_map", value=model_type)]
    return [Problem(f"mlx-lm has no implementation of model_type {model_type!r} ({arch}), so it cannot fine-tune "
                    "it; pick a model of a supported architecture (llama, mistral, qwen2/3, gemma, phi3, ...)",
                    file=where, field="model_type", value=model_type)]


def _weight_problems(files: Collection[str], where: str) -> list[Problem]:
    if any(f.endswith(".safetensors") for f in files):
        return []
    pickled = sorted(f for f in files if f.endswith(_PICKLE_SUFFIXES))
    if pickled:
        return [Problem(f"only pickle weights ({', '.join(pickled[:3])}): loading them can run arbitrary code, so "
                        "they are refused; use a safetensors version of the model", file=where, value=pickled[0])]
    if any(f.endswith(".gguf") for f in files):
        return []  # said with the missing config
    return [Problem("no .safetensors weights", file=where)]


def _tokenizer_problems(files: Collection[str], tokenizer_config: dict, where: str) -> list[Problem]:
    auto = (tokenizer_config.get("auto_map") or {}) if isinstance(tokenizer_config, dict) else {}
    if auto.get("AutoTokenizer") and "tokenizer.json" not in files:
        return [Problem("the tokenizer needs the repository's own Python code (auto_map in tokenizer_config.json) "
                        "and there is no tokenizer.json; macfinetune never runs code from a model repository",
                        file=where, field="tokenizer_config.json", value=str(auto.get("AutoTokenizer")))]
    return []


def _notes(config: dict, supported: Collection[str] | None) -> list[str]:
    notes = []
    if config.get("auto_map") and supported is not None and config.get("model_type") in supported:
        notes.append("config.json names custom code (auto_map); mlx-lm's own implementation is used instead")
    return notes


def check_usable(folder: Path, supported: Collection[str] | None) -> None:
    """Raise ProblemError when mlx-lm cannot fine-tune the model in ``folder``."""
    entry = describe(folder, supported=supported)
    if entry.problems:
        raise ProblemError(list(entry.problems))


# --- numbers from the files ---------------------------------------------------------------------


def context_length(config: dict) -> int | None:
    for source in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(source.get(key), int):
                return source[key]
    return None


def quantization_label(config: dict) -> str | None:
    """'4-bit (group 64)' for MLX quantization, 'gptq 4-bit' and the like for others; None: not quantized."""
    mlx = config.get("quantization")
    if isinstance(mlx, dict) and mlx.get("bits"):
        mode = mlx.get("mode", "affine")
        label = f"{mlx['bits']}-bit (group {mlx.get('group_size', 64)})"
        return label if mode == "affine" else f"{label}, {mode}"
    other = config.get("quantization_config")
    if isinstance(other, dict) and other:
        bits = other.get("bits") or (4 if other.get("load_in_4bit") else 8 if other.get("load_in_8bit") else None)
        method = other.get("quant_method", "quantized")
        return f"{method} {bits}-bit" if bits else str(method)
    return None


def folder_size(folder: Path) -> int:
    """Bytes of the files in ``folder``, following the hub cache's symlinks, each blob once."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file() and (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


def parameter_count(folder: Path, config: dict) -> tuple[int | None, str | None]:
    """(parameters, "weights" or "config"): exact from safetensors headers, else estimated from the config."""
    try:
        counted = weight_parameters(sorted(Path(folder).glob("*.safetensors")), config)
    except (OSError, ValueError, KeyError, TypeError):
        counted = None
    if counted:
        return counted, "weights"
    estimated = estimate_parameters(config)
    return (estimated, "config") if estimated else (None, None)


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: {tensor name: {dtype, shape, data_offsets}}."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= _MAX_HEADER:
            raise ValueError(f"{path.name}: not a safetensors file (header size {size})")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def weight_parameters(files: list[Path], config: dict) -> int | None:
    """Parameters stored in safetensors files; MLX-quantized weights count as the numbers they pack."""
    tensors: dict[str, dict] = {}
    for file in files:
        tensors.update(read_safetensors_header(file))
    if not tensors:
        return None
    quant = config.get("quantization") if isinstance(config.get("quantization"), dict) else None
    return sum(_tensor_parameters(name, info, tensors, quant) for name, info in tensors.items())


def _tensor_parameters(name: str, info: dict, tensors: dict, quant: dict | None) -> int:
    prefix, _, leaf = name.rpartition(".")
    packed = quant and tensors.get(f"{prefix}.weight", {}).get("dtype") == "U32" and f"{prefix}.scales" in tensors
    if packed and leaf in ("scales", "biases"):
        return 0  # quantization metadata, not parameters
    count = math.prod(info["shape"])
    if packed and leaf == "weight":
        layer = quant.get(prefix) if isinstance(quant.get(prefix), dict) else quant
        count = count * 32 // int(layer.get("bits", quant["bits"]))
    return count


def estimate_parameters(config: dict) -> int | None:
    """A decoder-only transformer's parameters from its shape (attention, gated MLP or experts, norms)."""
    c = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    try:
        h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
        heads = c["num_attention_heads"]
    except KeyError:
        return None
    head_dim = c.get("head_dim") or h // heads
    kv = c.get("num_key_value_heads") or heads
    attention = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    experts = c.get("num_local_experts") or c.get("num_experts") or 0
    inner = (c.get("moe_intermediate_size") if experts else None) or c.get("intermediate_size") or 4 * h
    mlp = 3 * h * inner * max(experts, 1) + (h * experts if experts else 0)
    embeddings = vocab * h * (1 if c.get("tie_word_embeddings", config.get("tie_word_embeddings", False)) else 2)
    return layers * (attention + mlp + 2 * h) + embeddings + h
