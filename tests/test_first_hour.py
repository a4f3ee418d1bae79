"""What a new user hits in the first hour (issue 18): each test reproduces one report."""

import json

import pytest
from conftest import run_cli

from macfinetune import cli
from macfinetune.core import catalog, paths
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import Recipe, apply_overrides, parse_recipe

# --- 1. recipe names with a dot ------------------------------------------------------------


@pytest.mark.parametrize("name", ["qwen3-1.7b-full", "tinyllama-1.1b-lora"])
def test_shipped_recipe_with_a_dot_resolves_by_name(name):
    assert catalog.recipe_path(name) == paths.shipped("recipes", f"{name}.yaml")


def test_saved_user_recipe_with_a_dot_resolves_by_name():
    target = paths.user_recipes_home() / "my.v2-recipe.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("name: my.v2-recipe\n")
    assert catalog.recipe_path("my.v2-recipe") == target


def test_unknown_recipe_name_suggests_the_closest_and_the_recipes_command(capsys):
    code, _, err = run_cli(capsys, "train", "qwen3-1.7b-ful", "--data", "x.jsonl")
    assert code == 2 and "qwen3-1.7b-full" in err and "macfinetune recipes" in err


def test_a_yaml_path_that_does_not_exist_is_still_a_missing_file(capsys):
    code, _, err = run_cli(capsys, "train", "missing.yml")
    assert code == 2 and "recipe file not found" in err


# --- 8. iterations and epochs -----------------------------------------------------------------


def test_iterations_and_epochs_in_a_recipe_is_an_error_naming_both():
    with pytest.raises(ProblemError) as info:
        parse_recipe("training:\n  iterations: 100\n  epochs: 2\n")
    assert "training.iterations" in str(info.value) and "training.epochs" in str(info.value)


def test_iterations_and_epochs_on_the_command_line_is_an_error_naming_both():
    with pytest.raises(ProblemError) as info:
        apply_overrides(Recipe(), ["iterations=100", "epochs=2"])
    assert "training.iterations" in str(info.value) and "training.epochs" in str(info.value)


def test_one_of_iterations_or_epochs_on_the_command_line_replaces_the_recipe_s():
    assert apply_overrides(Recipe(), ["epochs=2"]).training.iterations is None
    assert apply_overrides(apply_overrides(Recipe(), ["epochs=2"]), ["iterations=5"]).training.epochs is None


# --- 9. rows of a one-line JSON array ----------------------------------------------------------


def _leak_finding(tmp_path, text):
    from macfinetune.core import doctor, formats

    path = tmp_path / "train.json"
    path.write_text(text)
    report = doctor.inspect(formats.load_any(path), valid_fraction=0.2)
    return next(f for f in report.findings if f.check == "leakage")  # row 3 is the one held out


def test_findings_in_a_one_line_json_array_name_the_row(tmp_path):
    rows = ['{"text": "a"}', '{"text": "b"}', '{"text": "a"}', '{"text": "c"}', '{"text": "d"}']
    finding = _leak_finding(tmp_path, "[" + ", ".join(rows) + "]")
    assert [str(r) for r in finding.rows] == ["train.json row 3"]
    assert "train.json row 3: valid row is also in train: train.json row 1" in finding.details[0]


def test_findings_in_a_pretty_json_array_give_row_and_line(tmp_path):
    rows = ['{"text": "a"}', '{"text": "b"}', '{\n  "text": "a"\n}', '{"text": "c"}', '{"text": "d"}']
    finding = _leak_finding(tmp_path, "[\n" + ",\n".join(rows) + "\n]\n")
    assert [str(r) for r in finding.rows] == ["train.json row 3 (line 4)"]


def test_conversion_problem_in_a_one_line_array_names_the_row(tmp_path):
    from macfinetune.core import formats

    path = tmp_path / "train.json"
    path.write_text('[{"text": "a"}, {"text": "b"}, {"text": 5}]')
    with pytest.raises(ProblemError) as info:
        formats.load_any(path)
    assert "row 3" in str(info.value) and "line 1" not in str(info.value)


# --- 13. smaller things --------------------------------------------------------------------------


@pytest.mark.parametrize("name, text", [("t.jsonl", '{"text": "a}\n'), ("t.json", '[{"text": "a}]')])
def test_json_error_says_at_column_once(tmp_path, name, text):
    from macfinetune.core import formats

    (tmp_path / name).write_text(text)
    with pytest.raises(ProblemError) as info:
        formats.load_any(tmp_path / name)
    assert "at column" in str(info.value) and "at at" not in str(info.value)


# --- 7. runs made anywhere ---------------------------------------------------------------------


def _fake_run(folder, iteration=3):
    from macfinetune.core import runs

    folder.mkdir(parents=True)
    (folder / runs.RECIPE).write_text("name: x\n")
    runs.write_status(folder, runs.new_status("m", "lora", 10))
    return folder


def test_runs_lists_a_run_made_with_out_and_forgets_deleted_ones(capsys, tmp_path, monkeypatch):
    import shutil

    from macfinetune.core import run_index

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    kept, gone = _fake_run(tmp_path / "elsewhere" / "kept"), _fake_run(tmp_path / "elsewhere" / "gone")
    run_index.remember(kept)
    run_index.remember(gone)
    shutil.rmtree(gone)
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and str(kept) in out and str(gone) not in out
    assert "1 run (0 in" in out and "1 elsewhere" in out and "1 runs" not in out
    code, out, _ = run_cli(capsys, "runs", "--json")  # for scripts: full paths and status.json's fields
    listed = json.loads(out)
    assert code == 0 and [r["path"] for r in listed] == [str(kept)]
    assert listed[0]["state"] == "running"  # new_status: this (live) process trains it
    assert listed[0]["total_iterations"] == 10 and listed[0]["method"] == "lora"


def test_a_damaged_index_keeps_the_runs_still_named_in_it(tmp_path, monkeypatch):
    """An index that lost its tail (or was edited by hand) keeps every whole path in it; the next run is added."""
    from macfinetune.core import run_index

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    old = _fake_run(tmp_path / "old").resolve()
    paths.runs_index_file().parent.mkdir(parents=True)
    paths.runs_index_file().write_text(f'[\n "{old}",\n "/half')
    assert run_index.remembered() == [old]
    run_index.remember(_fake_run(tmp_path / "r"))
    assert run_index.remembered() == [old, (tmp_path / "r").resolve()]


def test_runs_in_a_folder(capsys, tmp_path):
    _fake_run(tmp_path / "mine" / "a")
    _fake_run(tmp_path / "mine" / "b")
    code, out, _ = run_cli(capsys, "runs", "--in", tmp_path / "mine")
    assert code == 0 and "\na " in out and "\nb " in out and "2 runs in" in out


def test_training_remembers_its_run(tmp_path, monkeypatch, tiny_model):
    from conftest import fast_recipe

    from macfinetune.backend.training import train_run
    from macfinetune.core import run_index

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    result = train_run(fast_recipe(tiny_model, "iterations=1", "save_every=1", "eval_every=1"), tmp_path / "out",
                       lambda e: None)
    assert result.state == "finished" and run_index.remembered() == [(tmp_path / "out").resolve()]


# --- 12. the demo's model ----------------------------------------------------------------------


def test_demo_model_is_built_once_into_the_models_folder(tmp_path, monkeypatch):
    from macfinetune.backend import demo, hub, tinymodel

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    built = []
    monkeypatch.setattr(tinymodel, "build_demo_model", lambda out: built.append(out) or _fake_model(out))
    first = demo._demo_model(lambda e: None, tinymodel)
    again = demo._demo_model(lambda e: None, tinymodel)
    assert first == again == paths.demo_model_dir() and len(built) == 1
    listed = hub.local_models()
    assert [e.name for e in listed if e.source == "macfinetune"] == ["macfinetune-demo-tiny"]


def _fake_model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_demo_lands_in_the_demo_area_by_default(capsys, monkeypatch):
    import types

    from macfinetune.backend import demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda out, *a: seen.append(out) or types.SimpleNamespace(state="failed",
                                                                                                  run_dir=out))
    assert cli.main(["demo"]) == 1
    assert seen[0].parent == paths.demo_home() and not seen[0].is_relative_to(paths.runs_home())


# --- 11 and 13: fuse and generate --------------------------------------------------------------


def test_fuse_gguf_prints_only_the_final_path(trained_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, "fuse", trained_run, "--checkpoint", "last", "--gguf", "--out", tmp_path / "g")
    assert code == 0 and f"gguf: {tmp_path / 'g' / 'model.gguf'}" in out
    assert ".partial-" not in out + err and "Converted GGUF" not in out + err


def test_generate_compare_on_a_fused_model_uses_its_recorded_base(trained_run, tmp_path, capsys):
    from macfinetune.backend import fusing, generation
    from macfinetune.core.sampling import Sampling

    fused = fusing.fuse(trained_run, "last", tmp_path / "fused").out_dir
    greedy = Sampling(max_tokens=8, temperature=0.0)
    base, tuned = generation.run_generate(fused, None, "Hello?", greedy, compare=True)
    (with_adapter,) = generation.run_generate(None, (trained_run, "last"), "Hello?", greedy)
    (plain_base,) = generation.run_generate(generation.fused_base_of(fused), None, "Hello?", greedy)
    assert (base.source, tuned.source) == ("base", "tuned")
    assert tuned.text == with_adapter.text and base.text == plain_base.text
    code, out, err = run_cli(capsys, "generate", "--model", fused, "--compare", "--prompt", "Hi", "--max-tokens", "4")
    assert code == 0 and "--- base ---" in out and "--- tuned ---" in out


def test_masking_text_data_says_how_to_turn_it_off(tmp_path):
    from macfinetune.core import formats

    (tmp_path / "notes.md").write_text("Some notes.\n")
    with pytest.raises(ProblemError) as info:
        formats.load_dataset_files(tmp_path / "notes.md", mask_prompt=True)
    assert "--set mask_prompt=false" in str(info.value)


def test_train_help_lists_the_data_formats(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for word in (".jsonl", ".json", "Alpaca", "ShareGPT", ".csv", ".tsv", ".txt", ".md", "Hugging Face"):
        assert word in text


def test_recipes_table_columns_line_up(capsys):
    code, out, _ = run_cli(capsys, "recipes", "--memory-gb", "24")
    lines = out.splitlines()[1:]
    header = lines[0]
    for title in ("METHOD", "HERE", "SEED SAYS", "MODEL"):
        column = header.index(title)
        assert all(line[column - 2 : column] == "  " for line in lines[1:] if len(line) > column), title


# --- 4. long documents are chunked, and mlx-lm prints nothing of its own ----------------------

WORDS = "the owl sails over the quiet sea at night and sings to the moon about fish".split()


def _document(n_words: int) -> str:
    words = [WORDS[i % len(WORDS)] + ("." if i % 9 == 8 else "") for i in range(n_words)]
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return "# Notes\n\n" + "\n".join(lines) + "\n"


def _fake_encode(text: str) -> list:
    return [0] + text.split()  # a BOS, then one token per word


def test_chunk_by_tokens_fits_every_chunk_and_keeps_every_word():
    from macfinetune.core.formats import TokenChunks, chunk_by_tokens

    text = _document(500)
    chunks = chunk_by_tokens(text, TokenChunks(_fake_encode, 32))
    assert all(len(_fake_encode(c)) <= 31 for _, c in chunks)  # room for mlx-lm's EOS
    assert " ".join(c for _, c in chunks).split() == text.split()
    assert len(chunks) == -(-len(text.split()) // 30) and chunks[1][0] == text.count("\n", 0, text.index(chunks[1][1])) + 1


def test_chunk_overlap_repeats_the_end_of_the_previous_chunk():
    from macfinetune.core.formats import TokenChunks, chunk_by_tokens

    chunks = [c.split() for _, c in chunk_by_tokens(_document(300), TokenChunks(_fake_encode, 32, overlap=8))]
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after[:7] == before[-7:]  # 8 tokens with the BOS: 7 words


def test_chunk_overlap_must_leave_room_for_new_text():
    with pytest.raises(ProblemError, match="chunk_overlap must be less than half"):
        apply_overrides(Recipe(), ["max_seq_length=64", "chunk_overlap=32"])


def _notes(folder, n_docs=3, n_words=600):
    folder.mkdir()
    for i in range(n_docs):
        (folder / f"note{i}.md").write_text(_document(n_words))
    return folder


def test_training_on_long_documents_chunks_them_and_says_how_many(capfd, tmp_path, tiny_model):
    from macfinetune.backend.tokens import load_tokenizer

    notes = _notes(tmp_path / "notes")
    code = cli.main(["train", "demo-tiny-lora", "--model", str(tiny_model), "--data", str(notes), "--out",
                     str(tmp_path / "run"), "--set", "mask_prompt=false", "--set", "max_seq_length=64",
                     "--set", "iterations=2", "--set", "save_every=2", "--set", "eval_every=2", "--set", "batch_size=2"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "3 documents split into" in out + err and "longer than" not in out + err
    rows = [json.loads(line)["text"] for name in ("train", "valid")
            for line in (tmp_path / "run" / "data" / f"{name}.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer(tiny_model)
    assert len(rows) > 3 and max(len(tokenizer.encode(r)) for r in rows) <= 63


def test_data_inspect_with_a_model_reports_the_chunks(capsys, tmp_path, tiny_model):
    notes = _notes(tmp_path / "notes", n_docs=2)
    code, out, _ = run_cli(capsys, "data", "inspect", notes, "--model", tiny_model, "--max-seq-length", "64")
    assert code == 0 and "2 documents split into" in out and "of at most 64 tokens" in out
    assert "rows longer than max_seq_length" not in out


def test_mlx_lm_warning_about_long_rows_shows_once_in_our_words(capfd, tmp_path, tiny_model):
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"text": _document(200)}) + "\n" for _ in range(8)))
    code = cli.main(["train", "demo-tiny-lora", "--model", str(tiny_model), "--data", str(data), "--out",
                     str(tmp_path / "run"), "--set", "mask_prompt=false", "--set", "max_seq_length=32",
                     "--set", "iterations=4", "--set", "save_every=2", "--set", "eval_every=2", "--set", "batch_size=2"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert (out + err).count("longer than max_seq_length (32 tokens") == 1
    assert "[WARNING]" not in out + err and "Some sequences" not in out + err
