"""Dataset files in mlx-lm's formats: find them, parse them, check them, split them.

mlx-lm picks the format from the first row's keys: ``prompt``+``completion``
(completions), ``messages`` (chat, optionally with ``tools``) or ``text``.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import atomic
from macfinetune.core.problems import Problem, ProblemError

FORMATS = ("completions", "chat", "text")
_MAX_PROBLEMS = 20
MAX_ROW_BYTES = 1_000_000


@dataclass(frozen=True)
class DataSet:
    """The train and valid files a run uses, with their format and sizes."""

    train: Path
    valid: Path | None
    format: str
    train_rows: int
    valid_rows: int


def detect_format(row: dict) -> str | None:
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
        problems.append(Problem(f"not valid JSON: {e.msg} at column {e.colno}", file=str(path), line=number, value=_clip(text)))
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


# --- locating and preparing -------------------------------------------------------------


def load_dataset_files(path: Path | str, mask_prompt: bool = False) -> tuple[list[dict], list[dict], str, Path]:
    """Read a data folder (train.jsonl + optional valid.jsonl) or one .jsonl file.

    Returns (train rows, valid rows, format, train file). Valid may be empty (to be split).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ProblemError(Problem("dataset not found", file=str(path), field="data.path", value=str(path)))
    if path.is_dir():
        train_file = path / "train.jsonl"
        if not train_file.exists():
            raise ProblemError(
                Problem("the data folder has no train.jsonl", file=str(path), field="data.path", value=str(path))
            )
        valid_file = path / "valid.jsonl"
        valid = read_jsonl(valid_file) if valid_file.exists() else []
    else:
        train_file, valid = path, []
    train = read_jsonl(train_file)
    fmt = detect_format(train[0])
    if valid and detect_format(valid[0]) != fmt:
        raise ProblemError(
            Problem(f"valid.jsonl is {detect_format(valid[0])} but train.jsonl is {fmt}", file=str(path / "valid.jsonl"), line=1)
        )
    if mask_prompt and fmt == "text":
        raise ProblemError(
            Problem(
                "prompt masking needs chat or completions data; this data is plain text",
                file=str(train_file),
                field="data.mask_prompt",
                value=True,
            )
        )
    if mask_prompt and fmt == "chat":
        _check_maskable(train, train_file)
        _check_maskable(valid, path / "valid.jsonl")
    return train, valid, fmt, train_file


_MASK_RULES = (
    (lambda m: len(m) < 2, "have a single message; a prompt must come before the trained answer"),
    (lambda m: m[-1].get("role") != "assistant", "do not end with an assistant message, which is what masking trains"),
)


def _check_maskable(rows: list[dict], file: Path) -> None:
    """With prompt masking, the last message is trained and everything before it is the prompt."""
    problems = []
    for rule, why in _MASK_RULES:
        bad = [i + 1 for i, row in enumerate(rows) if rule(row["messages"])]
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
            problems.append(
                Problem(f"with data.mask_prompt, rows {shown} {why} (turn masking off or fix the rows)",
                        file=str(file), line=bad[0], field="data.mask_prompt", value=True)
            )
    if problems:
        raise ProblemError(problems)


def split_rows(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded validation split; at least one row on each side."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_valid = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    valid_idx = set(order[:n_valid])
    train = [r for i, r in enumerate(rows) if i not in valid_idx]
    valid = [r for i, r in enumerate(rows) if i in valid_idx]
    return train, valid


def prepare_dataset(path: Path | str, out_dir: Path, *, mask_prompt: bool, valid_fraction: float, seed: int) -> DataSet:
    """Write the train.jsonl / valid.jsonl a run uses into ``out_dir`` (the user's files stay untouched)."""
    train, valid, fmt, train_file = load_dataset_files(path, mask_prompt)
    out_dir.mkdir(parents=True, exist_ok=True)
    if valid:
        shutil.copyfile(train_file, out_dir / "train.jsonl")
        shutil.copyfile(Path(path) / "valid.jsonl", out_dir / "valid.jsonl")
    else:
        if len(train) < 2:
            raise ProblemError(Problem("need at least 2 rows to make a validation split", file=str(train_file)))
        train, valid = split_rows(train, valid_fraction, seed)
        write_jsonl(out_dir / "train.jsonl", train)
        write_jsonl(out_dir / "valid.jsonl", valid)
    return DataSet(out_dir / "train.jsonl", out_dir / "valid.jsonl", fmt, len(train), len(valid))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
