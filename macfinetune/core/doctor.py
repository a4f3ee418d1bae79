"""The dataset doctor: what a dataset holds and what is wrong with it, naming the rows.

It reads ``formats.LoadedData`` (mlx-lm rows, each with the ``RowRef`` of the user's row). Token
numbers come from a ``count_tokens`` callable that the backend builds from the model's tokenizer
and chat template (``backend.tokens.token_counter``); without one the report has no token
statistics. Pure Python: the numbers here are what the tests check by hand.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from macfinetune.core import formats
from macfinetune.core.formats import LoadedData, RowRef, pairs
from macfinetune.core.formats.rows import ROLE_ALIASES
from macfinetune.core.problems import Problem


class TokenCount(NamedTuple):
    """One row after the chat template. A tuple, so a backend may return plain tuples."""

    total: int  # tokens of the templated row, before truncation
    prompt: int  # tokens before the answer: what prompt masking leaves out (0 for text rows)
    eos: bool  # an EOS token comes after the start of the answer: the model learns to stop
    error: str | None = None  # the chat template refused the row (then the numbers are 0)


CountTokens = Callable[[Sequence[dict]], Sequence[tuple]]

# check name -> (severity, title). "error": the rows teach nothing; "warning": look at them.
CHECKS = {
    "empty_field": ("warning", "empty fields"),
    "role_order": ("warning", "wrong role order"),
    "duplicate": ("warning", "duplicate rows"),
    "leakage": ("warning", "the same row in train and in valid/test"),
    "truncated": ("warning", "rows longer than max_seq_length"),
    "nothing_trained": ("error", "rows with no answer left to train"),
    "missing_eos": ("warning", "no EOS token after the answer"),
    "template_error": ("error", "rows the chat template cannot render"),
    "empty_answer": ("error", "preference pairs with an empty answer"),
    "identical_pair": ("error", "preference pairs whose chosen and rejected answers are the same"),
    "prompt_leakage": ("warning", "the same prompt in train and in valid/test pairs"),
}

# Which role may follow which in a conversation (None: the first message).
_NEXT_ROLES = {
    None: {"system", "user"},
    "system": {"user"},
    "user": {"assistant"},
    "assistant": {"user", "tool"},
    "tool": {"tool", "assistant"},
}
_DETAILS_SHOWN = 10


@dataclass(frozen=True)
class Finding:
    """One kind of problem and every row that has it."""

    check: str  # a key of CHECKS
    severity: str
    message: str
    rows: tuple  # RowRef of every row concerned
    details: tuple = ()  # specifics for the first rows: "train.json line 9 repeats line 3"

    def problem(self) -> Problem:
        first = self.rows[0] if self.rows else None
        listed = ", ".join(str(r) for r in self.rows[:_DETAILS_SHOWN])
        more = f" and {len(self.rows) - _DETAILS_SHOWN} more" if len(self.rows) > _DETAILS_SHOWN else ""
        return Problem(f"{self.message}: {listed}{more}", file=first.file if first else None,
                       line=first.line if first else None, field=self.check)


@dataclass(frozen=True)
class HistogramBin:
    low: int  # inclusive
    high: int  # exclusive
    count: int


@dataclass(frozen=True)
class LengthStats:
    rows: int
    min: int
    median: float
    p95: int  # nearest rank: the smallest length that 95% of rows do not exceed
    max: int
    mean: float
    total: int
    histogram: tuple  # HistogramBin, equal widths from 0


@dataclass(frozen=True)
class Truncation:
    max_seq_length: int
    rows: int  # rows longer than max_seq_length
    tokens_lost: int  # tokens cut in all
    most_lost: int  # tokens cut from the longest row


@dataclass(frozen=True)
class SplitSummary:
    name: str
    rows: int
    file: str | None
    created: bool  # cut from train by the doctor (seeded), not in the user's data


@dataclass(frozen=True)
class Report:
    source: str
    format: str
    mlx_format: str
    splits: tuple  # SplitSummary
    valid_fraction: float | None  # when the valid split was created
    seed: int | None
    max_seq_length: int
    mask_prompt: bool
    lengths: LengthStats | None  # None without a tokenizer
    trained_tokens: int | None  # tokens that carry loss, after truncation and masking
    truncation: Truncation | None
    findings: tuple  # Finding
    notes: tuple = ()

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def problems(self) -> list[Problem]:
        return [f.problem() for f in self.findings]

    def to_dict(self, rows_limit: int = 100) -> dict:
        """A JSON-ready dict; each finding lists at most ``rows_limit`` rows (and their count)."""
        out = _plain(self)
        for finding, plain in zip(self.findings, out["findings"], strict=True):
            plain["count"] = len(finding.rows)
            plain["rows"] = [str(r) for r in finding.rows[:rows_limit]]
        return out


# --- the report --------------------------------------------------------------------------------


def inspect(
    data: LoadedData,
    *,
    count_tokens: CountTokens | None = None,
    max_seq_length: int = 2048,
    mask_prompt: bool = False,
    valid_fraction: float = 0.1,
    seed: int = 0,
) -> Report:
    """Examine ``data``: splits (a seeded valid split when there is none), token lengths, problems."""
    data = formats.with_valid_split(data, valid_fraction, seed)
    mask_prompt = mask_prompt or data.mlx_format == "preference"  # pairs train only their answers
    rows = [row for s in data.splits for row in s.rows]
    refs = [ref for s in data.splits for ref in s.refs]
    findings = row_findings(rows, refs) + overlap_findings(data)
    if data.mlx_format == "preference":
        findings += pair_findings(data)
    lengths = trained = truncation = None
    if count_tokens is not None:
        counts = [TokenCount(*c) for c in count_tokens(rows)]
        findings.append(template_finding(counts, refs))
        counts, refs = _rendered(counts, refs)
        lengths = length_stats([c.total for c in counts])
        trained = trained_tokens(counts, max_seq_length, mask_prompt)
        truncation = truncation_stats(counts, max_seq_length)
        findings += token_findings(counts, refs, data.mlx_format, max_seq_length, mask_prompt)
    splits = tuple(SplitSummary(s.name, len(s.rows), s.file, data.valid_created and s.name == "valid")
                   for s in data.splits)
    created = data.valid_created
    return Report(data.source, data.format, data.mlx_format, splits, valid_fraction if created else None,
                  seed if created else None, max_seq_length, mask_prompt, lengths, trained, truncation,
                  tuple(f for f in findings if f.rows), data.notes)


def _finding(check: str, message: str, hits: list[tuple[RowRef, str]]) -> Finding:
    severity = CHECKS[check][0]
    rows = tuple(ref for ref, _ in hits)
    details = tuple(f"{ref}: {detail}" for ref, detail in hits[:_DETAILS_SHOWN] if detail)
    n = len(rows)
    words = {"rows": f"{n} row" + ("" if n == 1 else "s"), "have": "has" if n == 1 else "have",
             "are": "is" if n == 1 else "are", "repeat": "repeats" if n == 1 else "repeat"}
    return Finding(check, severity, message.format(**words), rows, details)


# --- checks on the rows themselves ---------------------------------------------------------------


def row_findings(rows: Sequence[dict], refs: Sequence[RowRef]) -> list[Finding]:
    """Empty fields and wrong role order, one finding per check."""
    found: dict[str, list] = {"empty_field": [], "role_order": []}
    for row, ref in zip(rows, refs, strict=True):
        for check, test in _ROW_CHECKS:
            detail = test(row)
            if detail:
                found[check].append((ref, detail))
    return [
        _finding("empty_field", "{rows} {have} an empty field", found["empty_field"]),
        _finding("role_order", "{rows} {have} the roles of the conversation out of order", found["role_order"]),
    ]


def empty_field(row: dict) -> str | None:
    """The first empty field of an mlx-lm row, described; None when all are filled."""
    if "messages" in row and not ("prompt" in row and "completion" in row):
        for i, message in enumerate(row["messages"], start=1):
            if not _content_text(message.get("content")).strip() and not message.get("tool_calls"):
                return f"message {i} ({message.get('role')}) is empty"
        return None
    for key in ("prompt", "completion", "text"):
        if key in row and not str(row[key]).strip():
            return f"'{key}' is empty"
    return None


def role_order(row: dict) -> str | None:
    """What is wrong with the order of a conversation's roles; None when it is fine."""
    if "messages" not in row or ("prompt" in row and "completion" in row):
        return None
    previous = None
    for i, message in enumerate(row["messages"], start=1):
        role = ROLE_ALIASES.get(message.get("role"), message.get("role"))
        if role not in _NEXT_ROLES:
            return f"message {i} has the unknown role {message.get('role')!r}"
        if role not in _NEXT_ROLES[previous]:
            after = f"after a {previous} message" if previous else "as the first message"
            return f"message {i} is a {role} message {after}"
        previous = role
    if previous != "assistant":
        return f"the last message is a {previous} message; the model learns the last assistant message"
    return None


_ROW_CHECKS = (("empty_field", empty_field), ("role_order", role_order))


def _content_text(content) -> str:
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


# --- duplicates and leakage ---------------------------------------------------------------------


def row_key(row: dict) -> str:
    """A row's identity for duplicates: its JSON with case and runs of whitespace ignored."""
    text = json.dumps(row, sort_keys=True, ensure_ascii=False)
    text = text.replace("\\n", " ").replace("\\t", " ").replace("\\r", " ")
    return " ".join(text.split()).casefold()


def overlap_findings(data: LoadedData) -> list[Finding]:
    """Rows repeated within a split, and valid/test rows that are also in train."""
    duplicates, leaks, seen_in_train = [], [], {}
    for split in data.splits:
        seen: dict[str, RowRef] = {}
        for row, ref in zip(split.rows, split.refs, strict=True):
            key = row_key(row)
            if key in seen:
                duplicates.append((ref, f"repeats {seen[key]} ({split.name})"))
            else:
                seen[key] = ref
            if split.name != "train" and key in seen_in_train:
                leaks.append((ref, f"{split.name} row is also in train: {seen_in_train[key]}"))
        if split.name == "train":
            seen_in_train = seen
    return [
        _finding("duplicate", "{rows} {repeat} an earlier row of the same split (ignoring case and spacing)", duplicates),
        _finding("leakage", "{rows} of valid/test {are} also in train: the validation loss will look better than it is",
                 leaks),
    ]


def pair_findings(data: LoadedData) -> list[Finding]:
    """Preference pairs: empty or identical answers, and valid/test prompts that train also asks."""
    found: dict[str, list] = {"empty_answer": [], "identical_pair": [], "prompt_leakage": []}
    train_prompts: dict[str, RowRef] = {}
    for split in data.splits:
        for row, ref in zip(split.rows, split.refs, strict=True):
            for check, test in (("empty_answer", pairs.empty_answer), ("identical_pair", pairs.identical_pair)):
                detail = test(row)
                if detail:
                    found[check].append((ref, detail))
            key = pairs.prompt_key(row)
            if split.name == "train":
                train_prompts.setdefault(key, ref)
            elif key in train_prompts:
                found["prompt_leakage"].append((ref, f"{split.name} prompt is also in train: {train_prompts[key]}"))
    return [
        _finding("empty_answer", "{rows} {have} an empty chosen or rejected answer", found["empty_answer"]),
        _finding("identical_pair", "{rows} {have} the same chosen and rejected answer: nothing to prefer",
                 found["identical_pair"]),
        _finding("prompt_leakage", "{rows} of valid/test {have} a prompt that train also has: held-out preference "
                 "accuracy will look better than it is", found["prompt_leakage"]),
    ]


# --- token numbers ------------------------------------------------------------------------------


def token_findings(counts: Sequence[TokenCount], refs: Sequence[RowRef], mlx_format: str, max_seq_length: int,
                   mask_prompt: bool) -> list[Finding]:
    """Truncated rows, rows with no answer left, rows whose answer has no EOS."""
    truncated, nothing, no_eos = [], [], []
    for c, ref in zip(counts, refs, strict=True):
        if c.total > max_seq_length:
            truncated.append((ref, f"{c.total} tokens, {c.total - max_seq_length} cut"))
        if c.prompt and c.prompt >= min(c.total, max_seq_length):
            nothing.append((ref, f"prompt {c.prompt} tokens, row {c.total}, max_seq_length {max_seq_length}"))
        if mlx_format != "text" and not c.eos:
            no_eos.append((ref, ""))
    lost = ("nothing is trained on them (prompt masking)" if mask_prompt
            else "the model sees only their prompt")
    return [
        _finding("truncated", f"{{rows}} {{are}} longer than max_seq_length={max_seq_length} and cut at the end "
                 "(the answer's end and its EOS are lost)", truncated),
        _finding("nothing_trained", f"{{rows}} {{have}} no answer left after truncation at {max_seq_length} tokens: {lost}",
                 nothing),
        _finding("missing_eos", "{rows} {have} no EOS token after the answer under this chat template: the model "
                 "may not learn to stop", no_eos),
    ]


def template_finding(counts: Sequence[TokenCount], refs: Sequence[RowRef]) -> Finding:
    hits = [(ref, c.error) for c, ref in zip(counts, refs, strict=True) if c.error]
    return _finding("template_error", "{rows} {are} refused by the model's chat template (training would stop on them)",
                    hits)


def _rendered(counts: list[TokenCount], refs: Sequence[RowRef]) -> tuple[list, list]:
    keep = [i for i, c in enumerate(counts) if not c.error]
    return [counts[i] for i in keep], [refs[i] for i in keep]


def trained_tokens(counts: Sequence[TokenCount], max_seq_length: int, mask_prompt: bool) -> int:
    """Tokens that carry loss: each row cut at ``max_seq_length``, minus its prompt when masking."""
    return sum(max(0, min(c.total, max_seq_length) - (c.prompt if mask_prompt else 0)) for c in counts)


def truncation_stats(counts: Sequence[TokenCount], max_seq_length: int) -> Truncation:
    cut = [c.total - max_seq_length for c in counts if c.total > max_seq_length]
    return Truncation(max_seq_length, len(cut), sum(cut), max(cut, default=0))


def length_stats(values: Sequence[int], bins: int = 10) -> LengthStats | None:
    """min, median, p95 (nearest rank), max, mean, total and a histogram of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    return LengthStats(len(ordered), ordered[0], statistics.median(ordered), percentile(ordered, 95), ordered[-1],
                       sum(ordered) / len(ordered), sum(ordered), histogram(ordered, bins))


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted values: the value at rank ceil(q/100 * n)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def histogram(values: Sequence[int], bins: int = 10) -> tuple:
    """Equal-width bins on multiples of the width (1, 2 or 5 times a power of ten, about ``bins`` bins)."""
    low, high = min(values), max(values)
    width = nice_width(high - low + 1, bins)
    start = low // width * width
    counts = [0] * ((high - start) // width + 1)
    for value in values:
        counts[(value - start) // width] += 1
    return tuple(HistogramBin(start + i * width, start + (i + 1) * width, n) for i, n in enumerate(counts))


def nice_width(span: int, bins: int) -> int:
    """The smallest 1, 2 or 5 x 10^k at least ``span / bins``."""
    target = max(1.0, span / bins)
    power = 10 ** math.floor(math.log10(target))
    return next(int(step * power) for step in (1, 2, 5, 10) if step * power >= target)


def _plain(value):
    """Dataclasses, tuples and RowRefs as JSON-ready values."""
    if isinstance(value, RowRef):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
