"""What a path given to the app is (dropped on the window, chosen with File > Open, or sent by Finder),
decided from the path and the names of the files in it, before anything is read:

- ``run``: a folder with ``recipe.yaml`` (a run folder: the Monitor shows it);
- ``recipe``: a ``.yaml``/``.yml`` file (it fills the New-run wizard);
- ``model``: a folder with ``config.json`` (the wizard's Model step);
- ``data``: a dataset file of a format the readers know, or a folder of them, or a saved Hugging Face
  dataset (the wizard's Data step);
- ``unknown``: anything else, said in words by ``describe_unknown``.
"""

from __future__ import annotations

from pathlib import Path

from macfinetune.core.runs import RECIPE

RECIPE_SUFFIXES = (".yaml", ".yml")
DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".txt", ".md", ".markdown")  # what core.formats
#   reads (a test keeps them equal; importing core.formats here would slow the window's start)
UNREAD_DATA_SUFFIXES = (".parquet", ".arrow", ".xlsx", ".xls")  # datasets it names and refuses, saying why
_HF_DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json")
OPEN_FILTER = (f"Recipes and datasets (*{' *'.join((*RECIPE_SUFFIXES, *DATA_SUFFIXES))});;All files (*)")
DATA_FILTER = f"Datasets (*{' *'.join(DATA_SUFFIXES)});;All files (*)"


def open_kind(path: str | Path) -> str:
    """'run', 'recipe', 'model', 'data' or 'unknown' for ``path`` (see the module doc)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / RECIPE).is_file():
            return "run"
        if (path / "config.json").is_file():
            return "model"
        return "data" if _holds_data(path) else "unknown"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in RECIPE_SUFFIXES:
            return "recipe"
        if suffix in DATA_SUFFIXES + UNREAD_DATA_SUFFIXES:  # the data step says why an unread one is not read
            return "data"
    return "unknown"


def _holds_data(folder: Path) -> bool:
    names = [p for p in folder.iterdir() if p.is_file()]
    return any(p.name in _HF_DATASET_MARKERS or p.suffix.lower() in DATA_SUFFIXES for p in names)


def describe_unknown(path: str | Path) -> str:
    """Why ``path`` was not opened, and what would be."""
    path = Path(path)
    what = "does not exist" if not path.exists() else (
        "is a folder with no recipe.yaml, config.json or dataset files in it" if path.is_dir()
        else f"is a {path.suffix + ' file' if path.suffix else 'file without an extension'}, not a recipe or a dataset")
    return (f"{path} {what}. macfinetune opens run folders (Monitor), recipes (.yaml), model folders "
            f"(with config.json) and datasets ({', '.join(DATA_SUFFIXES)}, or a folder of them).")
