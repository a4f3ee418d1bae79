"""What a dropped or opened path is (core.opening), from the path and its file names alone."""

import pytest

from macfinetune.core import opening


def make(tmp_path, *files: str):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    return tmp_path


@pytest.mark.parametrize(
    "files, target, expected",
    [(["run/recipe.yaml", "run/metrics.jsonl", "run/config.json"], "run", "run"),  # a run wins over its files
     (["m/config.json", "m/model.safetensors", "m/tokenizer.json"], "m", "model"),
     (["r.yaml"], "r.yaml", "recipe"), (["r.YML"], "r.YML", "recipe"),
     (["d/train.jsonl", "d/valid.jsonl"], "d", "data"), (["d/notes.md"], "d", "data"),
     (["d/dataset_dict.json"], "d", "data"), (["d/train/data.arrow", "d/dataset_info.json"], "d", "data"),
     (["t.jsonl"], "t.jsonl", "data"), (["t.CSV"], "t.CSV", "data"), (["t.parquet"], "t.parquet", "data"),
     (["x.exe"], "x.exe", "unknown"), (["empty/sub/x.bin"], "empty", "unknown"), ([], "missing", "unknown")],
)
def test_open_kind(tmp_path, files, target, expected):
    assert opening.open_kind(make(tmp_path, *files) / target) == expected


def test_unknown_paths_are_explained(tmp_path):
    (tmp_path / "x.exe").write_bytes(b"MZ")
    assert opening.describe_unknown(tmp_path / "x.exe").startswith(f"{tmp_path / 'x.exe'} is a .exe file, not a "
                                                                   "recipe or a dataset. macfinetune opens run")
    assert "does not exist" in opening.describe_unknown(tmp_path / "gone")
    assert "no recipe.yaml, config.json or dataset files" in opening.describe_unknown(tmp_path)


def test_the_open_dialog_filter_lists_every_kind_of_file():
    assert opening.OPEN_FILTER.startswith("Recipes and datasets (*.yaml *.yml *.jsonl *.json ")
    assert opening.OPEN_FILTER.endswith(";;All files (*)") and "*.md" in opening.DATA_FILTER
    assert "parquet" not in opening.OPEN_FILTER + opening.DATA_FILTER  # refused with a reason, not offered


def test_data_suffixes_are_the_readers():
    from macfinetune.core.formats.rows import _FILE_SUFFIXES

    assert sorted(opening.DATA_SUFFIXES + opening.UNREAD_DATA_SUFFIXES) == sorted(_FILE_SUFFIXES)
