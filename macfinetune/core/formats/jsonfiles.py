"""JSON and JSON Lines files: rows with the line each starts on, problems by line."""

from __future__ import annotations

import json
import re
from pathlib import Path

from macfinetune.core import dataset
from macfinetune.core.formats.converters import detect_row_format
from macfinetune.core.formats.rows import (
    _MAX_PROBLEMS,
    _ROW_LIST_KEYS,
    _WHITESPACE,
    RowRef,
    _clip,
    _json_error,
)
from macfinetune.core.problems import Problem, ProblemError, fail


def _json_lines(text: str, path: Path) -> list[tuple[RowRef, object]]:
    numbered, problems = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if _too_long(line):
            problems.append(_too_long_problem(line, path, number))
            continue
        try:
            numbered.append((RowRef(str(path), number, len(numbered)), json.loads(line)))
        except (ValueError, RecursionError) as e:
            problems.append(Problem(_json_error(e), file=str(path),
                                    line=number, value=_clip(line)))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise ProblemError(problems)
    return numbered


def _json_lines_or_object(text: str, path: Path) -> list[tuple[RowRef, object]]:
    """JSON Lines, or one JSON object (on one line or pretty-printed) that holds the rows under a key like 'data'.

    The file is such a wrapper when it holds one object, that object is no row of a known format and
    it has a list under one of ``_ROW_LIST_KEYS``; a one-row file whose row has 'text' (or 'messages',
    ...) next to a 'data' list stays a row.
    """
    try:
        numbered = _json_lines(text, path)
    except ProblemError:
        whole = _parse_whole(text) if "\n" in text.strip() else None  # one object over several lines
        if whole is None:
            raise
        numbered = [(RowRef(str(path), 1, 0), whole)]
    key = _wrapper_key(numbered[0][1]) if len(numbered) == 1 else None
    if key is None:
        return numbered
    return _json_array(text, path, start=re.search(rf'"{key}"\s*:\s*\[', text).end() - 1)


def _wrapper_key(value) -> str | None:
    if not isinstance(value, dict) or detect_row_format(value) is not None:
        return None
    return next((k for k in _ROW_LIST_KEYS if isinstance(value.get(k), list)), None)


def _parse_whole(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _too_long(row_text: str) -> bool:
    return len(row_text) > dataset.MAX_ROW_BYTES // 4 and len(row_text.encode("utf-8")) > dataset.MAX_ROW_BYTES


def _too_long_problem(row_text: str, path: Path, line: int) -> Problem:
    size = len(row_text.encode("utf-8"))
    return Problem(f"a {size / 1e6:.1f} MB row; mlx-lm keeps only the first max_seq_length tokens of a row, "
                   "so split long documents into rows of a few thousand words", file=str(path), line=line,
                   value=f"{size:,} bytes")


def _json_array(text: str, path: Path, start: int | None = None) -> list[tuple[RowRef, object]]:
    """Parse a JSON array element by element, keeping the line where each element starts."""
    decoder, numbered = json.JSONDecoder(), []
    start = text.index("[") if start is None else start
    pos = _WHITESPACE.match(text, start + 1).end()
    line, counted = 1, 0
    one_line = "\n" not in text.strip()  # then every row is on line 1: name rows by number
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            raise fail(_json_error(e), file=str(path), line=getattr(e, "lineno", line)) from None
        if _too_long(text[counted:pos]):
            raise ProblemError(_too_long_problem(text[counted:pos], path, line))
        numbered.append((RowRef(str(path), None if one_line else line, len(numbered), in_array=True), value))
        pos = _after_comma(text, pos, path)
    if pos >= len(text):
        raise fail("not valid JSON: the array is not closed with ']'", file=str(path),
                   line=text.rstrip().count("\n") + 1)
    return numbered


def _after_comma(text: str, pos: int, path: Path) -> int:
    pos = _WHITESPACE.match(text, pos).end()
    if pos < len(text) and text[pos] == ",":
        return _WHITESPACE.match(text, pos + 1).end()
    if pos < len(text) and text[pos] != "]":
        raise fail("not valid JSON: expected ',' or ']' between array elements", file=str(path),
                   line=text.count("\n", 0, pos) + 1)
    return pos
