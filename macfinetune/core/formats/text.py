"""Folders of .txt/.md files: one row per document, long documents cut into chunks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from macfinetune.core.formats.rows import _TEXT_SUFFIXES, RowRef, _Part, _read_text
from macfinetune.core.problems import fail


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
