import json
import os

import pytest

from macfinetune.core import dataset, runs
from macfinetune.core.events import CheckpointSaved, TrainReport, ValReport
from macfinetune.core.problems import ProblemError
from macfinetune.core.sampling import parse_adapter_spec


def write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


CHAT = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'


def problems(path, **kw):
    with pytest.raises(ProblemError) as info:
        dataset.read_jsonl(path, **kw)
    return info.value.problems


def test_bad_jsonl_line_is_named(tmp_path):
    (p,) = problems(write(tmp_path / "t.jsonl", CHAT + CHAT + '{"messages": [}\n'))
    assert p.line == 3 and p.file.endswith("t.jsonl") and "not valid JSON" in p.message


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "empty"),
        ("[" + CHAT.strip() + "]", "JSON array"),
        (CHAT + '{"text": "x"}\n', "one file holds one format"),
        (CHAT + "[1, 2]\n", "expected a JSON object"),
        ('{"foo": 1}\n', "unknown row format"),
        ('{"messages": []}\n', "non-empty list"),
        (b'{"text": "caf\xe9"}\n', "not UTF-8"),
    ],
)
def test_bad_files(tmp_path, content, expected):
    found = problems(write(tmp_path / "t.jsonl", content))
    assert expected in found[0].message


def test_split_is_seeded_and_disjoint():
    rows = [{"text": str(i)} for i in range(50)]
    train, valid = dataset.split_rows(rows, 0.1, seed=3)
    assert len(valid) == 5 and len(train) == 45
    assert dataset.split_rows(rows, 0.1, seed=3) == (train, valid)
    assert not {r["text"] for r in train} & {r["text"] for r in valid}


def test_metrics_log_lines_and_torn_last_line(tmp_path):
    log = runs.MetricsLog(tmp_path)
    log.write(TrainReport(10, 100, 2.5, 1e-5, 3.0, 900.0, 1000, 0.5))
    log.write(ValReport(10, 2.4, 0.3))
    log.close()
    with open(tmp_path / runs.METRICS, "a") as f:
        f.write('{"event": "train", "itera')  # a crash mid-line
    records = runs.read_metrics(tmp_path)
    assert [r["event"] for r in records] == ["train", "val"]
    train = records[0]
    for key in ("iteration", "train_loss", "learning_rate", "tokens_per_second", "iterations_per_second",
                "trained_tokens", "peak_memory_gb"):
        assert key in train
    assert records[1]["val_loss"] == 2.4


def _fake_run(tmp_path, losses):
    adapters = tmp_path / runs.ADAPTERS
    adapters.mkdir(parents=True)
    (adapters / runs.ADAPTER_CONFIG).write_text("{}")
    log = runs.MetricsLog(tmp_path)
    for it, loss in losses.items():
        (adapters / runs.checkpoint_name(it)).write_bytes(b"x")
        log.write(CheckpointSaved(it, str(adapters / runs.checkpoint_name(it)), loss, False))
    log.close()
    return tmp_path


def test_resolve_best_last_and_number(tmp_path):
    run = _fake_run(tmp_path, {10: 2.0, 20: 1.5, 30: 1.7})
    assert runs.resolve_checkpoint(run, "best")[1] == 20
    assert runs.resolve_checkpoint(run, "last")[1] == 30
    assert runs.resolve_checkpoint(run, "10")[1] == 10
    with pytest.raises(ProblemError, match="there is no checkpoint 15; available: 10, 20, 30"):
        runs.resolve_checkpoint(run, "15")
    with pytest.raises(ProblemError, match="best, last or an iteration"):
        runs.resolve_checkpoint(run, "newest")


@pytest.mark.parametrize("which", ["best", "last", "4"])
def test_a_run_that_saved_nothing_says_so_whatever_checkpoint_is_asked(tmp_path, which):
    run = _fake_run(tmp_path, {})
    with pytest.raises(ProblemError, match="no adapter weights were saved here: the run stopped or failed before"):
        runs.resolve_checkpoint(run, which)


def test_dead_running_run_reads_as_interrupted(tmp_path):
    status = runs.new_status("m", "lora", 100)
    runs.write_status(tmp_path, status)
    assert runs.read_status(tmp_path).state == "running"
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    runs.write_status(tmp_path, runs.RunStatus(**{**status.__dict__, "pid": pid}))
    assert runs.read_status(tmp_path).state == "interrupted"


def test_existing_output_folder_is_a_problem(tmp_path):
    (p,) = runs.check_new_dir(tmp_path)
    assert "already exists" in p.message
    assert runs.check_new_dir(tmp_path / "new" / "deeper") == []


def test_adapter_spec_parsing(tmp_path):
    assert parse_adapter_spec(f"{tmp_path}:last") == (tmp_path, "last")
    assert parse_adapter_spec(f"{tmp_path}:200") == (tmp_path, "200")
    assert parse_adapter_spec(str(tmp_path)) == (tmp_path, "best")


def test_status_json_is_plain_json(tmp_path):
    runs.write_status(tmp_path, runs.new_status("m", "lora", 5))
    assert json.loads((tmp_path / runs.STATUS).read_text())["state"] == "running"
