"""Folders of .txt/.md files: one row per document, long documents cut into chunks."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core.formats.rows import _TEXT_SUFFIXES, RowRef, _Part, _read_text
from macfinetune.core.problems import fail


def _text_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


@dataclass(frozen=True)
class TokenChunks:
    """Split documents into rows of at most ``max_tokens`` tokens as mlx-lm counts them (EOS included).

    ``encode`` is the model's tokenizer (``backend.tokens.document_encoder``); ``overlap`` tokens
    from the end of one chunk start the next, so no sentence is only ever seen cut in half.
    """

    encode: Callable[[str], list]
    max_tokens: int
    overlap: int = 0


def _read_text_files(paths: Iterable[Path], root: Path, chunk_chars: int | None,
                     tokens: TokenChunks | None = None) -> _Part:
    rows, refs, empty, documents = [], [], [], 0
    for path in paths:
        text = _read_text(path)
        chunks = chunk_by_tokens(text, tokens) if tokens else chunk_text(text, chunk_chars)
        documents += bool(chunks)
        if not chunks:
            empty.append(str(path.relative_to(root)))
        for line, chunk in chunks:
            rows.append({"text": chunk})
            refs.append(RowRef(str(path), line, len(refs)))
    if not rows:
        raise fail("every text file is empty", file=str(root))
    notes = (f"skipped {len(empty)} empty files: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}",) if empty else ()
    return _Part("textfiles", rows, refs, str(root), (*notes, chunk_note(documents, len(rows), chunk_chars, tokens)))


def chunk_note(documents: int, chunks: int, chunk_chars: int | None, tokens: TokenChunks | None) -> str:
    """One line for the CLI and ``data inspect``: how the documents became rows."""
    if tokens:
        limit = f"of at most {tokens.max_tokens:,} tokens (max_seq_length), {tokens.overlap:,} tokens of overlap"
    elif chunk_chars:
        limit = f"of at most {chunk_chars:,} characters"
    else:
        return f"{documents:,} documents, one row each (not split)"
    return f"{documents:,} documents split into {chunks:,} chunks {limit}"


_UNIT = re.compile(r"\S+\s*")  # a word and the whitespace after it: chunks start and end between words


def chunk_by_tokens(text: str, spec: TokenChunks) -> list[tuple[int, str]]:
    """(first line, chunk) pieces of ``text`` cut between words, each at most ``spec.max_tokens`` tokens."""
    bounds = [m.start() for m in _UNIT.finditer(text)]
    if not bounds:
        return []
    bounds.append(len(text))
    n, chunks, start = len(bounds) - 1, [], 0
    while True:
        end = _last_fitting_end(text, bounds, start, spec)
        chunks.append((text.count("\n", 0, bounds[start]) + 1, text[bounds[start] : bounds[end]].rstrip()))
        if end >= n:
            return chunks
        start = _overlap_start(text, bounds, start, end, spec.encode, spec.overlap)


def _last_fitting_end(text: str, bounds: list[int], start: int, spec: TokenChunks) -> int:
    """The furthest word boundary whose chunk fits (one word at least: mlx-lm cuts a giant word)."""
    budget = spec.max_tokens - 1  # mlx-lm appends EOS to a text row

    def fits(end: int) -> bool:
        return len(spec.encode(text[bounds[start] : bounds[end]].rstrip())) <= budget

    low, high = start + 1, min(len(bounds) - 1, start + max(budget, 1))  # a word is at least one token
    if fits(high):
        return high
    while high - low > 1:  # fits(low) or low is the one-word minimum; not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _overlap_start(text: str, bounds: list[int], start: int, end: int, encode, overlap: int) -> int:
    """Where the next chunk starts: ``end``, or earlier so that about ``overlap`` tokens repeat."""
    if overlap <= 0:
        return end
    low, high = start + 1, end  # the earliest start whose tail [s, end) has at most ``overlap`` tokens
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if len(encode(text[bounds[mid] : bounds[end]])) <= overlap else (mid + 1, high)
    return low


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
