"""The command line: exit codes, messages without tracebacks, and no half-made folders."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import FAST, SAMPLE_DATA, run_cli, sets

from macfinetune.core import runs


def test_no_arguments_without_a_display_says_so_and_prints_help(capsys, monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    code, out, _ = run_cli(capsys)
    assert code == 0
    assert out.startswith("No display found") and "train" in out and "demo" in out


def test_train_fuse_generate_runs(capsys, tiny_model, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA,
                             "--out", run, *sets(*FAST, "iterations=8"))
    assert code == 0, err
    assert "finished at iteration 8" in out and "loss" in out and "tok/s" in out and "ETA" in out
    code, out, err = run_cli(capsys, "fuse", run, "--checkpoint", "best")
    assert code == 0, err
    fused = run / "fused-best"
    assert out.strip().endswith(f"fused model: {fused}")
    assert (fused / "config.json").is_file() and list(fused.glob("*.safetensors"))
    assert json.loads((fused / "macfinetune.json").read_text())["base_model"] == str(tiny_model)
    code, out, err = run_cli(capsys, "generate", "--adapter", f"{run}:last", "--compare", "--prompt", "Hi",
                             "--max-tokens", "8", "--temp", "0")
    assert code == 0, err
    base, tuned = re.fullmatch(r"--- base ---\n(.+)\n--- tuned ---\n(.+)\n", out, re.S).groups()
    assert base != tuned
    assert re.search(r"\[base\] [1-8] tokens", err) and re.search(r"\[tuned\] [1-8] tokens", err)


def test_runs_lists_status_and_best(capsys, trained_run, monkeypatch):
    monkeypatch.setenv("MACFINETUNE_HOME", str(trained_run.parent.parent))
    monkeypatch.setattr(runs, "list_runs", lambda home: [runs.RunSummary(trained_run, runs.read_status(trained_run), 1)])
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "finished" in out and "12/12" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "missing.yaml"], "recipe file not found"),
        (["train", "demo-tiny-lora", "--model", "/nowhere/model", "--data", SAMPLE_DATA], "model folder not found"),
        (["train", "demo-tiny-lora", "--data", SAMPLE_DATA, "--set", "rank=0"], "allowed 1 to 4096"),
        (["train", "demo-tiny-lora", "--data", SAMPLE_DATA, "--set", "optimiser=adam"], "did you mean training.optimizer"),
        (["fuse", "/nowhere/run"], "not a run folder"),
        (["generate", "--model", "org/not-downloaded", "--prompt", "x"], "offline"),
    ],
)
def test_bad_input_exits_2_with_one_clear_message(capsys, tiny_model, tmp_path, args, expected):
    args = [str(a) for a in args]
    if "--model" not in args and args[0] == "train":
        args += ["--model", str(tiny_model)]
    code, out, err = run_cli(capsys, *args, *(["--out", tmp_path / "run"] if args[0] == "train" else []))
    assert code == 2
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_dataset_and_existing_output(capsys, tiny_model, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n{"text": \n')
    code, _, err = run_cli(capsys, "train", "demo-tiny-lora", "--model", tiny_model, "--data", data,
                           "--out", tmp_path / "run", "--set", "mask_prompt=false")
    assert code == 2 and f"{data} line 3" in err
    (tmp_path / "exists").mkdir()
    code, _, err = run_cli(capsys, "train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA,
                           "--out", tmp_path / "exists")
    assert code == 2 and "already exists" in err


def test_fuse_unknown_checkpoint_exits_2(capsys, trained_run):
    code, _, err = run_cli(capsys, "fuse", trained_run, "--checkpoint", "999")
    assert code == 2 and "there is no checkpoint 999; available: 4, 8, 12" in err


def test_console_script_runs_without_traceback(tmp_path):
    env = {**os.environ, "MACFINETUNE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "macfinetune", "fuse", str(tmp_path / "x")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def _broken_model(tiny_model, tmp_path, drop=(), config=None):
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    for pattern in drop:
        for f in folder.glob(pattern):
            f.unlink()
    if config:
        (folder / "config.json").write_text(json.dumps(config(json.loads((folder / "config.json").read_text()))))
    return folder


def _without(key):
    return lambda config: {k: v for k, v in config.items() if k != key}


NO_TOKENIZER = "has no tokenizer files (tokenizer.json or tokenizer.model); the download may be incomplete"


@pytest.mark.parametrize(
    "drop, config, expected",
    [
        (["tokenizer*"], None, NO_TOKENIZER),
        (["tokenizer.json"], None, NO_TOKENIZER),  # tokenizer_config.json alone holds no vocabulary
        (["*.safetensors"], None, "has no .safetensors weights"),
        (["config.json"], None, "has no config.json"),
        ([], lambda c: {**c, "model_type": "made_up_arch"}, "no implementation of model_type 'made_up_arch'"),
        ([], _without("hidden_size"), "model (hidden_size): config.json lacks hidden_size, which mlx-lm's "
                                      "llama model needs"),
        ([], lambda c: [1, 2], "config.json: not a JSON object"),
    ],
)
def test_broken_model_folders_exit_2(capsys, tiny_model, tmp_path, drop, config, expected):
    model = _broken_model(tiny_model, tmp_path, drop, config)
    code, _, err = run_cli(capsys, "train", "demo-tiny-lora", "--model", model, "--data", SAMPLE_DATA,
                           "--out", tmp_path / "run")
    assert code == 2 and expected in err
    assert "Traceback" not in err and "mlx-lm could not load" not in err
    assert not (tmp_path / "run").exists()


def test_an_unknown_architecture_is_the_only_message(tiny_model, tmp_path):
    """Checked before any tokenizer reads config.json: transformers' own warning about the model type (written
    to the process's stderr, beyond capsys) never comes first."""
    model = _broken_model(tiny_model, tmp_path, config=lambda c: {**c, "model_type": "made_up_arch"})
    proc = subprocess.run([sys.executable, "-m", "macfinetune", "train", "demo-tiny-lora", "--model", str(model),
                           "--data", str(SAMPLE_DATA), "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          env={**os.environ, "MACFINETUNE_HOME": str(tmp_path / "home")}, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {model / 'config.json'} (model_type): mlx-lm has no "
                                                "implementation of model_type 'made_up_arch'"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_exits_2(capsys, tiny_model, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA,
                           "--out", locked / "run")
    assert code == 2 and "not writable" in err


def test_unwritable_output_is_detected(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    (problem,) = runs.check_new_dir(tmp_path / "run")
    assert "is not writable" in problem.message
