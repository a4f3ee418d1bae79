"""Fuse and generate on a real run; interoperability with mlx-lm's own command line, both ways."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from macfinetune.backend import fusing, generation, models
from macfinetune.core.events import TokenChunk
from macfinetune.core.problems import ProblemError
from macfinetune.core.sampling import Sampling

GREEDY = Sampling(max_tokens=12, temperature=0.0)


def test_fused_model_loads_and_matches_base_plus_adapter(trained_run, tmp_path):
    out = tmp_path / "fused"
    result = fusing.fuse(trained_run, "best", out)
    assert result.out_dir == str(out) and (out / "config.json").exists()
    net, tok, _ = models.load_model(out)
    fused = generation.generate(net, tok, "What color is the sea?", GREEDY).text
    base, tuned = generation.run_generate(None, (trained_run, "best"), "What color is the sea?", GREEDY, compare=True)
    assert fused == tuned.text and tuned.source == "tuned"
    assert base.text != tuned.text  # the adapter changed the model, so the equality above means something


def test_compare_streams_base_then_tuned(trained_run):
    chunks = []
    results = generation.run_generate(None, (trained_run, "last"), "Hello?", GREEDY, compare=True, emit=chunks.append)
    assert [r.source for r in results] == ["base", "tuned"]
    streamed = [c for c in chunks if isinstance(c, TokenChunk)]
    assert "".join(c.text for c in streamed if c.source == "base") == results[0].text
    assert results[0].text != results[1].text


def test_fuse_refuses_missing_checkpoint_and_existing_output(trained_run, tmp_path):
    with pytest.raises(ProblemError, match="there is no checkpoint 7"):
        fusing.fuse(trained_run, "7", tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(ProblemError, match="already exists"):
        fusing.fuse(trained_run, "best", tmp_path / "b")


def test_the_default_fused_folder_from_an_earlier_fuse_says_which_checkpoint_it_holds(trained_run, tmp_path):
    """A run that went on after 'fused-best' was made (a resume found a better checkpoint) names both checkpoints."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    best = fusing.fuse(run, "best", None)
    assert Path(best.out_dir).name == "fused-best"
    record = Path(best.out_dir) / "macfinetune.json"
    held = json.loads(record.read_text())["checkpoint"]
    with pytest.raises(ProblemError, match=f"fused-best already holds checkpoint {held}, fused earlier"):
        fusing.fuse(run, "best", None)
    record.write_text(json.dumps({**json.loads(record.read_text()), "checkpoint": "3"}))  # as if fused before a resume
    with pytest.raises(ProblemError, match=f"fused-best holds checkpoint 3, fused before the run went on; this is "
                                           f"checkpoint {held}: pass --out NEW_FOLDER"):
        fusing.fuse(run, "best", None)


def test_gguf_export_for_llama_and_clear_refusal_elsewhere(trained_run, tmp_path, tiny_model):
    result = fusing.fuse(trained_run, "last", tmp_path / "g", gguf=True)
    with open(result.gguf_path, "rb") as f:
        assert f.read(4) == b"GGUF"
    config = json.loads((tiny_model / "config.json").read_text())
    (tmp_path / "phi").mkdir()
    for f in tiny_model.iterdir():
        (tmp_path / "phi" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "phi" / "config.json").write_text(json.dumps({**config, "model_type": "phi3"}))
    with pytest.raises(ProblemError, match="GGUF export supports llama, .*'phi3'"):
        fusing.fuse(trained_run, "last", tmp_path / "p", gguf=True, model=str(tmp_path / "phi"))
    assert not (tmp_path / "p").exists()


def test_qlora_fuse_dequantized_equals_base_plus_adapter(tiny_model_q4, tmp_path):
    from conftest import fast_recipe

    from macfinetune.backend.training import train_run

    run = tmp_path / "run"
    assert train_run(fast_recipe(tiny_model_q4, "iterations=4"), run, lambda e: None).state == "finished"
    out = fusing.fuse(run, "last", tmp_path / "deq", dequantize=True)
    config = json.loads((tmp_path / "deq" / "config.json").read_text())
    assert "quantization" not in config
    net, tok, _ = models.load_model(out.out_dir)
    fused = generation.generate(net, tok, "Hi", GREEDY).text
    base, tuned = generation.run_generate(None, (run, "last"), "Hi", GREEDY, compare=True)
    assert fused == tuned.text
    assert base.text != tuned.text  # a fuse that dropped the adapter would give the base's text


def test_offline_hub_id_fails_with_a_clear_message():
    with pytest.raises(ProblemError, match="could not get 'mlx-community/not-here' from Hugging Face: offline"):
        models.resolve_model_path("mlx-community/not-here")


def _mlx_lm(*args, timeout=180):
    proc = subprocess.run([sys.executable, "-m", "mlx_lm", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_mlx_lm_generate_and_fuse_read_our_run_folder(trained_run, tiny_model, tmp_path):
    adapters = str(trained_run / "adapters")
    out = _mlx_lm("generate", "--model", str(tiny_model), "--adapter-path", adapters, "--prompt", "What color is the sea?",
                  "--max-tokens", "12", "--temp", "0")
    (ours,) = generation.run_generate(None, (trained_run, "last"), "What color is the sea?", GREEDY)
    assert ours.text.strip() and ours.text.strip() in out
    _mlx_lm("fuse", "--model", str(tiny_model), "--adapter-path", adapters, "--save-path", str(tmp_path / "f"))
    net, tok, _ = models.load_model(tmp_path / "f")
    assert generation.generate(net, tok, "What color is the sea?", GREEDY).text == ours.text


def test_adapters_written_by_mlx_lm_lora_fuse_and_generate_here(tiny_model, tmp_path):
    import mlx.core as mx
    from conftest import SAMPLE_DATA

    adapters = tmp_path / "mlx-adapters"
    _mlx_lm("lora", "--model", str(tiny_model), "--train", "--data", str(SAMPLE_DATA), "--iters", "4",
            "--batch-size", "2", "--num-layers", "2", "--save-every", "2", "--val-batches", "1",
            "--adapter-path", str(adapters))
    out = fusing.fuse(adapters, "last", tmp_path / "fused")
    fused, tok, _ = models.load_model(out.out_dir)
    (tuned,) = generation.run_generate(None, (adapters, "last"), "Hi", GREEDY)
    assert generation.generate(fused, tok, "Hi", GREEDY).text == tuned.text
    base, _, _ = models.load_model(tiny_model)
    changed = [fused.layers[-1].self_attn.q_proj.weight, base.layers[-1].self_attn.q_proj.weight]
    assert not mx.array_equal(*changed)  # mlx-lm's adapter was fused in, not dropped
    with pytest.raises(ProblemError, match="no 'best'"):
        fusing.fuse(adapters, "best", tmp_path / "fused2")


@pytest.mark.parametrize("compare", [False, True])
def test_a_prompt_longer_than_the_models_context_is_refused_before_generating(trained_run, capsys, compare):
    from macfinetune import cli

    code = cli.main(["generate", "--adapter", str(trained_run), "--prompt", "word " * 3000, "--max-tokens", "5",
                     *(["--compare"] if compare else [])])
    out, err = capsys.readouterr()
    assert code == 2
    assert "the prompt is" in err and "tokens and this model reads at most 1,024 (its context)" in err
    assert "[tuned]" not in out + err and "[base]" not in out + err  # nothing was generated
