"""CSV/TSV tables: which column holds what (a mapping or a guess from the header), one row per line."""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from pathlib import Path

from macfinetune.core.formats.converters import _join_prompt, _system_message
from macfinetune.core.formats.rows import (
    _COLUMN_ALIASES,
    _MAX_PROBLEMS,
    ColumnMapping,
    RowRef,
    _clip,
    _Part,
    _read_text,
)
from macfinetune.core.problems import Problem, ProblemError, fail


def parse_mapping(text: str) -> ColumnMapping:
    """'prompt=Question,completion=Answer' -> ColumnMapping; unknown keys are named."""
    names = [f.name for f in fields(ColumnMapping)]
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, column = part.partition("=")
        if not sep or key.strip() not in names or not column.strip():
            raise fail(f"expected KEY=COLUMN with KEY one of {', '.join(names)}", field="columns", value=part)
        values[key.strip()] = column.strip()
    return ColumnMapping(**values)


def _read_table(path: Path, delimiter: str, mapping: ColumnMapping) -> _Part:
    records, problems = _records(path, delimiter)
    if not records:
        raise ProblemError(problems) if problems else fail("the table is empty", file=str(path))
    (_, header), body = records[0], records[1:]
    columns = resolve_columns([h.strip() for h in header], mapping, str(path))
    widths = [p for line, cells in body if (p := _width_problem(cells, len(header), delimiter, path, line))]
    problems = widths[: _MAX_PROBLEMS - len(problems)] + problems
    if problems:
        raise ProblemError(problems)
    if not body:
        raise fail("the table has a header but no rows", file=str(path))
    rows = [_table_row(cells, columns, path, line) for line, cells in body]
    refs = [RowRef(str(path), line, i) for i, (line, _) in enumerate(body)]
    fmt_note = ", ".join(f"{k} = column {header[i].strip()!r}" for k, i in columns.items())
    return _Part("table", rows, refs, str(path), (f"{path.name}: {fmt_note}",))


# csv's error -> what it means for the user's file (strict: a stray quote is an error, not a guess).
_CSV_ERRORS = (
    ("unexpected end of data", "a quote opened here is never closed: the rest of the file would be one field"),
    ("expected after", 'text follows the closing quote of a field; inside a quoted field, write a quote as two ("")'),
    ("field larger than field limit", "a field over 131,072 characters: a quote opened here is probably never closed"),
)


def _records(path: Path, delimiter: str) -> tuple[list[tuple[int, list[str]]], list[Problem]]:
    """(line, cells) of every non-blank record, and the problem that stopped the reading, if one did."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter, strict=True)
    records, line = [], 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                records.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as e:
        why = next((why for text, why in _CSV_ERRORS if text in str(e)), f"not valid CSV ({e})")
        return records, [Problem(why, file=str(path), line=line)]
    return records, []


def _width_problem(cells: list[str], width: int, delimiter: str, path: Path, line: int) -> Problem | None:
    """A row with more fields than the header (extra empty ones at the end aside) or fewer."""
    if len(cells) > width and any(c.strip() for c in cells[width:]):
        joined = delimiter.join(cells[width - 1 :])
        name = "tab" if delimiter == "\t" else "comma"
        message = f'{len(cells)} fields, the header has {width}: quote a field that holds a {name} ("{_clip(joined)}")'
    elif len(cells) < width:
        message = f"{len(cells)} field{'s' if len(cells) > 1 else ''}, the header has {width}: give every column a field, empty ones too"
    else:
        return None
    return Problem(message, file=str(path), line=line, value=_clip(delimiter.join(cells)))


def resolve_columns(header: list[str], mapping: ColumnMapping, file: str = "") -> dict[str, int]:
    """Column index per role (prompt, completion, system, input, text) from a mapping or the header."""
    lower = {h.lower(): i for i, h in enumerate(header)}
    given = {k: v for k, v in vars(mapping).items() if v}
    missing = [v for v in given.values() if v.lower() not in lower]
    if missing:
        raise fail(f"no column named {missing[0]!r}; the header is {header}", file=file, line=1, field="columns",
                   value=missing[0])
    columns = {k: lower[v.lower()] for k, v in given.items()}
    if not given:
        columns = _guess_columns(lower)
    if not (("prompt" in columns and "completion" in columns) or "text" in columns):
        raise fail(f"cannot tell which columns hold the prompt and the answer (header {header}); pass a mapping "
                   "such as prompt=COLUMN,completion=COLUMN or text=COLUMN", file=file, line=1, field="columns")
    return columns


def _guess_columns(lower: dict[str, int]) -> dict[str, int]:
    found: dict[str, int] = {}
    for role in ("prompt", "completion", "system", "input", "text"):
        name = next((a for a in _COLUMN_ALIASES[role] if a in lower and lower[a] not in found.values()), None)
        if name is not None:
            found[role] = lower[name]
    if "prompt" not in found and "input" in found:
        found["prompt"] = found.pop("input")  # input/output sheets: input is the prompt
    if "prompt" in found and "completion" in found:
        found.pop("text", None)
    return found


def _table_row(cells: list[str], columns: dict[str, int], path: Path, line: int) -> dict:
    def cell(role: str) -> str:
        i = columns.get(role)
        return cells[i] if i is not None else ""

    if "prompt" not in columns:
        if not cell("text").strip():
            raise fail("the text cell is empty (mlx-lm cannot train on an empty text row)", file=str(path),
                       line=line, field="columns.text")
        return {"text": cell("text")}
    messages = _system_message(cell("system"))
    messages += [{"role": "user", "content": _join_prompt(cell("prompt"), cell("input"))},
                 {"role": "assistant", "content": cell("completion")}]
    return {"messages": messages}
