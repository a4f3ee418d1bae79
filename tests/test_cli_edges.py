"""The command line at its edges: odd numbers, Ctrl-C at awkward moments, closed pipes, paths with spaces."""

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, SAMPLE_DATA, run_cli, sets

from macfinetune import cli
from macfinetune.core.events import CheckpointSaved, RunStarted, TokenChunk

ROOT = Path(__file__).resolve().parents[1]


def _entry_point() -> str:
    """The `macfinetune` console script, as pyproject.toml declares it ('module:function')."""
    return re.search(r'^macfinetune = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


@pytest.mark.parametrize("command", ["estimate", "recommend", "recipes"])
@pytest.mark.parametrize("memory", ["nan", "0.5", "1e-9", "5000"])
def test_memory_outside_1_to_4096_gb_is_refused(capsys, tiny_model, command, memory):
    model = ["--model", tiny_model] if command != "recipes" else []
    code, _, err = run_cli(capsys, command, *model, "--memory-gb", memory)
    assert code == 2
    assert "memory must be 1 to 4096 GB" in err and "Traceback" not in err


def test_generate_refuses_a_negative_seed_and_a_non_finite_temperature(capsys, trained_run):
    for option, value, field in (("--seed", "-1", "seed"), ("--temp", "nan", "temperature"),
                                 ("--temp", "inf", "temperature")):
        code, out, err = run_cli(capsys, "generate", "--adapter", trained_run, "--prompt", "hi", option, value)
        assert code == 2
        assert err.startswith(f"error: {field}") and "Traceback" not in err
        assert out == ""


def test_ctrl_c_while_the_command_line_imports_exits_130_quietly(tmp_path):
    module, function = _entry_point().split(":")
    # a real SIGINT, delivered while macfinetune.cli imports its command modules
    code = (
        "import os, signal, sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'macfinetune.cli.train':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        f"from {module} import {function}\n"
        f"sys.exit({function}(['runs']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "MACFINETUNE_HOME": str(tmp_path)})
    assert proc.returncode == 130
    assert proc.stderr.strip() == "stopped" and proc.stdout == ""


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    module, function = _entry_point().split(":")
    code = f"import sys\nfrom {module} import {function}\nsys.exit({function}(['recipes']))\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "MACFINETUNE_HOME": str(tmp_path)})
    proc.stdout.close()  # like `| head` that has read what it wanted: the writes find no reader
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == 141
    assert err == ""


def _interrupt_on(monkeypatch, target: str, event_type):
    """Press Ctrl-C (a real SIGINT to this process) when ``target`` (a ``show(event)`` method) first sees
    an ``event_type`` event."""
    cls_path, _, method = target.rpartition(".")
    module, _, cls_name = cls_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
    original, sent = getattr(cls, method), []

    def show(self, event):
        original(self, event)
        if isinstance(event, event_type) and not sent:
            sent.append(event)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cls, method, show)


def _line(out: str, prefix: str) -> str:
    return next(line.removeprefix(prefix) for line in out.splitlines() if line.startswith(prefix))


def test_suggested_commands_quote_a_run_folder_with_spaces_and_work_as_printed(capsys, monkeypatch, tiny_model,
                                                                            tmp_path):
    run = tmp_path / "Application Support" / "run 1"
    with monkeypatch.context() as patch:
        _interrupt_on(patch, "macfinetune.cli.train.Progress.show", CheckpointSaved)
        code, out, err = run_cli(capsys, "train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA,
                                 "--out", run, *sets(*FAST))
    assert code == 130, err
    resume = shlex.split(_line(out, "continue with: "))
    assert resume == ["macfinetune", "train", "--resume", str(run)]
    generate, fuse = (shlex.split(part) for part in _line(out, "next: ").split("  |  "))
    assert generate[:4] == ["macfinetune", "generate", "--adapter", str(run)]
    assert fuse == ["macfinetune", "fuse", str(run)]
    code, out, err = run_cli(capsys, *resume[1:])
    assert code == 0 and "finished at iteration 12" in out, err
    code, out, err = run_cli(capsys, *fuse[1:])
    assert code == 0 and (run / "fused-best" / "config.json").is_file(), err


def test_a_run_stopped_before_its_first_checkpoint_says_nothing_was_saved(capsys, monkeypatch, tiny_model, tmp_path):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_on(patch, "macfinetune.cli.train.Progress.show", RunStarted)
        code, out, err = run_cli(capsys, "train", "demo-tiny-lora", "--model", tiny_model, "--data", SAMPLE_DATA,
                                 "--out", run, *sets(*FAST))
    assert code == 130, err
    assert "nothing was saved" in out
    assert "--resume" not in out and "generate" not in out and "fuse" not in out
    again = shlex.split(_line(out, "start again with: "))
    code, out, err = run_cli(capsys, *again[1:], "--out", tmp_path / "again", *sets("iterations=4"))
    assert code == 0 and "finished at iteration 4" in out, err


def test_demo_stopped_before_its_first_checkpoint_has_nothing_to_fuse(capsys, monkeypatch, tmp_path):
    home = tmp_path / "Application Support"
    monkeypatch.setenv("MACFINETUNE_HOME", str(home))
    with monkeypatch.context() as patch:
        _interrupt_on(patch, "macfinetune.cli.train.Progress.show", RunStarted)
        code, out, err = run_cli(capsys, "demo", "--out", tmp_path / "demo")
    assert code == 130, err
    assert "stopped before the first checkpoint; nothing to fuse" in out
    assert "None" not in out and "Traceback" not in err
    reuse = shlex.split(_line(out, "base model: ").partition("(reuse it: ")[2].removesuffix(")"))
    assert reuse[0] == "--model" and Path(reuse[1]).is_relative_to(home) and (Path(reuse[1]) / "config.json").is_file()


def test_ctrl_c_during_generate_stops_it_and_marks_the_cut_answer(capsys, monkeypatch, trained_run):
    _interrupt_on(monkeypatch, "macfinetune.cli.use._StreamPrinter.show", TokenChunk)
    code, out, err = run_cli(capsys, "generate", "--adapter", trained_run, "--compare", "--prompt", "Tell me a story",
                             "--max-tokens", "500", "--temp", "1.0")
    assert code == 130
    assert out.startswith("--- base ---") and "--- tuned ---" not in out
    assert re.search(r"^\[base\] \d+ tokens, .*stopped$", err, re.M) and "[tuned]" not in err


def test_data_prepare_suggests_commands_that_keep_a_folder_with_spaces_whole(capsys, tmp_path):
    out_dir = tmp_path / "my data" / "prepared"
    code, out, err = run_cli(capsys, "data", "prepare", SAMPLE_DATA / "train.jsonl", "--out", out_dir)
    assert code == 0, err
    inspect, train = (shlex.split(part) for part in _line(out, "next: ").split("  |  "))
    assert inspect == ["macfinetune", "data", "inspect", str(out_dir), "--model", "MODEL"]
    assert train == ["macfinetune", "train", "RECIPE", "--data", str(out_dir)]


def test_screenshot_into_a_missing_folder_says_so(capsys, tmp_path):
    code, out, err = run_cli(capsys, "--screenshot", tmp_path / "nowhere" / "shot.png")
    assert code == 2
    assert f"{tmp_path / 'nowhere'}: no such folder" in err
    assert not (tmp_path / "nowhere").exists()


def test_screenshot_of_an_unknown_page_exits_2_listing_every_page(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--screenshot", str(tmp_path / "shot.png"), "--page", "nosuch"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    listed = re.search(r"invalid choice: 'nosuch' \(choose from (.*)\)", err).group(1)
    assert {"runs", "new", "monitor", "checkpoints", "playground", "welcome", "review"} == set(re.findall(r"\w+", listed))
