"""Hugging Face datasets: a hub dataset name or a folder written by ``Dataset.save_to_disk``.

Needs the optional ``datasets`` package. Returns plain rows per split for ``core.formats``,
which detects and converts them like any other rows. Offline, a dataset that is not cached
fails with a message saying so.
"""

from __future__ import annotations

from pathlib import Path

from macfinetune.core.problems import fail

INSTALL_HINT = "pip install datasets  (or: pip install 'macfinetune[datasets]')"


def load_hf_dataset(name: str) -> dict[str, list[dict]]:
    """{split name: rows} of a Hugging Face dataset; raises ProblemError with the reason."""
    datasets = _datasets_module(name)
    local = Path(name).expanduser()
    try:
        loaded = datasets.load_from_disk(str(local)) if local.is_dir() else datasets.load_dataset(name)
    except Exception as e:  # datasets raises many types: offline, not found, gated, bad files
        raise fail(f"could not load the Hugging Face dataset {name!r}: {dataset_reason(e)}", field="data.path",
                   value=name) from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded.to_list()}
    return {split: part.to_list() for split, part in loaded.items()}


def _datasets_module(name: str):
    try:
        import datasets
    except ImportError:
        raise fail(f"reading Hugging Face datasets needs the `datasets` package: {INSTALL_HINT}",
                   field="data.path", value=name) from None
    return datasets


_REASONS = (  # (text in the exception's type name or message, what to tell the user)
    ("OfflineModeIsEnabled", "offline (HF_HUB_OFFLINE is set) and the dataset is not in the local cache; connect "
                             "once to download it, or save it with Dataset.save_to_disk and pass that folder"),
    ("DatasetNotFound", "no such dataset on the hub (check the name; private or gated datasets need `hf auth login`)"),
    ("Couldn't reach", "huggingface.co cannot be reached and the dataset is not in the local cache"),
    ("FileNotFound", "the folder is not a saved dataset (Dataset.save_to_disk writes dataset_info.json and state.json)"),
)


def dataset_reason(error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    return next((reason for key, reason in _REASONS if key in text), text.splitlines()[0])
