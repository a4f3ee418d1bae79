"""The New-run wizard's tokenizer work: plain functions at the level of ``jobs`` (no Qt, no MLX arrays).

The wizard counts tokens for its histogram and renders a preview through the chat template on its
own worker threads, so the engine thread stays free for training (a tokenizer is not MLX). ``ui``
may not import ``backend``; ``ui/wizard/factory.py`` injects these into ``WizardServices`` instead,
and each one imports the backend only when it is called, on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path


def token_counter(model: str | Path) -> Callable[[Sequence[dict]], list]:
    """``count(rows) -> [TokenCount]`` with ``model``'s tokenizer and chat template (``backend.tokens``)."""
    from macfinetune.backend.tokens import token_counter as make

    return make(model)


def template_renderer(model: str | Path) -> Callable[[dict], object]:
    """``render(row) -> (full, prompt)`` through ``model``'s chat template (``backend.chat_preview``)."""
    from macfinetune.backend.chat_preview import template_renderer as make

    return make(model)


def supported_model_types() -> frozenset[str]:
    """The model types mlx-lm implements (reads mlx-lm's files; imports mlx-lm)."""
    from macfinetune.backend.architectures import supported_model_types as read

    return read()


def cached_models(cache: Path) -> list:
    """The models in a Hugging Face hub cache, from huggingface_hub's own scan (``backend.hub``)."""
    from macfinetune.backend.hub import cached_models as scan

    return scan(cache)
