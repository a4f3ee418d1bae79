"""Samples at checkpoints: which prompts, and the run folder's ``samples.jsonl``.

At every checkpoint save (when ``eval.samples`` is on) the engine answers a few fixed prompts
greedily with the checkpoint's weights and appends one line to ``samples.jsonl``:
``{"event": "samples", "iteration": N, "time": T, "samples": [{"prompt": ..., "text": ...}, ...]}``.
The line is appended, flushed and fsynced like metrics.jsonl; a torn last line is skipped when read,
and a later line for the same iteration (a resumed run saving it again) replaces the earlier one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core.events import SamplesSaved

SAMPLES = "samples.jsonl"
_TEXT_PROMPT_WORDS = 24  # a text row's prompt: its first words, at most this many (and at most half)


@dataclass(frozen=True)
class SamplePrompt:
    """A prompt to answer: chat ``messages`` through the template, or raw ``text`` (text datasets)."""

    shown: str  # what the page shows as the prompt
    messages: tuple[dict, ...] = ()
    text: str | None = None


def prompts_for(custom: tuple[str, ...], valid_rows: list[dict], count: int) -> list[SamplePrompt]:
    """The recipe's prompts (each a user message), else the first ``count`` validation rows' prompts."""
    if custom:
        return [SamplePrompt(p, ({"role": "user", "content": p},)) for p in custom[:count]]
    out = []
    for row in valid_rows:
        prompt = row_prompt(row)
        if prompt is not None:
            out.append(prompt)
        if len(out) == count:
            break
    return out


def row_prompt(row: dict) -> SamplePrompt | None:
    """The part of a dataset row the model is asked to continue; None for a row without one."""
    if "messages" in row:
        return _chat_prompt(list(row["messages"]))
    if "prompt" in row and "completion" in row:
        return SamplePrompt(str(row["prompt"]), ({"role": "user", "content": str(row["prompt"])},))
    if "text" in row:
        words = str(row["text"]).split()
        head = " ".join(words[: max(1, min(_TEXT_PROMPT_WORDS, len(words) // 2))])
        return SamplePrompt(head, text=head) if head else None
    return None


def _chat_prompt(messages: list[dict]) -> SamplePrompt | None:
    if messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        return None
    shown = str(users[-1].get("content", ""))
    return SamplePrompt(shown, tuple({"role": m.get("role"), "content": m.get("content", "")} for m in messages))


# --- samples.jsonl ----------------------------------------------------------------------------


def samples_record(event: SamplesSaved) -> dict:
    samples = [{"prompt": p, "text": t} for p, t in zip(event.prompts, event.texts, strict=True)]
    return {"event": "samples", "iteration": event.iteration, "time": round(event.time, 3), "samples": samples}


def append_samples(run_dir: Path, event: SamplesSaved) -> None:
    """Append the event's line to samples.jsonl, flushed and fsynced (a torn last line is ended first)."""
    path = Path(run_dir) / SAMPLES
    line = json.dumps(samples_record(event)) + "\n"
    with open(path, "a+b") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def read_samples(run_dir: Path) -> dict[int, tuple[tuple[str, str], ...]]:
    """{iteration: ((prompt, text), ...)}; unreadable lines are skipped, the last line per iteration wins."""
    path = Path(run_dir) / SAMPLES
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        record = _parse(line)
        if record is not None:
            out[record[0]] = record[1]
    return out


def _parse(line: str) -> tuple[int, tuple[tuple[str, str], ...]] | None:
    try:
        record = json.loads(line)
        pairs = tuple((str(s["prompt"]), str(s["text"])) for s in record["samples"])
        return int(record["iteration"]), pairs
    except (ValueError, KeyError, TypeError):
        return None
