"""Events as single JSON lines, for a rank process to tell its launcher what happened.

Events are values (frozen dataclasses of numbers, strings and tuples), so a line is the class
name and its fields; ``decode`` rebuilds the same event (``decode(encode(e)) == e``).
"""

from __future__ import annotations

import dataclasses
import json

from macfinetune.core import events
from macfinetune.core.problems import Problem

PREFIX = "@macfinetune-event "
_CLASSES = {name: cls for name, cls in vars(events).items() if dataclasses.is_dataclass(cls) and isinstance(cls, type)}


def encode(event) -> str:
    return PREFIX + json.dumps({"type": type(event).__name__, "fields": dataclasses.asdict(event)})


def decode(line: str):
    """The event on a line written by ``encode``; None for any other line (a log message)."""
    if not line.startswith(PREFIX):
        return None
    try:
        record = json.loads(line[len(PREFIX):])
        cls = _CLASSES[record["type"]]
    except (ValueError, KeyError, TypeError):
        return None
    return cls(**{f.name: _value(f, record["fields"][f.name]) for f in dataclasses.fields(cls)
                  if f.name in record["fields"]})


def _value(f: dataclasses.Field, value):
    if f.name == "problems":
        return tuple(Problem(**p) if isinstance(p, dict) else Problem(str(p)) for p in value)
    if isinstance(value, list):
        return tuple(value)
    return value
