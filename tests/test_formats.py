"""Reading and converting every dataset format, with real files made here."""

import hashlib
import json
import types

import pytest

from macfinetune.core import dataset, formats
from macfinetune.core.formats import ColumnMapping
from macfinetune.core.problems import ProblemError

LONG = "the owl 🦉 sails " * 2000  # ~32k characters in one field
SYSTEM = "Tu es un pirate. Réponds brièvement — 用中文也可以."


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(path, rows):
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def problems_of(call, *args, **kwargs):
    with pytest.raises(ProblemError) as info:
        call(*args, **kwargs)
    return info.value.problems


def chat(*pairs, system=None):
    messages = [{"role": "system", "content": system}] if system else []
    for role, content in pairs:
        messages.append({"role": role, "content": content})
    return {"messages": messages}


# --- Alpaca -------------------------------------------------------------------------------------


ALPACA_ARRAY = """[
  {
    "instruction": "Give three tips for staying healthy.",
    "input": "",
    "output": "1. Eat well. 2. Move. 3. Sleep."
  },
  {"instruction": "Traduis en espagnol :", "input": "Bonjour le monde 🌍", "output": "Hola mundo"},

  {"instruction": "Summarise", "input": "LONG", "output": "An owl at sea.", "system": "SYSTEM"}
]
""".replace("LONG", LONG).replace("SYSTEM", SYSTEM)


def test_alpaca_json_array_keeps_the_line_of_each_object(tmp_path):
    data = formats.load_any(write(tmp_path / "alpaca.json", ALPACA_ARRAY))
    train = data.split("train")
    assert (data.format, data.mlx_format) == ("alpaca", "chat")
    assert [r.line for r in train.refs] == [2, 7, 9]
    assert str(train.refs[1]) == "alpaca.json row 2 (line 7)"
    assert train.rows[0] == chat(("user", "Give three tips for staying healthy."),
                                 ("assistant", "1. Eat well. 2. Move. 3. Sleep."))
    assert train.rows[1]["messages"][0]["content"] == "Traduis en espagnol :\n\nBonjour le monde 🌍"
    assert train.rows[2] == chat(("user", "Summarise\n\n" + LONG), ("assistant", "An owl at sea."), system=SYSTEM)


def test_alpaca_jsonl_with_history(tmp_path):
    row = {"instruction": "And now?", "input": "", "output": "Sleep.", "history": [["Hi", "Hello"], ["Why?", "Because."]]}
    data = formats.load_any(jsonl(tmp_path / "a.jsonl", [row]))
    assert data.split("train").rows[0] == chat(("user", "Hi"), ("assistant", "Hello"), ("user", "Why?"),
                                               ("assistant", "Because."), ("user", "And now?"), ("assistant", "Sleep."))


def test_alpaca_row_without_output_is_named(tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 3}]
    (p,) = problems_of(formats.load_any, jsonl(tmp_path / "a.jsonl", rows))
    assert (p.line, p.field) == (2, "output") and "must be text" in p.message


# --- ShareGPT -----------------------------------------------------------------------------------


def test_sharegpt_multi_turn_system_and_tool_calls(tmp_path):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    rows = [
        {"system": SYSTEM, "conversations": [{"from": "human", "value": "Bonjour"}, {"from": "gpt", "value": "Ahoy"},
                                             {"from": "human", "value": "Encore"}, {"from": "gpt", "value": "Arr"}]},
        {"tools": json.dumps(tools), "conversations": [
            {"from": "human", "value": "Weather in Brest?"},
            {"from": "function_call", "value": json.dumps({"name": "weather", "arguments": {"city": "Brest"}})},
            {"from": "observation", "value": "rain"},
            {"from": "gpt", "value": "Rain, matey."}]},
    ]
    data = formats.load_any(jsonl(tmp_path / "sg.jsonl", rows))
    first, second = data.split("train").rows
    assert data.format == "sharegpt" and data.mlx_format == "chat"
    assert first == chat(("user", "Bonjour"), ("assistant", "Ahoy"), ("user", "Encore"), ("assistant", "Arr"),
                         system=SYSTEM)
    assert second["tools"] == tools
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert second["messages"][1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": {"city": "Brest"}}


def test_sharegpt_unknown_speaker_names_line_and_value(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
            {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}]
    (p,) = problems_of(formats.load_any, jsonl(tmp_path / "sg.jsonl", rows))
    assert (p.line, p.field, p.value) == (2, "conversations[1].from", "robot")


# --- mlx-lm's own formats pass through unchanged --------------------------------------------------


@pytest.mark.parametrize(
    "rows, fmt, mlx",
    [
        ([chat(("user", "hi"), ("assistant", "yo"), system=SYSTEM)], "chat", "chat"),
        ([{"messages": chat(("user", "w?"), ("assistant", "sun"))["messages"],
           "tools": [{"type": "function", "function": {"name": "w"}}]}], "tools", "chat"),
        ([{"prompt": "Q " + LONG, "completion": "A"}], "completions", "completions"),
        ([{"text": "Once upon a time 🦉"}], "text", "text"),
    ],
)
def test_mlx_lm_formats_pass_through(tmp_path, rows, fmt, mlx):
    data = formats.load_any(jsonl(tmp_path / "t.jsonl", rows))
    assert (data.format, data.mlx_format) == (fmt, mlx)
    assert list(data.split("train").rows) == rows


@pytest.mark.parametrize(
    "content, line, expected",
    [
        ('{"text": "a"}\n{"text": }\n', 2, "not valid JSON"),
        ('[{"text": "a"},\n {"text": "b"}\n', 2, "not closed"),
        ('{"text": "a"}\n{"prompt": "p", "completion": "c"}\n', 2, "one file holds one format"),
        ('{"text": "a"}\n[1]\n', 2, "expected a JSON object"),
        ('{"text": 5}\n', 1, "'text' must be text, got a number"),
        ('{"prompt": "p", "chosen": null, "rejected": "r"}\n', 1, "'chosen' must be text or an assistant message, got null"),
        ('{"foo": 1}\n', 1, "unknown row format"),
        ('{"messages": [{"role": "user"}]}\n', 1, "has no content"),
        ('{"text": "  "}\n', 1, "empty"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', 2, "not UTF-8"),
    ],
)
def test_bad_files_name_the_line(tmp_path, content, line, expected):
    found = problems_of(formats.load_any, write(tmp_path / "t.jsonl", content))
    assert expected in found[0].message and found[0].line == line


# --- tables -------------------------------------------------------------------------------------


def test_csv_with_bom_quotes_and_multiline_cells(tmp_path):
    text = '\ufeffQuestion,Answer,System\n"What, exactly?","Line one\nline two",Be brief\nSecond?,Yes,\n'
    data = formats.load_any(write(tmp_path / "qa.csv", text))
    rows, refs = data.split("train").rows, data.split("train").refs
    assert data.format == "table" and [r.line for r in refs] == [2, 4]
    assert rows[0] == chat(("user", "What, exactly?"), ("assistant", "Line one\nline two"), system="Be brief")
    assert rows[1] == chat(("user", "Second?"), ("assistant", "Yes"))
    assert "prompt = column 'Question'" in data.notes[0]


def test_tsv_with_a_mapping_and_an_input_column(tmp_path):
    text = "task\tctx\tgold\nTranslate\tHello\tHola\n"
    mapping = formats.parse_mapping("prompt=task, input=ctx, completion=gold")
    data = formats.load_any(write(tmp_path / "t.tsv", text), mapping=mapping)
    assert data.split("train").rows[0] == chat(("user", "Translate\n\nHello"), ("assistant", "Hola"))


def test_extra_empty_fields_at_the_end_of_a_row_are_ignored(tmp_path):
    data = formats.load_any(write(tmp_path / "t.csv", "prompt,completion\nQ,A,,\nR,B\n"))
    assert data.split("train").rows == (chat(("user", "Q"), ("assistant", "A")), chat(("user", "R"), ("assistant", "B")))


def test_every_ragged_row_is_named_up_to_the_quote_that_never_closes(tmp_path):
    text = "prompt,completion\nQ,Arr, blue\nR,B\nonly one field\nS,\"C\n" + "T,D\n" * 3
    found = problems_of(formats.load_any, write(tmp_path / "t.csv", text))
    assert [(p.line, p.message.split(":")[0]) for p in found] == [
        (2, "3 fields, the header has 2"), (4, "1 field, the header has 2"), (5, "a quote opened here is never closed")]


def test_text_after_a_closing_quote_is_refused_not_guessed(tmp_path):
    (p,) = problems_of(formats.load_any, write(tmp_path / "t.csv", 'prompt,completion\nQ,"Arr" he said\n'))
    assert p.line == 2 and p.message.startswith("text follows the closing quote of a field")


def test_table_of_text(tmp_path):
    data = formats.load_any(write(tmp_path / "t.csv", "id,body\n1,First doc\n2,Second doc\n"),
                            mapping=ColumnMapping(text="body"))
    assert data.mlx_format == "text" and data.split("train").rows == ({"text": "First doc"}, {"text": "Second doc"})


@pytest.mark.parametrize(
    "mapping, expected",
    [(ColumnMapping(prompt="nope", completion="b"), "no column named 'nope'"),
     (None, "cannot tell which columns")],
)
def test_table_mapping_problems(tmp_path, mapping, expected):
    (p,) = problems_of(formats.load_any, write(tmp_path / "t.csv", "a,b\n1,2\n"), mapping=mapping)
    assert expected in p.message and p.line == 1


def test_parse_mapping_rejects_unknown_keys():
    (p,) = problems_of(formats.parse_mapping, "question=Q")
    assert p.field == "columns" and p.value == "question=Q"


# --- text files ---------------------------------------------------------------------------------


def test_folder_of_text_files_is_chunked_at_paragraphs(tmp_path):
    folder = tmp_path / "corpus"
    write(folder / "a.txt", "First paragraph.\n\nSecond paragraph.\n")
    write(folder / "sub" / "b.md", "# Title\n\n" + "\n\n".join(f"Paragraph {i} " + "x" * 40 for i in range(5)))
    write(folder / "empty.txt", "\n\n")
    write(folder / ".hidden" / "c.txt", "secret")
    data = formats.load_any(folder, chunk_chars=120)
    rows, refs = data.split("train").rows, data.split("train").refs
    assert data.format == "textfiles" and data.mlx_format == "text"
    assert rows[0] == {"text": "First paragraph.\n\nSecond paragraph."}
    assert all(len(r["text"]) <= 120 for r in rows) and not any("secret" in r["text"] for r in rows)
    assert [(r.file.rsplit("/", 1)[1], r.line) for r in refs[1:3]] == [("b.md", 1), ("b.md", 7)]  # Title, P0, P1 fit in 120 chars
    assert "".join(r["text"] for r in rows[1:]).count("Paragraph") == 5
    assert "skipped 1 empty files: empty.txt" in data.notes[0]


def test_chunk_text_cuts_long_paragraphs():
    assert formats.chunk_text("abcdefgh\n\nij", 3) == [(1, "abc"), (1, "def"), (1, "gh"), (3, "ij")]
    assert formats.chunk_text("short", None) == [(1, "short")]


# --- folders with splits ------------------------------------------------------------------------


def test_folder_with_train_and_validation_files(tmp_path):
    write(tmp_path / "train.json", ALPACA_ARRAY)
    jsonl(tmp_path / "validation.jsonl", [{"instruction": "v", "input": "", "output": "w"}])
    data = formats.load_any(tmp_path)
    assert [(s.name, len(s.rows)) for s in data.splits] == [("train", 3), ("valid", 1)]
    assert not data.valid_created


@pytest.mark.parametrize(
    "files, expected",
    [({"valid.jsonl": '{"text": "a"}\n'}, "no train file"),
     ({"train.jsonl": '{"text": "a"}\n', "train.json": '[{"text": "a"}]'}, "two files for the train split"),
     ({"train.jsonl": '{"text": "a"}\n', "valid.jsonl": '{"prompt": "p", "completion": "c"}\n'}, "one format"),
     ({"notes.pdf": "x"}, "no train file")],
)
def test_folder_problems(tmp_path, files, expected):
    for name, text in files.items():
        write(tmp_path / name, text)
    assert expected in problems_of(formats.load_any, tmp_path)[0].message


def test_missing_path_and_hub_names_without_a_loader(tmp_path):
    assert "dataset not found" in problems_of(formats.load_any, tmp_path / "nope.jsonl")[0].message
    assert "loader" in problems_of(formats.load_any, "someorg/somedata")[0].message


# --- Hugging Face datasets (the backend's loader) -----------------------------------------------


def test_saved_hugging_face_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    from macfinetune.backend.hfdata import load_hf_dataset

    rows = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]} for i in range(4)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "ds"))
    data = formats.load_any(tmp_path / "ds", load_hf=load_hf_dataset)
    assert data.format == "hf:sharegpt" and [s.name for s in data.splits] == ["train", "test"]
    assert data.split("test").rows[0] == chat(("user", "q0"), ("assistant", "a0"))
    assert str(data.split("train").refs[2]).endswith("[train] row 3")


def test_hugging_face_name_offline_fails_clearly():
    pytest.importorskip("datasets")
    from macfinetune.backend.hfdata import load_hf_dataset

    (p,) = problems_of(formats.load_any, "someorg/no-such-dataset", load_hf=load_hf_dataset)
    assert "offline" in p.message and p.value == "someorg/no-such-dataset"


def test_without_the_datasets_package(monkeypatch):
    import builtins

    from macfinetune.backend import hfdata

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    (p,) = problems_of(hfdata.load_hf_dataset, "org/x")
    assert "pip install datasets" in p.message


# --- for training -------------------------------------------------------------------------------


def test_load_dataset_files_is_a_drop_in(tmp_path):
    path = write(tmp_path / "alpaca.json", ALPACA_ARRAY)
    train, valid, fmt, source, _ = formats.load_dataset_files(path)
    assert (len(train), valid, fmt, source) == (3, [], "chat", str(path))


def test_mask_prompt_checks_name_rows(tmp_path):
    path = jsonl(tmp_path / "c.jsonl", [chat(("user", "a"), ("assistant", "b")), chat(("assistant", "alone"))])
    (p,) = problems_of(formats.load_dataset_files, path, mask_prompt=True)
    assert p.line == 2 and "rows 2 have a single message" in p.message
    (p,) = problems_of(formats.load_dataset_files, jsonl(tmp_path / "t.jsonl", [{"text": "a"}]), mask_prompt=True)
    assert p.field == "data.mask_prompt"


def test_valid_split_is_the_one_training_makes(tmp_path):
    rows = [{"text": f"row {i}"} for i in range(40)]
    data = formats.with_valid_split(formats.load_any(jsonl(tmp_path / "t.jsonl", rows)), 0.15, seed=7)
    expected_train, expected_valid = dataset.split_rows(rows, 0.15, 7)
    assert list(data.split("valid").rows) == expected_valid and list(data.split("train").rows) == expected_train
    assert data.valid_created and [r.line for r in data.split("valid").refs] == [
        int(r["text"].split()[1]) + 1 for r in expected_valid]


def test_prepare_writes_mlx_lm_files_and_leaves_the_source_alone(tmp_path):
    source = write(tmp_path / "alpaca.json", ALPACA_ARRAY)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    prepared = formats.prepare(formats.load_any(source), tmp_path / "out", valid_fraction=0.2, seed=1)
    assert [p.name for p in prepared.files] == ["train.jsonl", "valid.jsonl"] and prepared.rows == {"train": 2, "valid": 1}
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    assert json.loads((tmp_path / "out" / "source.json").read_text())["format"] == "alpaca"
    (p,) = problems_of(formats.prepare, formats.load_any(source), tmp_path / "out")
    assert p.field == "out"


# --- round trip through mlx-lm's own loader ------------------------------------------------------


def _all_formats(folder):
    tools = [{"type": "function", "function": {"name": "weather"}}]
    return {
        "alpaca.json": ALPACA_ARRAY,
        "sharegpt.jsonl": json.dumps({"conversations": [{"from": "system", "value": SYSTEM},
                                                        {"from": "human", "value": "héllo"},
                                                        {"from": "gpt", "value": "Ahoy 🦜"}]}) + "\n",
        "chat.jsonl": json.dumps(chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))) + "\n",
        "tools.jsonl": json.dumps({**chat(("user", "w?"), ("assistant", "sun")), "tools": tools}) + "\n",
        "completions.jsonl": json.dumps({"prompt": "p", "completion": "c"}) + "\n",
        "text.jsonl": json.dumps({"text": LONG}) + "\n",
        "table.csv": "instruction,output\nSay hi,Hi\n",
        "notes.md": "# Notes\n\nThe owl and the sea.\n",
    }


def test_every_format_round_trips_through_mlx_lm(tmp_path, tiny_model):
    from mlx_lm.tuner.datasets import load_local_dataset
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    for name, text in _all_formats(tmp_path).items():
        data = formats.load_any(write(tmp_path / "src" / name, text))
        out = tmp_path / "out" / name
        _write_splits(data, out)
        loaded = [d for d in load_local_dataset(out, tokenizer, types.SimpleNamespace(mask_prompt=False)) if d]
        rows = [d[i] for d in loaded for i in range(len(d))]
        assert sorted(map(json.dumps, rows)) == sorted(map(json.dumps, data.split("train").rows)), name
        assert all(d.process(d[i])[0] for d in loaded for i in range(len(d))), name


def _write_splits(data, out):
    """What training writes into a run folder: a valid split when there are rows enough."""
    if len(data.split("train").rows) > 1:
        data = formats.with_valid_split(data, 0.5, seed=0)
    out.mkdir(parents=True)
    for split in data.splits:
        dataset.write_jsonl(out / f"{split.name}.jsonl", list(split.rows))


def test_json_object_holding_the_rows(tmp_path):
    text = '{\n  "version": 2,\n  "data": [\n    {"prompt": "p", "completion": "c"},\n    {"prompt": "q",\n     "completion": "d"}\n  ]\n}\n'
    data = formats.load_any(write(tmp_path / "export.json", text))
    assert [r.line for r in data.split("train").refs] == [4, 5] and data.format == "completions"
    single = formats.load_any(write(tmp_path / "one.json", '{\n  "text": "a pretty-printed row"\n}\n'))
    assert single.split("train").rows == ({"text": "a pretty-printed row"},)


@pytest.mark.parametrize("extra", [{}, {"version": 2}])
def test_a_one_line_json_object_holding_the_rows(tmp_path, extra):
    rows = [{"prompt": "p", "completion": "c"}, {"prompt": "q", "completion": "d"}]
    path = write(tmp_path / "export.json", json.dumps({**extra, "data": rows}))  # json.dump's one line
    train = formats.load_any(path).split("train")
    assert list(train.rows) == rows and [str(r) for r in train.refs] == ["export.json row 1", "export.json row 2"]


@pytest.mark.parametrize("indent", [None, 2])
def test_a_row_of_a_known_format_is_a_row_even_with_a_list_under_data(tmp_path, indent):
    row = {"text": "a document", "data": [{"text": "not a row"}]}
    data = formats.load_any(write(tmp_path / "one.jsonl", json.dumps(row, indent=indent) + "\n"))
    assert data.split("train").rows == (row,)


def test_chat_roles_and_their_aliases_are_accepted(tmp_path):
    row = chat(("developer", "be brief"), ("user", "hi"), ("assistant", "calling"), ("tool", "42"), ("ipython", "x"),
               ("function", "y"), ("assistant", "ok"), system="a pirate")
    assert formats.load_any(jsonl(tmp_path / "c.jsonl", [row])).split("train").rows == (row,)


def test_a_missing_file_is_not_taken_for_a_hub_name(tmp_path):
    (p,) = problems_of(formats.load_any, "data/train.jsonl")
    assert "dataset not found" in p.message


def test_mask_prompt_needs_an_assistant_answer_last(tmp_path):
    rows = [chat(("user", "a"), ("assistant", "b")), chat(("assistant", "a"), ("user", "b"))]
    data = formats.load_any(write(tmp_path / "c.json", "[\n" + ",\n".join(map(json.dumps, rows)) + "\n]\n"))
    (p,) = problems_of(formats.check_trainable, data, mask_prompt=True)
    assert "rows 3 do not end with an assistant message" in p.message and p.line == 3


@pytest.mark.parametrize("layout, line", [("lines", 2), ("array", 1), ("one line", 1)])
def test_rows_over_a_megabyte_are_refused(tmp_path, layout, line):
    rows = [{"text": "short"}, {"text": "x" * 1_200_000}]
    text = {"lines": "".join(json.dumps(r) + "\n" for r in rows), "array": json.dumps(rows),
            "one line": json.dumps(rows[1]) + "\n"}[layout]
    (p,) = problems_of(formats.load_any, write(tmp_path / "big.jsonl", text))
    assert "a 1.2 MB row" in p.message and p.line == line


def test_a_folder_whose_train_file_is_parquet_is_refused_by_that_file(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"PAR1\x15\x04")
    with pytest.raises(ProblemError, match="train.parquet: parquet files are not read; convert to .jsonl"):
        formats.load_any(tmp_path)
