"""The Playground's data: conversations, prompt history, token batching, run choices, cache policy.

Pure Python (no Qt, no MLX): the page draws these values and the backend follows these rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from macfinetune.core import runs
from macfinetune.core.problems import Problem

BASE, TUNED = "base", "tuned"  # the two panes; "checkpoint N" for the all-checkpoints answers
ROLES = ("system", "user", "assistant")
CHUNK_TOKENS = 16  # a TokenChunk every 16 tokens ...
CHUNK_SECONDS = 0.05  # ... or every 50 ms, whichever comes first


def checkpoint_pane(iteration: int) -> str:
    return f"checkpoint {iteration}"


# --- conversations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """One pane's turns, oldest first: (role, text) pairs; a value, so a pane keeps it and a job gets a copy."""

    turns: tuple[tuple[str, str], ...] = ()

    def ask(self, prompt: str) -> Conversation:
        return Conversation((*self.turns, ("user", prompt)))

    def answer(self, text: str) -> Conversation:
        """The model's reply to the last question (a reply that was stopped early is kept as it stands)."""
        return Conversation((*self.turns, ("assistant", text)))

    def undo_question(self) -> Conversation:
        """Drop a question that got no answer (its job failed or was cancelled before it ran)."""
        return Conversation(self.turns[:-1]) if self.waiting else self

    @property
    def waiting(self) -> bool:
        return bool(self.turns) and self.turns[-1][0] == "user"

    def messages(self, system: str = "") -> tuple[tuple[str, str], ...]:
        """The turns to send, led by the system prompt when there is one."""
        head = (("system", system.strip()),) if system.strip() else ()
        return head + self.turns


def context_problem(prompt_tokens: int, context: int | None, what: str = "the conversation",
                    fix: str = "shorten the prompt or start a New chat") -> Problem | None:
    """A prompt longer than the model reads (its context): refused before it answers, with both numbers."""
    if not context or prompt_tokens <= context:
        return None
    return Problem(f"{what} is {prompt_tokens:,} tokens and this model reads at most {context:,} (its "
                   f"context); {fix}", value=prompt_tokens)


def as_dicts(messages) -> list[dict]:
    """(role, text) pairs as the chat template wants them; an unknown role is named in the error."""
    out = []
    for role, content in messages:
        if role not in ROLES:
            raise ValueError(f"message role must be one of {', '.join(ROLES)}, got {role!r}")
        out.append({"role": role, "content": content})
    return out


def plain_prompt(messages) -> str:
    """For a model without a chat template: the turns as one text to continue."""
    return "\n\n".join(content for _, content in messages) + "\n\n"


# --- prompt history --------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptHistory:
    """Prompts sent, newest first, each once (sending an old one again moves it to the top)."""

    prompts: tuple[str, ...] = ()
    limit: int = 100

    def add(self, prompt: str) -> PromptHistory:
        prompt = prompt.strip()
        if not prompt:
            return self
        rest = tuple(p for p in self.prompts if p != prompt)
        return replace(self, prompts=(prompt, *rest)[: self.limit])


def history_label(prompt: str, width: int = 60) -> str:
    """One line for a history list: the first line, shortened with an ellipsis ('…' also marks more lines)."""
    lines = prompt.strip().splitlines() or [""]
    if len(lines[0]) > width:
        return lines[0][: width - 1].rstrip(" .,;:") + "…"
    return lines[0] + " …" if len(lines) > 1 else lines[0]


# --- streaming -------------------------------------------------------------------------------


class ChunkBatcher:
    """Collects token texts; ``add`` returns the batch to send every CHUNK_TOKENS tokens or CHUNK_SECONDS."""

    def __init__(self, tokens: int = CHUNK_TOKENS, seconds: float = CHUNK_SECONDS,
                 clock: Callable[[], float] = time.perf_counter):
        self.tokens, self.seconds, self._clock = tokens, seconds, clock
        self._pending: list[str] = []
        self._last = clock()

    def add(self, text: str) -> str | None:
        self._pending.append(text)
        if len(self._pending) >= self.tokens or self._clock() - self._last >= self.seconds:
            return self.flush()
        return None

    def flush(self) -> str | None:
        """What is pending (None when nothing is)."""
        self._last = self._clock()
        if not self._pending:
            return None
        text, self._pending = "".join(self._pending), []
        return text


def tokens_per_second(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def speed_text(generated_tokens: int, tokens_per_s: float, stopped: bool = False) -> str:
    """A pane's footer after an answer: '48 tokens · 312.5 tokens/s' (· stopped)."""
    text = f"{generated_tokens} token{'s' if generated_tokens != 1 else ''} · {tokens_per_s:.1f} tokens/s"
    return text + " · stopped" if stopped else text


def load_text(seconds: float, reused: bool, swapped: bool) -> str:
    """What getting the model ready cost: a load from disk, a checkpoint put onto the loaded base, or nothing."""
    if reused and swapped:
        return f"checkpoint loaded in {seconds:.2f} s (base already loaded)"
    if reused:
        return "model already loaded"
    return f"model loaded in {seconds:.1f} s"


# --- the runs a pane can use -----------------------------------------------------------------


@dataclass(frozen=True)
class RunChoice:
    """A run with saved checkpoints: what the tuned pane offers and the base the base pane uses."""

    path: Path
    base_model: str
    checkpoints: tuple[int, ...]
    best: int | None

    @property
    def label(self) -> str:
        return self.path.name

    def checkpoint_labels(self) -> list[str]:
        return [checkpoint_label(it, it == self.best) for it in self.checkpoints]

    def pick(self, which: str) -> int | None:
        """The iteration for 'best', 'last' or a number (None when the run has no such checkpoint)."""
        which = str(which).strip().lower()
        if not self.checkpoints:
            return None
        if which == "best":
            return self.best if self.best is not None else self.checkpoints[-1]
        if which == "last":
            return self.checkpoints[-1]
        return int(which) if which.isdigit() and int(which) in self.checkpoints else None


def checkpoint_label(iteration: int, best: bool) -> str:
    return f"{iteration} (best)" if best else str(iteration)


def list_run_choices(home: Path, extra: list[Path] = ()) -> list[RunChoice]:
    """Runs under ``home`` (and ``extra`` folders) that have a committed checkpoint, newest first."""
    found = [p.parent for pattern in (f"*/{runs.RECIPE}", f"*/*/{runs.RECIPE}") for p in Path(home).glob(pattern)]
    folders = {Path(p).resolve() for p in [*found, *extra]}
    choices = [c for c in (run_choice(f) for f in folders) if c is not None]
    return sorted(choices, key=lambda c: c.path.name, reverse=True)


def run_choice(run_dir: Path) -> RunChoice | None:
    """The run's committed checkpoints and base model; None when it has none (or is not a run)."""
    run_dir = Path(run_dir)
    checkpoints = tuple(sorted(c.iteration for c in runs.complete_checkpoints(run_dir)))
    base = run_base_model(run_dir)
    if not checkpoints or not base:
        return None
    best = runs.best_checkpoint(run_dir)
    return RunChoice(run_dir, base, checkpoints, best[0] if best and best[0] in checkpoints else None)


def run_base_model(run_dir: Path) -> str:
    """The base model a run trained on ('' when it does not say); see ``runs.base_model``."""
    return runs.base_model(Path(run_dir))


# --- what the engine keeps loaded ------------------------------------------------------------


def models_to_release(cached: list[tuple[str, int]], needed: int, available: int, *, max_models: int = 2,
                      reserve: int = 0) -> list[str]:
    """Cached models to let go before loading one of ``needed`` bytes: the least recently used first
    (``cached`` is oldest first, with each model's bytes), until at most ``max_models - 1`` stay and the new
    one fits in ``available`` bytes with ``reserve`` to spare."""
    drop, keep = [], list(cached)
    while keep and (len(keep) >= max_models or needed + reserve > available):
        key, size = keep.pop(0)
        drop.append(key)
        available += size
    return drop
