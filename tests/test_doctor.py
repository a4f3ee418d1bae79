"""The dataset doctor: numbers checked against hand-computed ones, token counts against mlx-lm."""

import argparse
import json
import shutil
import types

import pytest

from macfinetune.cli import data as commands_data
from macfinetune.core import doctor, formats
from macfinetune.core.problems import ProblemError


def jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(*turns):
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


# --- statistics by hand -------------------------------------------------------------------------


def test_length_stats_by_hand():
    stats = doctor.length_stats([13, 3, 100, 5, 8])
    assert (stats.rows, stats.min, stats.median, stats.p95, stats.max, stats.total) == (5, 3, 8, 100, 100, 129)
    assert stats.mean == pytest.approx(25.8)
    # span 3..100 -> width 10 (98 / 10 bins, rounded up to 1-2-5), bins on multiples of 10
    bins = [(b.low, b.high, b.count) for b in stats.histogram]
    assert bins[:2] == [(0, 10, 3), (10, 20, 1)] and bins[-1] == (100, 110, 1) and len(bins) == 11
    assert sum(b.count for b in stats.histogram) == 5


@pytest.mark.parametrize("values, q, expected", [(list(range(1, 21)), 95, 19), ([7], 95, 7), ([1, 2], 50, 1)])
def test_nearest_rank_percentile(values, q, expected):
    assert doctor.percentile(values, q) == expected


@pytest.mark.parametrize("span, bins, width", [(1, 10, 1), (14, 10, 2), (98, 10, 10), (1001, 10, 200), (35, 10, 5)])
def test_nice_width(span, bins, width):
    assert doctor.nice_width(span, bins) == width


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    assert doctor.length_stats([1, 2, 3, 10]).median == 2.5


# --- a small dataset with known token counts ----------------------------------------------------


ROW_A, ROW_B = chat(("user", "a"), ("assistant", "b")), chat(("user", "c"), ("assistant", "d"))
ROW_LONG, ROW_NO_EOS = chat(("user", "a long prompt"), ("assistant", "x")), chat(("user", "e"), ("assistant", "f"))
COUNTS = {  # row -> (total, prompt, eos), as a tokenizer would say
    json.dumps(ROW_A): (10, 6, True),
    json.dumps(ROW_B): (25, 8, True),
    json.dumps(ROW_LONG): (40, 30, True),
    json.dumps(ROW_NO_EOS): (12, 5, False),
}


def fake_counter(rows):
    return [COUNTS[json.dumps(r)] for r in rows]


@pytest.fixture
def small(tmp_path):
    jsonl(tmp_path / "train.jsonl", [ROW_A, ROW_B, ROW_LONG, ROW_NO_EOS])
    jsonl(tmp_path / "valid.jsonl", [ROW_A])
    return formats.load_any(tmp_path)


def lines(report, check):
    finding = next((f for f in report.findings if f.check == check), None)
    return [(r.file.rsplit("/", 1)[1], r.line) for r in finding.rows] if finding else []


def test_token_numbers_by_hand(small):
    report = doctor.inspect(small, count_tokens=fake_counter, max_seq_length=20, mask_prompt=True)
    s = report.lengths  # lengths 10, 25, 40, 12 (train) and 10 (valid)
    assert (s.min, s.median, s.p95, s.max, s.total) == (10, 12, 40, 40, 97)
    assert s.mean == pytest.approx(19.4)
    assert report.truncation == doctor.Truncation(20, rows=2, tokens_lost=5 + 20, most_lost=20)
    # trained = min(total, 20) - prompt, at least 0: 4 + 12 + 0 + 7 + 4
    assert report.trained_tokens == 27
    assert lines(report, "truncated") == [("train.jsonl", 2), ("train.jsonl", 3)]
    assert lines(report, "nothing_trained") == [("train.jsonl", 3)]
    assert lines(report, "missing_eos") == [("train.jsonl", 4)]
    assert lines(report, "leakage") == [("valid.jsonl", 1)]
    assert not report.ok  # nothing_trained is an error
    assert [s.name for s in report.splits] == ["train", "valid"] and report.valid_fraction is None


def test_without_masking_every_token_up_to_the_limit_is_trained(small):
    report = doctor.inspect(small, count_tokens=fake_counter, max_seq_length=20, mask_prompt=False)
    assert report.trained_tokens == 10 + 20 + 20 + 12 + 10
    assert "only their prompt" in next(f for f in report.findings if f.check == "nothing_trained").message


def test_no_tokenizer_no_token_numbers(small):
    report = doctor.inspect(small)
    assert report.lengths is None and report.truncation is None and report.trained_tokens is None
    assert [f.check for f in report.findings] == ["leakage"]


def test_report_as_json_and_as_problems(small):
    report = doctor.inspect(small, count_tokens=fake_counter, max_seq_length=20)
    plain = json.loads(json.dumps(report.to_dict(rows_limit=1)))
    truncated = next(f for f in plain["findings"] if f["check"] == "truncated")
    assert truncated["count"] == 2 and truncated["rows"] == ["train.jsonl line 2"]
    assert plain["lengths"]["histogram"][0] == {"low": 10, "high": 15, "count": 3}
    problem = next(p for p in report.problems() if p.field == "truncated")
    assert problem.line == 2 and problem.file.endswith("train.jsonl") and "train.jsonl line 3" in problem.message


# --- checks without tokens ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, expected",
    [
        (chat(("system", "s"), ("user", "u"), ("assistant", "a"), ("user", "u"), ("assistant", "a")), None),
        ({"messages": [{"role": "user", "content": "w?"},
                       {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "w"}}]},
                       {"role": "tool", "content": "sun"}, {"role": "assistant", "content": "Sunny."}]}, None),
        (chat(("user", "u"), ("user", "u"), ("assistant", "a")), "message 2 is a user message after a user message"),
        (chat(("assistant", "hello"), ("user", "u"), ("assistant", "a")), "message 1 is a assistant message as the first"),
        (chat(("user", "u"), ("system", "s"), ("assistant", "a")), "message 2 is a system message after a user"),
        (chat(("user", "u"), ("assistant", "a"), ("user", "more?")), "the last message is a user message"),
        (chat(("human", "u"), ("assistant", "a")), "unknown role 'human'"),
        ({"prompt": "p", "completion": "c"}, None),
    ],
)
def test_role_order(row, expected):
    found = doctor.role_order(row)
    assert (found is None) if expected is None else expected in found


@pytest.mark.parametrize(
    "row, expected",
    [
        (chat(("user", "u"), ("assistant", "  \n")), "message 2 (assistant) is empty"),
        (chat(("system", ""), ("user", "u"), ("assistant", "a")), "message 1 (system) is empty"),
        ({"prompt": "p", "completion": ""}, "'completion' is empty"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant",
                                                                                      "content": "yo"}]}, None),
    ],
)
def test_empty_fields(row, expected):
    assert doctor.empty_field(row) == expected


def test_duplicates_leakage_and_the_created_split(tmp_path):
    rows = [chat(("user", f"question {i}"), ("assistant", f"answer {i}")) for i in range(20)]
    rows.append(chat(("user", "Question  3"), ("assistant", "ANSWER 3")))  # line 21: row 4 again, case and spaces
    rows.append(chat(("user", "question 5"), ("assistant", "answer\n5")))  # line 22: row 6 again
    data = formats.load_any(jsonl(tmp_path / "chat.jsonl", rows))
    report = doctor.inspect(data, valid_fraction=0.2, seed=3)
    train, valid = formats.with_valid_split(data, 0.2, 3).split("train"), formats.with_valid_split(data, 0.2, 3).split("valid")
    assert [(s.name, s.rows, s.created) for s in report.splits] == [("train", 18, False), ("valid", 4, True)]
    assert (report.valid_fraction, report.seed) == (0.2, 3)
    copies = {4: 21, 6: 22}
    expected_dupes, expected_leaks = [], []
    for original, copy in copies.items():
        train_lines = [r.line for r in train.refs]
        if original in train_lines and copy in train_lines:
            expected_dupes.append(copy)
        elif (original in train_lines) != (copy in train_lines):
            expected_leaks.append(copy if original in train_lines else original)
    assert [line for _, line in lines(report, "duplicate")] == expected_dupes
    assert sorted(line for _, line in lines(report, "leakage")) == sorted(expected_leaks)
    assert len(valid.rows) == 4


def test_bad_valid_fraction(small, tmp_path):
    data = formats.load_any(jsonl(tmp_path / "x.jsonl", [ROW_A, ROW_B]))
    with pytest.raises(ProblemError, match="between 0 and 1"):
        doctor.inspect(data, valid_fraction=1.5)


# --- real token counts: the same numbers as mlx-lm's datasets -------------------------------------


TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
REAL_ROWS = {
    "chat": [chat(("system", "Tu es un pirate 🏴‍☠️"), ("user", "héllo owl?"), ("assistant", " Arr, the sea")),
             chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d\n\n")),
             {**chat(("user", "weather?"), ("assistant", "sunny")), "tools": TOOLS},
             chat(("user", "the owl " * 300), ("assistant", "long " * 200))],
    "completions": [{"prompt": "what owl", "completion": "the owl"}, {"prompt": "", "completion": "x\n"}],
    "text": [{"text": "the owl flies"}, {"text": "x" * 50}, {"text": "fin<|im_end|>"}],
}


@pytest.mark.parametrize("fmt", sorted(REAL_ROWS))
def test_token_counts_equal_mlx_lm(tiny_model, fmt):
    from mlx_lm.tuner.datasets import create_dataset

    from macfinetune.backend import tokens

    tokenizer = tokens.load_tokenizer(tiny_model)
    rows = REAL_ROWS[fmt]
    counts = tokens.count_tokens(rows, tokenizer, batch_size=3)
    plain = create_dataset(rows, tokenizer, types.SimpleNamespace(mask_prompt=False))
    assert [c.total for c in counts] == [len(plain.process(plain[i])[0]) for i in range(len(rows))]
    if fmt != "text":
        masked = create_dataset(rows, tokenizer, types.SimpleNamespace(mask_prompt=True))
        assert [c.prompt for c in counts] == [masked.process(masked[i])[1] for i in range(len(rows))]
    assert all(c.eos and c.error is None for c in counts)


def test_prompt_lengths_without_the_shortcut_are_the_same(tiny_model):
    from macfinetune.backend import tokens

    tokenizer = tokens.load_tokenizer(tiny_model)
    rows = REAL_ROWS["chat"] + [chat(("user", "only a question"))]
    slow = tokens._Encoder(tokenizer)
    slow.specials = {}
    assert tokens._encode_batch(tokens._render_batch(rows, tokenizer), tokenizer, slow) == tokens.count_tokens(
        rows, tokenizer)


def _model_with_template(tiny_model, tmp_path, template):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


def test_missing_eos_and_template_errors_name_rows(tiny_model, tmp_path):
    from macfinetune.backend.tokens import token_counter

    template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
                "{% endif %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}assistant: {% endif %}")
    model = _model_with_template(tiny_model, tmp_path, template)
    rows = [chat(("user", "a"), ("assistant", "b")), chat(("system", "s"), ("user", "a"), ("assistant", "b")),
            chat(("user", "c"), ("assistant", "d"))]
    data = formats.load_any(jsonl(tmp_path / "d" / "train.jsonl", rows))
    report = doctor.inspect(data, count_tokens=token_counter(model), valid_fraction=0.34, seed=0)
    assert lines(report, "template_error") == [("train.jsonl", 2)]
    assert "no system role" in next(f for f in report.findings if f.check == "template_error").details[0]
    assert sorted(lines(report, "missing_eos")) == [("train.jsonl", 1), ("train.jsonl", 3)]
    assert report.lengths.rows == 2


def test_token_counter_for_a_repo_offline_fails_clearly():
    from macfinetune.backend.tokens import token_counter

    with pytest.raises(ProblemError, match="offline"):
        token_counter("someorg/not-cached-model")


# --- the command line ---------------------------------------------------------------------------


def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="macfinetune")
    commands_data.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return {"data": commands_data.cmd_data, "models": commands_data.cmd_models}[args.command](args)


def test_cli_inspect_json(small, tiny_model, capsys):
    assert run_cli("data", "inspect", small.source, "--model", str(tiny_model), "--max-seq-length", "64",
                   "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "chat" and report["lengths"]["rows"] == 5
    assert [f["check"] for f in report["findings"]] == ["leakage"]


def test_cli_inspect_text_and_prepare(tmp_path, capsys):
    source = tmp_path / "qa.csv"
    source.write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(10)) + "q1,a1\n", encoding="utf-8")
    assert run_cli("data", "inspect", str(source)) == 0
    out = capsys.readouterr().out
    assert "CSV/TSV table -> mlx-lm chat" in out and "train 10, valid 1 (cut from train: 10%, seed 0)" in out  # round(11 * 0.1)
    assert "qa.csv line 12: repeats qa.csv line 3" in out
    assert "pass --model" in out
    assert run_cli("data", "prepare", str(source), "--out", str(tmp_path / "out"), "--seed", "2") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["source.json", "train.jsonl", "valid.jsonl"]
    with pytest.raises(ProblemError, match="no column named"):
        run_cli("data", "inspect", str(source), "--columns", "prompt=nope,completion=answer")
