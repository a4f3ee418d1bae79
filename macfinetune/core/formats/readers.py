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

from dataclasses import dataclass, replace
from pathlib import Path

from macfinetune.core import atomic, dataset, modelinfo
from macfinetune.core.formats.converters import _convert_records
from macfinetune.core.formats.jsonfiles import _json_array, _json_lines_or_object
from macfinetune.core.formats.rows import (
    _FILE_SUFFIXES,
    _JSON_SUFFIXES,
    _SPLIT_NAMES,
    _TABLE_DELIMITERS,
    _TEXT_SUFFIXES,
    _UNREAD_SUFFIXES,
    DEFAULT_CHUNK_CHARS,
    HF_PREFIX,
    SPLITS,
    ColumnMapping,
    HFLoader,
    LoadedData,
    RowRef,
    Split,
    _Part,
    _read_text,
)
from macfinetune.core.formats.tables import _read_table
from macfinetune.core.formats.text import TokenChunks, _read_text_files, _text_files
from macfinetune.core.problems import Problem, ProblemError, fail

# --- entry points ------------------------------------------------------------------------


def load_any(
    path: str | Path,
    *,
    mapping: ColumnMapping | None = None,
    load_hf: HFLoader | None = None,
    chunk_chars: int | None = DEFAULT_CHUNK_CHARS,
    token_chunks: TokenChunks | None = None,
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
        return _load_folder(local, mapping, load_hf, chunk_chars, token_chunks)
    if local.is_file():
        return _assemble(str(local), {"train": _read_file(local, mapping, chunk_chars, token_chunks)})
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
    token_chunks: TokenChunks | None = None,
) -> tuple[list[dict], list[dict], str, str, tuple]:
    """Training's view: (train rows, valid rows, mlx format, train source, notes); valid may be empty.

    A drop-in for ``dataset.load_dataset_files`` that accepts every format ``load_any`` reads.
    """
    data = load_any(path, mapping=mapping, load_hf=load_hf, chunk_chars=chunk_chars, token_chunks=token_chunks)
    check_trainable(data, mask_prompt)
    train, valid = data.split("train"), data.split("valid")
    return (list(train.rows), list(valid.rows) if valid else [], data.mlx_format, train.file or data.source,
            data.notes)


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
        raise fail("prompt masking needs chat or completions data; this data is plain text, so train it with "
                   "--set mask_prompt=false (or data.mask_prompt: false in the recipe)",
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


# --- assembling splits --------------------------------------------------------------------



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


def _load_folder(folder: Path, mapping, load_hf, chunk_chars, token_chunks=None) -> LoadedData:
    if _is_saved_hf_dataset(folder):
        return _load_hf(str(folder), load_hf)
    split_files = _split_files(folder)
    if split_files:
        return _assemble(str(folder), {n: _read_file(p, mapping, chunk_chars, token_chunks) for n, p in split_files.items()})
    texts = _text_files(folder)
    if texts:
        return _assemble(str(folder), {"train": _read_text_files(texts, folder, chunk_chars, token_chunks)})
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
        known = (*_JSON_SUFFIXES, *_TABLE_DELIMITERS, *_UNREAD_SUFFIXES)  # an unread one is refused by its name
        if split is None or not path.is_file() or path.suffix.lower() not in known:
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


def _read_file(path: Path, mapping: ColumnMapping | None, chunk_chars: int | None,
               token_chunks: TokenChunks | None = None) -> _Part:
    suffix = path.suffix.lower()
    if suffix in _UNREAD_SUFFIXES:
        raise fail(f"{suffix[1:]} files are not read; convert to .jsonl, .json, .csv or .tsv", file=str(path))
    if suffix in _TABLE_DELIMITERS:
        return _read_table(path, _TABLE_DELIMITERS[suffix], mapping or ColumnMapping())
    if suffix in _TEXT_SUFFIXES:
        return _read_text_files([path], path.parent, chunk_chars, token_chunks)
    text = _read_text(path)
    if not text.strip():
        raise fail("the file is empty", file=str(path))
    numbered = _json_array(text, path) if text.lstrip()[:1] == "[" else _json_lines_or_object(text, path)
    if not numbered:
        raise fail("the file has no rows", file=str(path))
    return _convert_records(numbered, str(path))
