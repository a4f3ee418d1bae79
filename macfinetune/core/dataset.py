"""A run's own data files in mlx-lm's formats: parse and check them, split and write them.

Users' datasets in every format are read by ``core.formats``; this module reads back what a run wrote.

mlx-lm picks the format from the first row's keys: ``prompt``+``completion``
(completions), ``messages`` (chat, optionally with ``tools``) or ``text``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from macfinetune.core import atomic
from macfinetune.core.problems import Problem, ProblemError

FORMATS = ("completions", "chat", "text", "preference")
_MAX_PROBLEMS = 20
MAX_ROW_BYTES = 1_000_000


def detect_format(row: dict) -> str | None:
    if "chosen" in row and "rejected" in row:
        return "preference"  # core.formats.pairs: {"prompt": [messages], "chosen", "rejected"}
    if "prompt" in row and "completion" in row:
        return "completions"
    if "messages" in row:
        return "chat"
    if "text" in row:
        return "text"
    return None


def read_jsonl(path: Path) -> list[dict]:
    """Parse a JSONL file; raise ProblemError naming every bad line (up to 20)."""
    path = Path(path)
    raw = _read_bytes(path)
    if not raw.strip():
        raise ProblemError(Problem("the file is empty", file=str(path)))
    if raw.lstrip()[:1] == b"[":
        raise ProblemError(
            Problem(
                "this is a JSON array; expected JSON Lines (one JSON object per line)",
                file=str(path),
                line=1,
            )
        )
    rows, problems = [], []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        row = _parse_line(line, path, number, problems)
        if row is not None:
            rows.append((number, row))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise ProblemError(problems)
    return _check_rows(rows, path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProblemError(Problem("file not found", file=str(path))) from None
    except OSError as e:
        raise ProblemError(Problem(f"cannot read the file: {e.strerror}", file=str(path))) from None


def _parse_line(line: bytes, path: Path, number: int, problems: list) -> dict | None:
    if len(line) > MAX_ROW_BYTES:
        problems.append(Problem(
            f"a {len(line) / 1e6:.1f} MB row; mlx-lm keeps only the first max_seq_length tokens of a row, "
            "so split long documents into rows of a few thousand words",
            file=str(path), line=number, value=f"{len(line):,} bytes"))
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(Problem(f"not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1})", file=str(path), line=number))
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(Problem(f"not valid JSON: {e.msg.removesuffix(' at')} at column {e.colno}", file=str(path), line=number, value=_clip(text)))
        return None
    if not isinstance(row, dict):
        problems.append(Problem(f"expected a JSON object, got {type(row).__name__}", file=str(path), line=number, value=_clip(text)))
        return None
    return row


def _check_rows(numbered: list[tuple[int, dict]], path: Path) -> list[dict]:
    if not numbered:
        raise ProblemError(Problem("the file has no rows", file=str(path)))
    first_line, first = numbered[0]
    fmt = detect_format(first)
    if fmt is None:
        raise ProblemError(
            Problem(
                f"unknown row format with keys {sorted(first)}; expected 'messages' (chat), "
                "'prompt' and 'completion', or 'text'",
                file=str(path),
                line=first_line,
            )
        )
    problems = []
    for number, row in numbered:
        problem = _row_problem(row, fmt)
        if problem:
            problems.append(Problem(problem, file=str(path), line=number, value=_clip(json.dumps(row))))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise ProblemError(problems)
    return [row for _, row in numbered]


def _row_problem(row: dict, fmt: str) -> str | None:
    found = detect_format(row)
    if found != fmt:
        return f"this row is {found or 'of no known format'} but the first row is {fmt}; one file holds one format"
    if fmt == "chat":
        return _messages_problem(row["messages"])
    if fmt == "preference":
        from macfinetune.core.formats.pairs import row_problem

        return row_problem(row)
    if fmt == "completions":
        bad = [k for k in ("prompt", "completion") if not isinstance(row[k], str)]
        return f"{bad[0]!r} must be text" if bad else None
    return None if isinstance(row["text"], str) and row["text"] else "'text' must be non-empty text"


def _messages_problem(messages) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content} objects"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            return f"message {i + 1} must be an object with 'role' and 'content'"
        if m.get("content") is None and not m.get("tool_calls"):
            return f"message {i + 1} ({m['role']}) has no content"
    return None


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# --- splitting and writing ---------------------------------------------------------------


def split_rows(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded validation split; at least one row on each side."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_valid = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    valid_idx = set(order[:n_valid])
    train = [r for i, r in enumerate(rows) if i not in valid_idx]
    valid = [r for i, r in enumerate(rows) if i in valid_idx]
    return train, valid


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
