"""The data model of a loaded dataset: where rows came from, splits, column mappings."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core.problems import fail

SOURCE_FORMATS = {
    "chat": "mlx-lm chat (messages)",
    "tools": "mlx-lm chat with tools (messages + tools)",
    "completions": "mlx-lm completions (prompt, completion)",
    "text": "mlx-lm text",
    "alpaca": "Alpaca (instruction, input, output)",
    "sharegpt": "ShareGPT (conversations of from/value)",
    "table": "CSV/TSV table",
    "textfiles": "plain text files (.txt/.md)",
    "preference": "preference pairs (prompt, chosen, rejected)",
}
SPLITS = ("train", "valid", "test")
HF_PREFIX = "hf:"
DEFAULT_CHUNK_CHARS = 6000
_SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "dev": "valid", "test": "test"}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_UNREAD_SUFFIXES = (".parquet", ".arrow", ".xlsx", ".xls")  # known, not read: say so instead of "not UTF-8"
_FILE_SUFFIXES = (*_JSON_SUFFIXES, *_TABLE_DELIMITERS, *_TEXT_SUFFIXES, *_UNREAD_SUFFIXES)
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

    in_array: bool = False  # an element of a JSON array: the row number says more than the line

    def __str__(self) -> str:
        name = Path(self.file).name if self.file and not self.file.startswith(HF_PREFIX) else self.file
        if self.line is None:
            return f"{name or 'row'} row {self.index + 1}"
        if self.in_array:
            return f"{name} row {self.index + 1} (line {self.line})"
        return f"{name} line {self.line}"


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

# Chat roles, and the other names chat templates use for them.
CHAT_ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system", "ipython": "tool", "function": "tool"}

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



@dataclass(frozen=True)
class _Part:
    """One file's rows after conversion."""

    format: str
    rows: list
    refs: list
    file: str
    notes: tuple = ()


def _json_error(e: ValueError | RecursionError) -> str:
    """What json.loads raised, in words: its message with the column ("... starting at" already ends in "at")."""
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg.removesuffix(' at')} at column {e.colno}"
    if isinstance(e, RecursionError):
        return "nested too deeply to read (arrays and objects more than about a thousand levels deep)"
    digits = re.search(r"has (\d+) digits", str(e))  # Python reads integers of at most 4,300 digits
    return f"a number with {digits[1]} digits, more than Python reads (4,300); write it as text" if digits else f"not valid JSON: {e}"


def json_type(value) -> str:
    """A JSON value's type in JSON's words: null, true, a number, text, an array, an object."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    names = ((str, "text"), ((int, float), "a number"), (list, "an array"), (dict, "an object"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


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
