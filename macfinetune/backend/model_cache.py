"""Models the Playground keeps loaded between prompts, on the engine thread.

Per base model folder: one pristine base (the base pane) and at most one tuned twin (the tuned pane). The
twin is a second instance of the same class whose parameters are the base's own arrays (no copy), with
the adapter layers added; switching checkpoint (or to another run with the same adapter shape) loads only
the adapter weights into it. Everything is released before a training job and when memory is tight.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from macfinetune.core import chat

MAX_MODELS = 2  # base folders kept at once (each with its twin)
RESERVE_FRACTION = 0.1  # of total memory left free when a new model loads


@dataclass
class _Entry:
    model: object
    tokenizer: object
    nbytes: int
    twin: object | None = None
    shape: str = ""  # the adapter structure the twin carries (a JSON text)
    weights: Path | None = None  # the checkpoint file loaded into the twin
    uses: int = field(default=0)


@dataclass(frozen=True)
class Ready:
    model: object
    tokenizer: object
    reused: bool  # the base weights were already in memory
    swapped: bool = False  # adapter weights were loaded onto that base (nothing else was read)


class ModelCache:
    """Use from one thread (the engine's); a cache touched from another thread starts empty."""

    def __init__(self, load=None, available=None, max_models: int = MAX_MODELS):
        self._load, self._available, self.max_models = load, available, max_models
        self._entries: dict[Path, _Entry] = {}
        self._thread = threading.get_ident()
        self._clock = 0
        self.loads = 0  # base models read from disk (tests count them)
        self.twins = 0  # tuned twins built (a checkpoint switch builds none)

    def base(self, folder: Path) -> Ready:
        entry, reused = self._entry(Path(folder))
        return Ready(entry.model, entry.tokenizer, reused)

    def tuned(self, folder: Path, adapters: Path, weights: Path) -> Ready:
        """The base in ``folder`` with the adapter in ``adapters`` at checkpoint file ``weights``."""
        from macfinetune.backend import adapters as adapter_ops

        entry, reused = self._entry(Path(folder))
        shape = _adapter_shape(adapters)
        if entry.twin is None or entry.shape != shape:
            entry.twin, entry.shape = _twin(folder, entry.model), shape
            self.twins += 1
            adapter_ops.apply_adapter(entry.twin, adapters, weights)
        elif entry.weights != weights:
            adapter_ops.load_adapter_weights(entry.twin, weights)
        else:
            return Ready(entry.twin, entry.tokenizer, reused)
        entry.weights = weights
        return Ready(entry.twin, entry.tokenizer, reused, swapped=reused)

    def release(self) -> int:
        """Let go of every model; returns how many base models were held."""
        count = len(self._entries)
        self._entries.clear()
        if count:
            import mlx.core as mx

            mx.clear_cache()
        return count

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, folder: Path) -> tuple[_Entry, bool]:
        if threading.get_ident() != self._thread:  # MLX streams are per thread: start over on this one
            self._entries.clear()
            self._thread = threading.get_ident()
        self._clock += 1
        if folder in self._entries:
            self._entries[folder].uses = self._clock
            return self._entries[folder], True
        self._make_room(folder)
        model, tokenizer, _ = (self._load or _load_model)(folder)
        self.loads += 1
        self._entries[folder] = _Entry(model, tokenizer, _nbytes(model), uses=self._clock)
        return self._entries[folder], False

    def _make_room(self, folder: Path) -> None:
        cached = [(key, e.nbytes) for key, e in sorted(self._entries.items(), key=lambda kv: kv[1].uses)]
        available, total = (self._available or _memory)()
        for key in chat.models_to_release(cached, _folder_bytes(folder), available, max_models=self.max_models,
                                          reserve=int(total * RESERVE_FRACTION)):
            del self._entries[key]


def _load_model(folder: Path):
    from macfinetune.backend import models

    return models.load_model(folder)


def _twin(folder: Path, model):
    """A second instance of ``model``'s class built from its config, holding ``model``'s arrays (no copy)."""
    from mlx_lm.utils import load_model

    twin, _ = load_model(Path(folder), lazy=True)  # the lazily read weights are replaced before use
    twin.update(model.parameters())
    twin.eval()
    return twin


def _adapter_shape(adapters: Path) -> str:
    from macfinetune.backend.adapters import read_adapter_config

    config = read_adapter_config(adapters)
    keys = ("fine_tune_type", "num_layers", "lora_parameters")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True)


def _nbytes(model) -> int:
    from mlx.utils import tree_flatten

    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def _memory() -> tuple[int, int]:
    import psutil

    vm = psutil.virtual_memory()
    return vm.available, vm.total
