"""The bad-input catalogue: every entry gets one clear message, exit code 2, no traceback,
no run folder, and the user's files are left exactly as they were."""

import hashlib
import json
import shutil

import pytest
from conftest import SAMPLE_DATA

from macfinetune import cli

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr!"}]}


def rows(n, row=CHAT):
    return "".join(json.dumps(row) + "\n" for _ in range(n))


def data_file(tmp_path, content):
    name, content = content if isinstance(content, tuple) else ("user-data.jsonl", content)
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


PC = "".join(json.dumps({"prompt": "q", "completion": "a"}) + "\n" for _ in range(3))
USR = {"messages": [{"role": "usr", "content": "hi"}, {"role": "assistant", "content": "Arr!"}]}

# name -> (file content, or (file name, content), or None for the sample data; extra CLI args; expected words)
CATALOGUE = {
    "malformed JSONL": (rows(3) + '{"messages": [\n', [], "line 4: not valid JSON"),
    "JSON array not closed": ("[" + json.dumps(CHAT) + ",\n" + json.dumps(CHAT) + "\n", [],
                              "line 2: not valid JSON: the array is not closed"),
    "mixed formats": (rows(2) + '{"text": "plain"}\n', [], "line 3: this row is text but the first row is chat"),
    "empty row object": (rows(2) + "{}\n", [], "line 3: 'messages' is missing (the first row has messages)"),
    "a key the first row has is missing": (PC + '{"prompt": "q"}\n', [],
                                           "line 4: 'completion' is missing (the first row has prompt and completion)"),
    "a null row": (rows(2) + "null\n", [], "line 3: expected a JSON object, got null"),
    "an array row": (rows(2) + "[1, 2]\n", [], "line 3: expected a JSON object, got an array"),
    "an unknown chat role": (rows(2) + json.dumps(USR) + "\n", [],
                             "line 3 (messages[0].role): message 1 has the unknown role 'usr'; the roles are system, "
                             "user, assistant, tool (or developer, ipython, function)"),
    "a row nested too deeply": (rows(2) + '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", [],
                                "line 3: nested too deeply to read"),
    "a 5,001-digit number": (rows(2) + '{"text": 1' + "0" * 5000 + "}\n", [], "line 3: a number with 5001 digits"),
    "a parquet file": (("table.parquet", b"PAR1\x15\x04\x15\x90\x01"), [],
                       "table.parquet: parquet files are not read; convert to .jsonl, .json, .csv or .tsv"),
    "CSV row with an unquoted comma": (("ragged.csv", "prompt,completion\nWhat is the sky?,Arr, it be blue!\nQ,A\n"), [],
                                       'ragged.csv line 2: 3 fields, the header has 2: quote a field that holds a '
                                       'comma ("Arr, it be blue!")'),
    "CSV row with too few fields": (("short.csv", "prompt,completion\nQ,A\nonly one field\nQ,A\n"), [],
                                    "short.csv line 3: 1 field, the header has 2"),
    "TSV row with a tab in a field": (("t.tsv", "prompt\tcompletion\nQ\tA\tB\n"), [],
                                      't.tsv line 2: 3 fields, the header has 2: quote a field that holds a tab'),
    "CSV quote never closed": (("quote.csv", 'prompt,completion\nQ,A\n"never closed,x\nQ,A\nQ,A\n'), [],
                               "quote.csv line 3: a quote opened here is never closed: the rest of the file would "
                               "be one field"),
    "no assistant turn with masking": (
        rows(3) + json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n",
        ["--set", "mask_prompt=true"], "rows 4 have a single message"),
    "last turn not the assistant's with masking": (
        rows(3) + json.dumps({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]})
        + "\n", ["--set", "mask_prompt=true"], "do not end with an assistant message"),
    "non-UTF-8 bytes": (rows(2).encode() + b'{"text": "caf\xe9"}\n', [], "line 3: not UTF-8"),
    "a 10 MB single line": (json.dumps({"text": "x" * 10_000_000}) + "\n", [], "a 10.0 MB row"),
    "empty file": ("", [], "the file is empty"),
    "fewer rows than the batch size": (rows(3), ["--set", "batch_size=8"], "fewer than training.batch_size = 8"),
    "a row the chat template cannot render (content parts)": (
        rows(12) + json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                            {"role": "assistant", "content": "Arr!"}]}) + "\n",
        [], "line 13: the model's chat template cannot render this row (TypeError"),
    "a tool call without content the chat template cannot render": (
        rows(11) + json.dumps({"messages": [
            {"role": "user", "content": "weather in Oslo"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                                   "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "content": "sunny", "name": "get_weather"},
            {"role": "assistant", "content": "It is sunny"}]}) + "\n" + rows(1),
        [], "line 12: the model's chat template cannot render this row"),
    "recipe key typo": (None, ["--set", "trainig.batch_size=2"], "unknown key"),
    "unknown optimizer": (None, ["--set", "optimizer=lion"], "'lion' is not one of adam, adamw, sgd, adafactor"),
    "negative learning rate": (None, ["--set", "learning_rate=-1e-4"], "out of range"),
    "more layers than the model has": (None, ["--set", "num_layers=64"], "the model has 2 layers"),
}


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_catalogue(name, tiny_model, tmp_path, capsys):
    content, extra, expected = CATALOGUE[name]
    data = SAMPLE_DATA if content is None else data_file(tmp_path, content)
    before = hashlib.sha256(data.read_bytes()).hexdigest() if data.is_file() else None
    code = cli.main(["train", "demo-tiny-lora", "--model", str(tiny_model), "--data", str(data),
                     "--out", str(tmp_path / "run"), "--set", "mask_prompt=false", *extra])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert all(line.startswith("error: ") for line in err.splitlines())  # messages only, nothing else
    assert not (tmp_path / "run").exists()
    if before:
        assert hashlib.sha256(data.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("tokenizer", "has no tokenizer"),
        ("weights", "has no .safetensors weights"),
        ("pickle", "pickle weights are refused"),
        ("remote-code tokenizer", "never runs code from a model repository"),
        ("remote-code model", "ships its own model code (auto_map)"),
    ],
)
def test_broken_models(breakage, expected, tiny_model, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    if breakage in ("tokenizer", "weights", "pickle"):
        for f in model.glob("tokenizer*" if breakage == "tokenizer" else "*.safetensors"):
            f.unlink()
    if breakage == "pickle":
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04")
    if breakage == "remote-code tokenizer":
        config = json.loads((model / "tokenizer_config.json").read_text())
        (model / "tokenizer_config.json").write_text(json.dumps({**config, "auto_map": {"AutoTokenizer": "x.Tok"}}))
    if breakage == "remote-code model":
        config = json.loads((model / "config.json").read_text())
        config.update(model_type="custom_thing", auto_map={"AutoModelForCausalLM": "modeling_x.X"})
        (model / "config.json").write_text(json.dumps(config))
    code = cli.main(["train", "demo-tiny-lora", "--model", str(model), "--data", str(SAMPLE_DATA),
                     "--out", str(tmp_path / "run")])
    _, err = capsys.readouterr()
    assert code == 2 and expected in err and "Traceback" not in err
    assert all(line.startswith("error: ") for line in err.splitlines())
    assert not (tmp_path / "run").exists()


def test_quantized_model_with_full_fine_tuning(tiny_model_q4, tmp_path, capsys):
    code = cli.main(["train", "demo-tiny-lora", "--model", str(tiny_model_q4), "--data", str(SAMPLE_DATA),
                     "--out", str(tmp_path / "run"), "--set", "method.type=full"])
    _, err = capsys.readouterr()
    assert code == 2 and "full fine-tuning needs full-precision weights" in err
