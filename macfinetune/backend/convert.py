"""Convert a Hugging Face model to MLX, optionally quantized to 4 or 8 bits, with mlx-lm's own
converter run in-process (call it on the engine thread: it does MLX work).

The model is checked first (an architecture mlx-lm implements, no remote code, safetensors
weights); the result goes to a temporary sibling folder and is renamed into place at the end,
so a failed conversion leaves nothing half-written. mlx-lm's "[INFO] ..." lines become Stage
events; nothing is printed. Only mlx-lm's own ``print`` calls are captured (``mlx_lm_prints``):
sys.stdout is left alone, so other threads keep printing.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import io
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from macfinetune.core import modelinfo, models_catalog, paths
from macfinetune.core.control import JobControl
from macfinetune.core.events import Stage
from macfinetune.core.problems import fail

Emit = Callable[[object], None]
BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
_STAGES = {"Loading": "Loading the model", "Quantizing": "Quantizing", "Dequantizing": "Dequantizing",
           "Using dtype": "Casting the weights"}


def models_home() -> Path:
    """Where converted models go by default: ``<data home>/models``."""
    return paths.data_home() / "models"


def default_output(source: str, bits: int | None) -> Path:
    """``<models home>/<name>-4bit-mlx`` (or ``-mlx`` without quantization)."""
    name = re.sub(r"[^\w.-]+", "-", Path(source.rstrip("/")).name) or "model"
    return models_home() / f"{name}-{bits}bit-mlx" if bits else models_home() / f"{name}-mlx"


def convert_model(
    source: str | Path,
    *,
    bits: int | None = None,
    group_size: int = 64,
    out: Path | None = None,
    dtype: str | None = None,
    emit: Emit | None = None,
    control: JobControl | None = None,
    supported: frozenset[str] | None = None,
) -> Path:
    """Convert ``source`` (a model folder or a hub repo id) to MLX in ``out``; returns ``out``."""
    emit = emit or (lambda event: None)
    out = Path(out).expanduser() if out else default_output(str(source), bits)
    _check_options(bits, group_size, out)
    folder = _local_folder(str(source), emit, control)
    models_catalog.check_usable(folder, _supported(supported))
    if bits and modelinfo.quantization_bits(modelinfo.read_config(folder)):
        raise fail("the model is already quantized; convert a full-precision model", file=str(folder),
                   field="quantize", value=bits)
    if control and control.stop_requested:
        raise fail("stopped before the conversion started")
    _run_convert(folder, out, bits, group_size, dtype, emit)
    emit(Stage("convert", f"Saved {out}"))
    return out


def _check_options(bits: int | None, group_size: int, out: Path) -> None:
    if bits is not None and bits not in BITS:
        raise fail(f"quantization must be {' or '.join(map(str, BITS))} bits", field="quantize", value=bits)
    if group_size not in GROUP_SIZES:
        raise fail(f"the group size must be one of {GROUP_SIZES}", field="group_size", value=group_size)
    if out.exists():
        raise fail("the output folder already exists; choose another with --out", file=str(out), field="out",
                   value=str(out))


def _supported(supported: frozenset[str] | None) -> frozenset[str]:
    from macfinetune.backend.architectures import supported_model_types

    return supported if supported is not None else supported_model_types()


def _local_folder(source: str, emit: Emit, control: JobControl | None) -> Path:
    local = Path(source).expanduser()
    if local.is_dir():
        return local.resolve()
    if not modelinfo.looks_like_repo_id(source):
        raise fail("model folder not found (and not a Hugging Face repo id like org/name)", file=source,
                   field="model", value=source)
    from macfinetune.backend import hub

    return hub.download_model(source, emit, control)


def _run_convert(folder: Path, out: Path, bits: int | None, group_size: int, dtype: str | None, emit: Emit) -> None:
    from mlx_lm.convert import convert

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.name}.converting")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with mlx_lm_prints(_StageWriter(emit).write):
            convert(str(folder), str(scratch), quantize=bool(bits), q_bits=bits, q_group_size=group_size,
                    dtype=dtype, trust_remote_code=False)
        for script in scratch.glob("*.py"):  # mlx-lm copies a repository's code; we never run it
            script.unlink()
        scratch.rename(out)
    except Exception as e:
        shutil.rmtree(scratch, ignore_errors=True)
        raise fail(f"mlx-lm could not convert the model: {type(e).__name__}: {e}", file=str(folder)) from None


_ABSENT = object()
_PRINTING_MODULES = ("mlx_lm.convert", "mlx_lm.utils")  # utils: quantize_model's "[INFO] Quantized ..."


@contextlib.contextmanager
def mlx_lm_prints(write: Callable[[str], object], modules: tuple[str, ...] = _PRINTING_MODULES) -> Iterator[None]:
    """Within the block, ``print`` called by code in ``modules`` goes to ``write``.

    A module-level ``print`` shadows the builtin for that module's code only (as ``quiet.py``
    swaps the trainer's globals): sys.stdout is untouched, so other code and other threads
    still print. Prints with an explicit ``file=`` other than stdout pass through."""

    def captured(*args, sep=" ", end="\n", file=None, flush=False):
        if file is not None and file is not sys.stdout:
            return builtins.print(*args, sep=sep, end=end, file=file, flush=flush)
        write((sep if sep is not None else " ").join(map(str, args)) + (end if end is not None else "\n"))

    targets = [importlib.import_module(name) for name in modules]
    saved = [vars(module).get("print", _ABSENT) for module in targets]
    for module in targets:
        module.print = captured
    try:
        yield
    finally:
        for module, old in zip(targets, saved, strict=True):
            if old is _ABSENT:
                del module.print
            else:
                module.print = old


class _StageWriter(io.TextIOBase):
    """Turns the lines mlx-lm's converter prints into Stage events."""

    def __init__(self, emit: Emit):
        self.emit = emit
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self._line(line.replace("[INFO]", "").strip())
        return len(text)

    def _line(self, line: str) -> None:
        for prefix, label in _STAGES.items():
            if line.startswith(prefix):
                self.emit(Stage("convert", label + line[len(prefix) :]))
