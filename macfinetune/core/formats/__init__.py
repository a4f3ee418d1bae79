"""Datasets the way people have them, read and converted to mlx-lm rows.

- ``rows``: the data model (``RowRef``, ``Split``, ``LoadedData``, ``ColumnMapping``) and constants.
- ``readers``: the entry points (``load_any``, ``load_dataset_files``, ``prepare``), folders, splits.
- ``jsonfiles``: JSON Lines and JSON arrays, row by row with line numbers.
- ``converters``: Alpaca, ShareGPT, chat, completions and text records to mlx-lm rows.
- ``tables``: CSV/TSV files and column mappings.
- ``text``: folders of .txt/.md documents and chunking.
"""

from macfinetune.core.formats.converters import detect_row_format
from macfinetune.core.formats.readers import (
    Prepared,
    check_trainable,
    load_any,
    load_dataset_files,
    prepare,
    with_valid_split,
)
from macfinetune.core.formats.rows import (
    DEFAULT_CHUNK_CHARS,
    HF_PREFIX,
    SOURCE_FORMATS,
    SPLITS,
    ColumnMapping,
    HFLoader,
    LoadedData,
    RowRef,
    Split,
)
from macfinetune.core.formats.tables import parse_mapping, resolve_columns
from macfinetune.core.formats.text import TokenChunks, chunk_by_tokens, chunk_text

__all__ = [
    "DEFAULT_CHUNK_CHARS", "HF_PREFIX", "SOURCE_FORMATS", "SPLITS", "ColumnMapping", "HFLoader", "LoadedData",
    "Prepared", "RowRef", "Split", "TokenChunks", "check_trainable", "chunk_by_tokens", "chunk_text", "detect_row_format", "load_any",
    "load_dataset_files", "parse_mapping", "prepare", "resolve_columns", "with_valid_split",
]
