"""Datasets the way people have them, read and converted to mlx-lm rows.

Sources (``SOURCE_FORMATS``): mlx-lm's JSONL formats (chat, tools, completions, text), Alpaca
(instruction/input/output, a JSON array or JSONL), ShareGPT (conversations of from/value),
CSV/TSV with a column mapping, a folder of .txt/.md files, and Hugging Face datasets through a
loader that the backend passes in (``load_hf``). A folder may hold train/valid/test files.

Every row keeps a ``RowRef`` (file and line) so problems name the user's own rows. The user's
files are only read: callers write the converted rows (into a run folder, or ``prepare``'s
output folder).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from macfinetune.core import atomic, dataset, modelinfo
from macfinetune.core.problems import Problem, ProblemError, fail

SOURCE_FORMATS = {
    "chat": "mlx-lm chat (messages)",
    "tools": "mlx-lm chat with tools (messages + tools)",
    "completions": "mlx-lm completions (prompt, completion)",
    "text": "mlx-lm text",
    "alpaca": "Alpaca (instruction, input, output)",
    "sharegpt": "ShareGPT (conversations of from/value)",
    "table": "CSV/TSV table",
    "textfiles": "plain text files (.txt/.md)",
}
SPLITS = ("train", "valid", "test")
HF_PREFIX = "hf:"
DEFAULT_CHUNK_CHARS = 6000
_SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "dev": "valid", "test": "test"}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_FILE_SUFFIXES = (*_JSON_SUFFIXES, *_TABLE_DELIMITERS, *_TEXT_SUFFIXES, ".parquet")
_ROW_LIST_KEYS = ("data", "rows", "examples", "instances", "train")  # {"data": [rows]} wrappers
_MAX_PROBLEMS = 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")

# A Hugging Face loader: name or saved-dataset folder -> {split name: rows}. Raises ProblemError.
HFLoader = Callable[[str], dict]


@dataclass(frozen=True)
class RowRef:
    """Where a row came from in the user's data: shown as 'train.json line 17'."""

    file: str | None
    line: int | None  # 1-based; for a JSON array, the line where the object starts
    index: int  # 0-based position among the rows of its file

    def __str__(self) -> str:
        name = Path(self.file).name if self.file and not self.file.startswith(HF_PREFIX) else self.file
        where = f" line {self.line}" if self.line is not None else f" row {self.index + 1}"
        return f"{name or 'row'}{where}"


@dataclass(frozen=True)
class Split:
    name: str  # train, valid, test
    rows: tuple  # mlx-lm rows (dicts)
    refs: tuple  # one RowRef per row
    file: str | None


@dataclass(frozen=True)
class LoadedData:
    """Everything read from one dataset, already in mlx-lm's format."""

    source: str
    format: str  # a key of SOURCE_FORMATS, or "hf:<format>" for a Hugging Face dataset
    mlx_format: str  # chat, completions or text: what mlx-lm sees
    splits: tuple  # Split, in SPLITS order
    notes: tuple = ()  # what the conversion decided: columns used, files skipped
    valid_created: bool = False  # the valid split was cut from train by with_valid_split

    def split(self, name: str) -> Split | None:
        return next((s for s in self.splits if s.name == name), None)


@dataclass(frozen=True)
class ColumnMapping:
    """Which table column holds what; None means guess it from the header."""

    prompt: str | None = None
    completion: str | None = None
    system: str | None = None
    input: str | None = None  # Alpaca-style extra input, appended to the prompt
    text: str | None = None


# Header names that are guessed, in order of preference, when no mapping is given.
_COLUMN_ALIASES = {
    "prompt": ("prompt", "instruction", "question", "query", "user", "human"),
    "input": ("input", "context"),
    "completion": ("completion", "response", "output", "answer", "assistant", "gpt", "target"),
    "system": ("system", "system_prompt"),
    "text": ("text", "content", "document", "body"),
}

# ShareGPT speaker names -> chat roles.
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "function_response": "tool",
    "tool": "tool",
}


class _Bad(Exception):
    """One row that cannot be converted: message, field and value."""

    def __init__(self, message: str, field: str | None = None, value=None):
        super().__init__(message)
        self.message, self.field, self.value = message, field, value


# --- entry points ------------------------------------------------------------------------


def load_any(
    path: str | Path,
    *,
    mapping: ColumnMapping | None = None,
    load_hf: HFLoader | None = None,
    chunk_chars: int | None = DEFAULT_CHUNK_CHARS,
) -> LoadedData:
    """Read any supported dataset and convert it to mlx-lm rows; raise ProblemError on bad input.

    ``path``: a file, a folder (train/valid/test files, a saved Hugging Face dataset, or .txt/.md
    files), or a Hugging Face dataset name (``org/name`` or ``hf:name``). ``chunk_chars`` splits
    long text files at paragraph breaks (None or 0: one row per file).
    """
    text = str(path)
    if text.startswith(HF_PREFIX):
        return _load_hf(text[len(HF_PREFIX) :], load_hf)
    local = Path(text).expanduser()
    if local.is_dir():
        return _load_folder(local, mapping, load_hf, chunk_chars)
    if local.is_file():
        return _assemble(str(local), {"train": _read_file(local, mapping, chunk_chars)})
    if modelinfo.looks_like_repo_id(text) and local.suffix.lower() not in _FILE_SUFFIXES:
        return _load_hf(text, load_hf)
    raise fail("dataset not found (not a file, a folder, or a Hugging Face name like org/name)",
               file=text, field="data.path", value=text)


def load_dataset_files(
    path: str | Path,
    mask_prompt: bool = False,
    *,
    mapping: ColumnMapping | None = None,
    load_hf: HFLoader | None = None,
    chunk_chars: int | None = DEFAULT_CHUNK_CHARS,
) -> tuple[list[dict], list[dict], str, str]:
    """Training's view: (train rows, valid rows, mlx format, train source); valid may be empty.

    A drop-in for ``dataset.load_dataset_files`` that accepts every format ``load_any`` reads.
    """
    data = load_any(path, mapping=mapping, load_hf=load_hf, chunk_chars=chunk_chars)
    check_trainable(data, mask_prompt)
    train, valid = data.split("train"), data.split("valid")
    return list(train.rows), list(valid.rows) if valid else [], data.mlx_format, train.file or data.source


# Prompt masking trains the last message; what a conversation needs for that (same words as core.dataset).
_MASK_RULES = (
    (lambda m: len(m) < 2, "have a single message; a prompt must come before the trained answer"),
    (lambda m: m[-1].get("role") != "assistant", "do not end with an assistant message, which is what masking trains"),
)


def check_trainable(data: LoadedData, mask_prompt: bool) -> None:
    """Problems that stop mlx-lm from training on ``data`` with prompt masking (none without it)."""
    if not mask_prompt:
        return
    if data.mlx_format == "text":
        raise fail("prompt masking needs chat or completions data; this data is plain text",
                   file=data.source, field="data.mask_prompt", value=True)
    if data.mlx_format == "chat":
        problems = [p for split in data.splits for p in _mask_problems(split)]
        if problems:
            raise ProblemError(problems)


def _mask_problems(split: Split) -> list[Problem]:
    problems = []
    for rule, why in _MASK_RULES:
        bad = [ref for row, ref in zip(split.rows, split.refs, strict=True) if rule(row["messages"])]
        if bad:
            numbers = [r.line if r.line is not None else r.index + 1 for r in bad]
            shown = ", ".join(map(str, numbers[:10])) + (" ..." if len(bad) > 10 else "")
            problems.append(Problem(f"with data.mask_prompt, rows {shown} {why} (turn masking off or fix the rows)",
                                    file=bad[0].file, line=bad[0].line, field="data.mask_prompt", value=True))
    return problems


def with_valid_split(data: LoadedData, fraction: float, seed: int) -> LoadedData:
    """``data`` with a seeded validation split cut from train when it has none.

    The same rows go to valid as in training (``dataset.split_rows`` with the same seed).
    """
    if data.split("valid") is not None:
        return data
    if not 0 < fraction < 1:
        raise fail("the validation fraction must be between 0 and 1", field="valid_fraction", value=fraction)
    train = data.split("train")
    if len(train.rows) < 2:
        raise fail("need at least 2 rows to make a validation split", file=train.file, value=len(train.rows))
    keep, held = dataset.split_rows(list(range(len(train.rows))), fraction, seed)
    splits = {s.name: s for s in data.splits}
    splits["train"] = _subset(train, keep, "train")
    splits["valid"] = _subset(train, held, "valid")
    return replace(data, splits=tuple(splits[n] for n in SPLITS if n in splits), valid_created=True)


def _subset(split: Split, order: list[int], name: str) -> Split:
    return Split(name, tuple(split.rows[i] for i in order), tuple(split.refs[i] for i in order), split.file)


@dataclass(frozen=True)
class Prepared:
    out_dir: Path
    files: tuple  # the .jsonl files written, train first
    rows: dict  # split name -> row count
    valid_created: bool


def prepare(data: LoadedData, out_dir: Path, *, valid_fraction: float = 0.1, seed: int = 0) -> Prepared:
    """Write ``train.jsonl``/``valid.jsonl`` (and ``test.jsonl``) in mlx-lm's format into a new folder."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise fail("the output folder already exists and is not empty; choose a new one",
                   file=str(out_dir), field="out", value=str(out_dir))
    data = with_valid_split(data, valid_fraction, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for split in data.splits:
        files.append(out_dir / f"{split.name}.jsonl")
        dataset.write_jsonl(files[-1], list(split.rows))
    atomic.write_json(out_dir / "source.json", _provenance(data, valid_fraction, seed))
    return Prepared(out_dir, tuple(files), {s.name: len(s.rows) for s in data.splits}, data.valid_created)


def _provenance(data: LoadedData, valid_fraction: float, seed: int) -> dict:
    return {"source": data.source, "format": data.format, "mlx_format": data.mlx_format,
            "valid_created": data.valid_created, "valid_fraction": valid_fraction if data.valid_created else None,
            "seed": seed if data.valid_created else None, "notes": list(data.notes),
            "rows": {s.name: len(s.rows) for s in data.splits}}


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


# --- assembling splits --------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """One file's rows after conversion."""

    format: str
    rows: list
    refs: list
    file: str
    notes: tuple = ()


def _assemble(source: str, parts: dict, format_prefix: str = "") -> LoadedData:
    train = parts.get("train")
    if train is None:
        raise fail("no train split (a train file, or a dataset split named 'train')", file=source)
    mlx = {name: dataset.detect_format(part.rows[0]) for name, part in parts.items()}
    for name, part in parts.items():
        if mlx[name] != mlx["train"]:
            raise fail(f"the {name} split is {mlx[name]} data but train is {mlx['train']}; one dataset holds one format",
                       file=part.file, line=part.refs[0].line)
    splits = tuple(Split(n, tuple(parts[n].rows), tuple(parts[n].refs), parts[n].file) for n in SPLITS if n in parts)
    notes = tuple(note for part in parts.values() for note in part.notes)
    return LoadedData(source, format_prefix + train.format, mlx["train"], splits, notes)


def _load_folder(folder: Path, mapping, load_hf, chunk_chars) -> LoadedData:
    if _is_saved_hf_dataset(folder):
        return _load_hf(str(folder), load_hf)
    split_files = _split_files(folder)
    if split_files:
        return _assemble(str(folder), {n: _read_file(p, mapping, chunk_chars) for n, p in split_files.items()})
    texts = _text_files(folder)
    if texts:
        return _assemble(str(folder), {"train": _read_text_files(texts, folder, chunk_chars)})
    raise fail("the folder has no train file (train.jsonl, train.json, train.csv or train.tsv) "
               "and no .txt/.md files", file=str(folder), field="data.path", value=str(folder))


def _is_saved_hf_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").exists() or (
        (folder / "dataset_info.json").exists() and (folder / "state.json").exists()
    )


def _split_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = _SPLIT_NAMES.get(path.stem.lower())
        if split is None or not path.is_file() or path.suffix.lower() not in (*_JSON_SUFFIXES, *_TABLE_DELIMITERS):
            continue
        if split in found:
            raise fail(f"two files for the {split} split: {found[split].name} and {path.name}; keep one",
                       file=str(folder), value=path.name)
        found[split] = path
    if found and "train" not in found:
        raise fail(f"the folder has {', '.join(p.name for p in found.values())} but no train file",
                   file=str(folder), field="data.path")
    return found


def _load_hf(name: str, load_hf: HFLoader | None) -> LoadedData:
    if load_hf is None:
        raise fail("Hugging Face datasets are read by the backend's loader; none was given", value=name)
    parts = {}
    for split_name, records in _hf_splits(name, load_hf(name)).items():
        label = f"{HF_PREFIX}{name} [{split_name}]"
        numbered = [(RowRef(label, None, i), row) for i, row in enumerate(records)]
        parts[split_name] = _convert_records(numbered, label)
    return _assemble(f"{HF_PREFIX}{name}", parts, format_prefix="hf:")


def _hf_splits(name: str, found: dict) -> dict:
    """The dataset's splits under our names; a single unnamed split is train."""
    splits = {_SPLIT_NAMES[k.lower()]: v for k, v in found.items() if k.lower() in _SPLIT_NAMES}
    if "train" not in splits and len(found) == 1:
        splits["train"] = next(iter(found.values()))
    if "train" not in splits:
        raise fail(f"the dataset has splits {sorted(found)} but none is train", value=name)
    return splits


# --- reading one file ---------------------------------------------------------------------


def _read_file(path: Path, mapping: ColumnMapping | None, chunk_chars: int | None) -> _Part:
    suffix = path.suffix.lower()
    if suffix in _TABLE_DELIMITERS:
        return _read_table(path, _TABLE_DELIMITERS[suffix], mapping or ColumnMapping())
    if suffix in _TEXT_SUFFIXES:
        return _read_text_files([path], path.parent, chunk_chars)
    text = _read_text(path)
    if not text.strip():
        raise fail("the file is empty", file=str(path))
    numbered = _json_array(text, path) if text.lstrip()[:1] == "[" else _json_lines_or_object(text, path)
    if not numbered:
        raise fail("the file has no rows", file=str(path))
    return _convert_records(numbered, str(path))


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise fail(f"cannot read the file: {e.strerror}", file=str(path)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise fail(f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8",
                   file=str(path), line=line) from None


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
        except json.JSONDecodeError as e:
            problems.append(Problem(f"not valid JSON: {e.msg} at column {e.colno}", file=str(path),
                                    line=number, value=_clip(line)))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise ProblemError(problems)
    return numbered


def _json_lines_or_object(text: str, path: Path) -> list[tuple[RowRef, object]]:
    """JSON Lines, or one JSON object (pretty-printed) that holds the rows under a key like 'data'."""
    try:
        return _json_lines(text, path)
    except ProblemError:
        whole = _parse_whole(text) if "\n" in text.strip() else None  # one object over several lines
        if whole is None:
            raise
    key = next((k for k in _ROW_LIST_KEYS if isinstance(whole, dict) and isinstance(whole.get(k), list)), None)
    if key is None:
        return [(RowRef(str(path), 1, 0), whole)]
    return _json_array(text, path, start=re.search(rf'"{key}"\s*:\s*\[', text).end() - 1)


def _parse_whole(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
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
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise fail(f"not valid JSON: {e.msg} at column {e.colno}", file=str(path), line=e.lineno) from None
        if _too_long(text[counted:pos]):
            raise ProblemError(_too_long_problem(text[counted:pos], path, line))
        numbered.append((RowRef(str(path), line, len(numbered)), value))
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


# --- converting records --------------------------------------------------------------------


def detect_row_format(row: dict) -> str | None:
    """The source format of one record (mlx-lm's own order first: completions, chat, text)."""
    for name, matches in _ROW_FORMATS:
        if matches(row):
            return name
    return None


def _is_sharegpt(row: dict) -> bool:
    turns = row.get("conversations", row.get("messages"))
    if "conversations" in row:
        return True
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]


_ROW_FORMATS = (
    ("completions", lambda r: "prompt" in r and "completion" in r),
    ("sharegpt", _is_sharegpt),
    ("tools", lambda r: "messages" in r and "tools" in r),
    ("chat", lambda r: "messages" in r),
    ("alpaca", lambda r: "instruction" in r and "output" in r),
    ("text", lambda r: "text" in r),
)


def _convert_records(numbered: list[tuple[RowRef, object]], file: str) -> _Part:
    """Detect the format from the first record (as mlx-lm does) and convert every record."""
    if not numbered:
        raise fail("the dataset has no rows", file=file)
    first_ref, first = numbered[0]
    fmt = detect_row_format(first) if isinstance(first, dict) else None
    if fmt is None:
        raise fail(_unknown_format_message(first), file=file, line=first_ref.line, value=_clip(json.dumps(first, default=str)))
    convert = _CONVERTERS[fmt]
    rows, refs, problems = [], [], []
    for ref, record in numbered:
        try:
            rows.append(convert(_same_format(record, fmt)))
            refs.append(ref)
        except _Bad as bad:
            problems.append(Problem(f"{ref}: {bad.message}" if ref.line is None else bad.message,
                                    file=ref.file, line=ref.line, field=bad.field, value=_clip(str(bad.value))))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise ProblemError(problems)
    return _Part(fmt, rows, refs, file)


def _unknown_format_message(first) -> str:
    keys = sorted(first) if isinstance(first, dict) else type(first).__name__
    return (f"unknown row format (keys {keys}); expected one of: messages (chat), prompt+completion, text, "
            "instruction+output (Alpaca), conversations (ShareGPT)")


def _same_format(record, fmt: str) -> dict:
    if not isinstance(record, dict):
        raise _Bad(f"expected a JSON object, got {type(record).__name__}", value=record)
    found = detect_row_format(record)
    if found != fmt and {found, fmt} != {"chat", "tools"}:
        raise _Bad(f"this row is {found or 'of no known format'} but the first row is {fmt}; one file holds one format",
                   value=json.dumps(record, ensure_ascii=False, default=str))
    return record


def _text_field(record: dict, key: str, *, optional: bool = False) -> str:
    value = record.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"'{key}' must be text, got {type(value).__name__}", field=key, value=value)
    return value


def _convert_chat(record: dict) -> dict:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise _Bad("'messages' must be a non-empty list of {role, content} objects", field="messages", value=messages)
    for i, message in enumerate(messages, start=1):
        _check_message(message, i)
    if "tools" in record and not isinstance(record["tools"], list):
        raise _Bad("'tools' must be a list of tool definitions", field="tools", value=record["tools"])
    return record


def _check_message(message, number: int) -> None:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise _Bad(f"message {number} must be an object with 'role' and 'content'", field=f"messages[{number - 1}]",
                   value=message)
    content = message.get("content")
    if content is None and not message.get("tool_calls"):
        raise _Bad(f"message {number} ({message['role']}) has no content", field=f"messages[{number - 1}].content")
    if content is not None and not isinstance(content, (str, list)):
        raise _Bad(f"message {number} ({message['role']}): content must be text", field=f"messages[{number - 1}].content",
                   value=content)


def _convert_completions(record: dict) -> dict:
    _text_field(record, "prompt")
    _text_field(record, "completion")
    return record


def _convert_text(record: dict) -> dict:
    if not _text_field(record, "text").strip():
        raise _Bad("'text' is empty (mlx-lm cannot train on an empty text row)", field="text", value="")
    return record


def _convert_alpaca(record: dict) -> dict:
    prompt = _join_prompt(_text_field(record, "instruction"), _text_field(record, "input", optional=True))
    messages = _system_message(_text_field(record, "system", optional=True))
    messages += _history_messages(record.get("history") or [])
    messages += [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": _text_field(record, "output")}]
    return {"messages": messages}


def _join_prompt(instruction: str, extra: str) -> str:
    """Alpaca's instruction and optional input become one user message, a blank line apart."""
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def _system_message(system: str) -> list[dict]:
    return [{"role": "system", "content": system}] if system.strip() else []


def _history_messages(history) -> list[dict]:
    """LLaMA-Factory's Alpaca 'history': [[question, answer], ...] before the instruction."""
    if not isinstance(history, list) or not all(isinstance(p, list) and len(p) == 2 for p in history):
        raise _Bad("'history' must be a list of [question, answer] pairs", field="history", value=history)
    return [{"role": role, "content": str(text)} for pair in history for role, text in zip(("user", "assistant"), pair, strict=True)]


def _convert_sharegpt(record: dict) -> dict:
    key = "conversations" if "conversations" in record else "messages"
    turns = record[key]
    if not isinstance(turns, list) or not turns:
        raise _Bad(f"'{key}' must be a non-empty list of {{from, value}} objects", field=key, value=turns)
    messages = _system_message(_text_field(record, "system", optional=True))
    messages += [_sharegpt_message(turn, i, key) for i, turn in enumerate(turns)]
    row = {"messages": messages}
    tools = _sharegpt_tools(record.get("tools"))
    return {**row, "tools": tools} if tools else row


def _sharegpt_message(turn, i: int, key: str) -> dict:
    if not isinstance(turn, dict):
        raise _Bad(f"turn {i + 1} must be an object with 'from' and 'value'", field=f"{key}[{i}]", value=turn)
    speaker, value = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
    role = _SHAREGPT_ROLES.get(str(speaker).lower())
    if role is None:
        raise _Bad(f"turn {i + 1}: unknown speaker {speaker!r}; expected one of {', '.join(_SHAREGPT_ROLES)}",
                   field=f"{key}[{i}].from", value=speaker)
    if not isinstance(value, str):
        raise _Bad(f"turn {i + 1} ({speaker}): 'value' must be text", field=f"{key}[{i}].value", value=value)
    if str(speaker).lower() == "function_call":
        return _tool_call_message(value)
    return {"role": role, "content": value}


def _tool_call_message(value: str) -> dict:
    """A ShareGPT function_call turn ({"name", "arguments"} as JSON) becomes an assistant tool call."""
    try:
        call = json.loads(value)
    except json.JSONDecodeError:
        return {"role": "assistant", "content": value}
    if not isinstance(call, dict) or "name" not in call:
        return {"role": "assistant", "content": value}
    function = {"name": call["name"], "arguments": call.get("arguments", {})}
    return {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": function}]}


def _sharegpt_tools(tools) -> list | None:
    if isinstance(tools, str) and tools.strip():
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise _Bad("'tools' is not valid JSON", field="tools", value=tools) from None
    if tools and not isinstance(tools, list):
        raise _Bad("'tools' must be a list of tool definitions", field="tools", value=tools)
    return tools or None


_CONVERTERS = {
    "chat": _convert_chat,
    "tools": _convert_chat,
    "completions": _convert_completions,
    "text": _convert_text,
    "alpaca": _convert_alpaca,
    "sharegpt": _convert_sharegpt,
}


# --- tables ---------------------------------------------------------------------------------


def _read_table(path: Path, delimiter: str, mapping: ColumnMapping) -> _Part:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise fail("the table is empty", file=str(path))
    columns = resolve_columns([h.strip() for h in header], mapping, str(path))
    rows, refs, line = [], [], reader.line_num + 1
    for cells in reader:
        if any(c.strip() for c in cells):
            rows.append(_table_row(cells, columns, path, line))
            refs.append(RowRef(str(path), line, len(refs)))
        line = reader.line_num + 1
    if not rows:
        raise fail("the table has a header but no rows", file=str(path))
    fmt_note = ", ".join(f"{k} = column {header[i].strip()!r}" for k, i in columns.items())
    return _Part("table", rows, refs, str(path), (f"{path.name}: {fmt_note}",))


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
        return cells[i] if i is not None and i < len(cells) else ""

    if "prompt" not in columns:
        if not cell("text").strip():
            raise fail("the text cell is empty (mlx-lm cannot train on an empty text row)", file=str(path),
                       line=line, field="columns.text")
        return {"text": cell("text")}
    messages = _system_message(cell("system"))
    messages += [{"role": "user", "content": _join_prompt(cell("prompt"), cell("input"))},
                 {"role": "assistant", "content": cell("completion")}]
    return {"messages": messages}


# --- text files -----------------------------------------------------------------------------


def _text_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _read_text_files(paths: Iterable[Path], root: Path, chunk_chars: int | None) -> _Part:
    rows, refs, empty = [], [], []
    for path in paths:
        chunks = chunk_text(_read_text(path), chunk_chars)
        if not chunks:
            empty.append(str(path.relative_to(root)))
        for line, chunk in chunks:
            rows.append({"text": chunk})
            refs.append(RowRef(str(path), line, len(refs)))
    if not rows:
        raise fail("every text file is empty", file=str(root))
    notes = (f"skipped {len(empty)} empty files: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}",) if empty else ()
    return _Part("textfiles", rows, refs, str(root), notes)


def chunk_text(text: str, limit: int | None) -> list[tuple[int, str]]:
    """Split ``text`` at blank lines into (first line, chunk) pieces of at most ``limit`` characters.

    Paragraphs are packed greedily; a paragraph longer than ``limit`` is cut at ``limit``.
    """
    if not text.strip():
        return []
    if not limit or len(text) <= limit:
        return [(1, text.strip("\n"))]
    chunks: list[tuple[int, str]] = []
    for line, paragraph in _paragraphs(text):
        pieces = [paragraph[i : i + limit] for i in range(0, len(paragraph), limit)]
        for piece in pieces:
            if chunks and len(chunks[-1][1]) + 2 + len(piece) <= limit:
                chunks[-1] = (chunks[-1][0], chunks[-1][1] + "\n\n" + piece)
            else:
                chunks.append((line, piece))
    return chunks


def _paragraphs(text: str) -> list[tuple[int, str]]:
    paragraphs, current, start = [], [], 1
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            start = start if current else number
            current.append(line)
        elif current:
            paragraphs.append((start, "\n".join(current)))
            current = []
    if current:
        paragraphs.append((start, "\n".join(current)))
    return paragraphs


# --- small helpers -------------------------------------------------------------------------


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
