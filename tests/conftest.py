"""Test set-up: offscreen Qt, offline hub, no JIT compile, a private MACFINETUNE_HOME."""

import os
import stat
import tempfile

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MLX_DISABLE_COMPILE"] = "1"  # g++ kernel compiles cost 25-50 s cold on Linux CPUs
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["MACFINETUNE_HOME"] = tempfile.mkdtemp(prefix="macfinetune-test-home-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from macfinetune.core.recipe import Recipe, apply_overrides, with_paths  # noqa: E402

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "resources" / "sample_data"

FAST = [
    "iterations=12",
    "batch_size=4",
    "num_layers=-1",
    "learning_rate=1e-3",
    "report_every=4",
    "eval_every=4",
    "save_every=4",
    "val_batches=2",
    "max_seq_length=96",
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from macfinetune.backend.tinymodel import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model_q4(tiny_model, tmp_path_factory) -> Path:
    """The tiny model quantized to 4 bits with mlx-lm's own converter."""
    from mlx_lm.convert import convert

    out = tmp_path_factory.mktemp("models") / "tiny-q4"
    convert(str(tiny_model), str(out), quantize=True, q_bits=4, q_group_size=32)
    return out


def fast_recipe(model: Path, *overrides: str, data: Path = SAMPLE_DATA) -> Recipe:
    return apply_overrides(with_paths(Recipe(), str(model), str(data)), FAST + list(overrides))


@pytest.fixture(scope="session")
def trained_run(tiny_model, tmp_path_factory) -> Path:
    """One LoRA run shared by the fuse, generate and interop tests."""
    from macfinetune.backend.training import train_run

    run_dir = tmp_path_factory.mktemp("runs") / "lora"
    result = train_run(fast_recipe(tiny_model), run_dir, lambda e: None)
    assert result.state == "finished"
    return run_dir


@pytest.fixture(scope="session")
def method_runs(tiny_model, tiny_model_q4, tmp_path_factory) -> dict:
    """One short run per method (dora, full, qlora) for the export tests; lora is ``trained_run``."""
    from macfinetune.backend.training import train_run

    out = {}
    for method, model in (("dora", tiny_model), ("full", tiny_model), ("qlora", tiny_model_q4)):
        run_dir = tmp_path_factory.mktemp("runs") / method
        kind = "lora" if method == "qlora" else method
        result = train_run(fast_recipe(model, f"method.type={kind}", "iterations=4"), run_dir, lambda e: None)
        assert result.state == "finished"
        out[method] = run_dir
    return out


@pytest.fixture(scope="session")
def tiny_variants(tiny_model, tmp_path_factory):
    """``variant(model_type)``: the tiny model in another architecture (built once per session)."""
    from macfinetune.backend.tinymodel import build_tiny_variant

    built = {}

    def variant(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = build_tiny_variant(tiny_model, tmp_path_factory.mktemp("models") / model_type,
                                                   model_type)
        return built[model_type]

    return variant


@pytest.fixture(scope="session")
def tiny_sentencepiece_model(tmp_path_factory) -> Path:
    """The tiny llama with a SentencePiece tokenizer and Mistral v0.3's chat template."""
    from macfinetune.backend.tinymodel import build_tiny_sentencepiece_model

    template = (Path(__file__).parent / "data" / "chat_templates" / "mistral-7b-instruct-v0.3.jinja").read_text()
    return build_tiny_sentencepiece_model(tmp_path_factory.mktemp("models") / "tiny-spm", template)


# --- a fake ssh and rsync (multi-Mac checks): the "host" runs the command on this machine ---------------

FAKE_SSH = r"""#!/bin/sh
while [ "$1" = "-o" ]; do shift 2; done
host=$1; shift
echo "$host $*" >> "{log}"
case "$host" in
  bad*) echo "$host: Permission denied (publickey)." >&2; exit 255;;
  old) sh -c "$*" | sed 's/"mlx": "[^"]*"/"mlx": "0.1.0"/'; exit 0;;
  far) sh -c "$*" | sed "s|\"missing\": \[\]|\"missing\": [\"$FAKE_MISSING\"]|"; exit 0;;
esac
exec sh -c "$*"
"""
FAKE_RSYNC = """#!/bin/sh
echo "rsync $*" >> "{log}"
if [ -n "$FAKE_RSYNC_FAIL" ]; then echo "rsync: connection unexpectedly closed (0 bytes received so far)" >&2; exit 12; fi
printf 'mydata.jsonl\\n        512  50%%    1.00MB/s    0:00:01\\r'
if [ -n "$FAKE_RSYNC_SLOW" ]; then sleep "$FAKE_RSYNC_SLOW"; fi
printf '      1,024 100%%    2.00MB/s    0:00:00\\n'
echo "rsync finished" >> "{log}"
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    log = tmp_path / "ssh.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("rsync", FAKE_RSYNC)):
        script = bin_dir / name
        script.write_text(text.format(log=log))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("MACFINETUNE_SSH", str(bin_dir / "ssh"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # the probe runs this checkout
    return log


def run_cli(capsys, *args):
    """``macfinetune ARGS`` in this process: (exit code, stdout, stderr)."""
    from macfinetune import cli

    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def sets(*items):
    """``--set`` before each recipe override."""
    return [x for item in items for x in ("--set", item)]
