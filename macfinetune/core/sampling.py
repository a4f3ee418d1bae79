"""Generation settings and how to name a checkpoint on the command line."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core.problems import Problem, ProblemError


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0

    def problems(self) -> list[Problem]:
        rules = [
            (self.max_tokens < 1, "max_tokens", "must be at least 1", self.max_tokens),
            (not 0 <= self.temperature < math.inf, "temperature", "must be a finite number, 0 (greedy) or more", self.temperature),
            (not 0 < self.top_p <= 1, "top_p", "must be above 0 and at most 1", self.top_p),
            (not 0 <= self.seed < 2**64, "seed", "must be 0 to 2**64 - 1", self.seed),
        ]
        return [Problem(msg, field=name, value=value) for bad, name, msg, value in rules if bad]


_WHICH = re.compile(r"^(best|last|\d+)$", re.IGNORECASE)


def parse_adapter_spec(text: str) -> tuple[Path, str]:
    """'RUN_DIR[:best|last|N]' -> (folder, which); 'best' when no checkpoint is named."""
    head, sep, tail = text.rpartition(":")
    if sep and head and _WHICH.match(tail):
        return Path(head).expanduser(), tail.lower()
    if not text:
        raise ProblemError(Problem("empty --adapter", field="adapter"))
    return Path(text).expanduser(), "best"
