"""Rows rendered through a model's chat template, for the wizard's data preview.

The rendering is the one the token counts use (``tokens._render``: mlx-lm's own templating of chat
and completions rows), so what the preview highlights is what is counted and trained. Only the
tokenizer files are read; no weights, no MLX arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from macfinetune.backend import tokens

Rendered = tuple[str, str] | str  # (full text, prompt text), or the template's error message


def template_renderer(model: str | Path) -> Callable[[dict], Rendered]:
    """``render(row)`` for a local model folder: text rows as they are, chat rows through the template."""
    tokenizer = tokens.load_tokenizer(Path(model).expanduser())

    def render(row: dict) -> Rendered:
        if tokens._is_text(row):
            return row["text"], ""
        return tokens._render(row, tokenizer)

    return render
