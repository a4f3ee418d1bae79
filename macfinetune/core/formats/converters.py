"""Records in the formats people have (Alpaca, ShareGPT, chat, ...) converted to mlx-lm rows."""

from __future__ import annotations

import json

from macfinetune.core.formats.pairs import convert_pair, is_pair
from macfinetune.core.formats.rows import (
    _MAX_PROBLEMS,
    _SHAREGPT_ROLES,
    CHAT_ROLES,
    ROLE_ALIASES,
    RowRef,
    _Bad,
    _clip,
    _Part,
    json_type,
)
from macfinetune.core.problems import Problem, ProblemError, fail


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
    ("preference", is_pair),  # first: a pair may also carry 'prompt' or 'messages'
    ("completions", lambda r: "prompt" in r and "completion" in r),
    ("sharegpt", _is_sharegpt),
    ("tools", lambda r: "messages" in r and "tools" in r),
    ("chat", lambda r: "messages" in r),
    ("alpaca", lambda r: "instruction" in r and "output" in r),
    ("text", lambda r: "text" in r),
)


# The keys that make each format; a row missing some that the first row has is told which.
_FORMAT_KEYS = {
    "preference": ("chosen", "rejected"),
    "completions": ("prompt", "completion"),
    "sharegpt": ("conversations", "messages"),
    "tools": ("messages", "tools"),
    "chat": ("messages",),
    "alpaca": ("instruction", "output"),
    "text": ("text",),
}


def _convert_records(numbered: list[tuple[RowRef, object]], file: str) -> _Part:
    """Detect the format from the first record (as mlx-lm does) and convert every record."""
    if not numbered:
        raise fail("the dataset has no rows", file=file)
    first_ref, first = numbered[0]
    if not isinstance(first, dict):
        raise fail(f"expected a JSON object, got {json_type(first)}", file=file, line=first_ref.line,
                   value=_clip(json.dumps(first, default=str)))
    fmt = detect_row_format(first)
    if fmt is None:
        raise fail(_unknown_format_message(first), file=file, line=first_ref.line, value=_clip(json.dumps(first, default=str)))
    convert, keys = _CONVERTERS[fmt], [k for k in _FORMAT_KEYS[fmt] if k in first]
    rows, refs, problems = [], [], []
    for ref, record in numbered:
        try:
            rows.append(convert(_same_format(record, fmt, keys)))
            refs.append(ref)
        except _Bad as bad:
            problems.append(Problem(f"{ref}: {bad.message}" if ref.line is None else bad.message,
                                    file=ref.file, line=ref.line, field=bad.field, value=_clip(str(bad.value))))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise ProblemError(problems)
    return _Part(fmt, rows, refs, file)


def _unknown_format_message(first: dict) -> str:
    return (f"unknown row format (keys {sorted(first)}); expected one of: messages (chat), prompt+completion, text, "
            "instruction+output (Alpaca), conversations (ShareGPT), chosen+rejected (preference pairs)")


def _same_format(record, fmt: str, keys: list[str]) -> dict:
    """``record`` when it has the first row's format ``fmt`` (made by ``keys``); otherwise what differs."""
    if not isinstance(record, dict):
        raise _Bad(f"expected a JSON object, got {json_type(record)}", value=record)
    found = detect_row_format(record)
    if found == fmt or {found, fmt} == {"chat", "tools"}:
        return record
    missing = [k for k in keys if k not in record]
    if found is None and missing:
        names = " and ".join(f"'{k}'" for k in missing)
        raise _Bad(f"{names} {'is' if len(missing) == 1 else 'are'} missing (the first row has {' and '.join(keys)})",
                   value=json.dumps(record, ensure_ascii=False, default=str))
    raise _Bad(f"this row is {found or 'of no known format'} but the first row is {fmt}; one file holds one format",
               value=json.dumps(record, ensure_ascii=False, default=str))


def _text_field(record: dict, key: str, *, optional: bool = False) -> str:
    value = record.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"'{key}' must be text, got {json_type(value)}", field=key, value=value)
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
    role = message["role"]
    if role not in CHAT_ROLES and role not in ROLE_ALIASES:
        raise _Bad(f"message {number} has the unknown role {role!r}; the roles are {', '.join(CHAT_ROLES)} "
                   f"(or {', '.join(ROLE_ALIASES)})", field=f"messages[{number - 1}].role", value=role)
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
    "preference": convert_pair,
}
