"""Model discovery on folders laid out exactly as huggingface_hub and LM Studio lay them out."""

import argparse
import hashlib
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from macfinetune.backend import hub
from macfinetune.cli import data as commands_data
from macfinetune.core import models_catalog as mc

SUPPORTED = frozenset({"llama", "mistral", "qwen2"})
# hidden 8, 1 layer, 2 heads of 4, 1 KV head, MLP 16, vocab 32, untied embeddings
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 32,
          "tie_word_embeddings": False, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}
SHAPES = {"model.embed_tokens.weight": (32, 8), "model.layers.0.self_attn.q_proj.weight": (8, 8),
          "model.layers.0.self_attn.k_proj.weight": (4, 8), "model.layers.0.self_attn.v_proj.weight": (4, 8),
          "model.layers.0.self_attn.o_proj.weight": (8, 8), "model.layers.0.mlp.gate_proj.weight": (16, 8),
          "model.layers.0.mlp.up_proj.weight": (16, 8), "model.layers.0.mlp.down_proj.weight": (8, 16),
          "model.layers.0.input_layernorm.weight": (8,), "model.layers.0.post_attention_layernorm.weight": (8,),
          "model.norm.weight": (8,), "lm_head.weight": (32, 8)}
PARAMETERS = 256 + 64 + 32 + 32 + 64 + 3 * 128 + 8 + 8 + 8 + 256  # = 1112, counted by hand


def weights_bytes(tmp_path) -> bytes:
    path = tmp_path / "w.safetensors"
    save_file({k: np.zeros(s, np.float16) for k, s in SHAPES.items()}, str(path))
    return path.read_bytes()


def model_files(tmp_path, config=CONFIG, **extra) -> dict:
    files = {"config.json": json.dumps(config).encode(), "tokenizer.json": b"{}",
             "model.safetensors": weights_bytes(tmp_path)}
    files.update(extra)
    return {k: v for k, v in files.items() if v is not None}


def hf_cache_repo(cache, repo_id, files, commit="a" * 40, point_main=True, kind="models"):
    """models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main}."""
    repo = cache / (f"{kind}--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    if point_main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return snapshot


def plain_folder(folder, files):
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


# --- the Hugging Face cache ---------------------------------------------------------------------


def test_hf_cache_discovery(tmp_path):
    cache = tmp_path / "hub"
    files = model_files(tmp_path)
    old = hf_cache_repo(cache, "org/tiny-llama", files, commit="b" * 40, point_main=False)
    generation = b'{"do_sample": true}'
    current = hf_cache_repo(cache, "org/tiny-llama", {**files, "generation_config.json": generation,
                                                      "special_tokens_map.json": b"{}"}, commit="c" * 40)
    hf_cache_repo(cache, "gpt2", model_files(tmp_path, {**CONFIG, "model_type": "gpt2"}))
    hf_cache_repo(cache, "org/tokenizer-only", {"tokenizer.json": b"{}"})
    hf_cache_repo(cache, "org/data", {"config.json": b"{}"}, kind="datasets")  # not a model
    entries = mc.discover([mc.ModelSource("hf-cache", cache)], SUPPORTED, {"hf-cache": hub.cached_models})
    assert [(e.name, e.source) for e in entries] == [("gpt2", "hf-cache"), ("org/tiny-llama", "hf-cache")]
    tiny = entries[1]
    assert tiny.path == current and tiny.path != old and tiny.revision == "c" * 40
    assert (tiny.model_type, tiny.architecture, tiny.parameters, tiny.parameters_from) == (
        "llama", "LlamaForCausalLM", PARAMETERS, "weights")
    assert (tiny.quantization, tiny.dtype, tiny.context_length, tiny.supported) == (None, "bfloat16", 4096, True)
    # the current snapshot's files; special_tokens_map.json and tokenizer.json share one blob
    assert tiny.size_bytes == sum(len(d) for d in files.values()) + len(generation)
    gpt2 = entries[0]
    assert gpt2.supported is False and "no implementation of model_type 'gpt2'" in gpt2.problems[0].message


def test_without_refs_main_the_newest_snapshot_is_used(tmp_path):
    cache = tmp_path / "hub"
    hf_cache_repo(cache, "org/m", model_files(tmp_path), commit="1" * 40, point_main=False)
    newest = hf_cache_repo(cache, "org/m", model_files(tmp_path, {**CONFIG, "max_position_embeddings": 8}),
                           commit="2" * 40, point_main=False)
    os.utime(newest / "config.json", (2e9, 2e9))  # its own blob: huggingface_hub dates a revision by its files
    assert hub.cached_models(cache) == [("org/m", newest, "2" * 40)]
    assert hub.cached_models(tmp_path / "no-cache") == []


@pytest.mark.parametrize(
    "env, expected",
    [({"HF_HUB_CACHE": "/a", "HF_HOME": "/b"}, "/a"), ({"HF_HOME": "/b"}, "/b/hub"),
     ({"XDG_CACHE_HOME": "/x"}, "/x/huggingface/hub"), ({"HUGGINGFACE_HUB_CACHE": "/old"}, "/old")],
)
def test_hf_cache_dir_follows_the_environment(env, expected):
    assert str(mc.hf_cache_dir(env)) == expected


def test_download_options_are_read_when_the_download_starts():
    assert mc.download_options({"HF_HOME": "/b", "HF_ENDPOINT": "http://mirror"}) == {
        "cache_dir": mc.Path("/b/hub"), "endpoint": "http://mirror"}
    assert mc.download_options({"HF_HUB_CACHE": "/a", "HF_ENDPOINT": ""})["endpoint"] is None


@pytest.mark.parametrize(
    "done, total, files, expected",
    [(500_000_000, 2_000_000_000, (1, 4), "Downloading o/m: 0.50 GB of 2.00 GB, 1/4 files"),
     (300_000, 560_381, (1, 5), "Downloading o/m: 300.0 kB of 560.4 kB, 1/5 files"),
     (2_500_000, None, (0, None), "Downloading o/m: 2.5 MB"), (12, 0, (0, 0), "Downloading o/m: 12 bytes")],
)
def test_download_progress_in_words(done, total, files, expected):
    assert mc.download_progress_text(mc.DownloadProgress("o/m", done, total, *files)) == expected


# --- LM Studio and user folders -----------------------------------------------------------------


def test_lmstudio_folders(tmp_path):
    home = tmp_path / "home"
    models = home / ".lmstudio" / "models"
    q4 = {**CONFIG, "quantization": {"group_size": 64, "bits": 4}}
    plain_folder(models / "mlx-community" / "Tiny-4bit", model_files(tmp_path, q4))
    plain_folder(models / "lmstudio-community" / "Tiny-GGUF", {"tiny-Q4_K_M.gguf": b"GGUF"})
    custom = plain_folder(tmp_path / "elsewhere" / "pub" / "Other", model_files(tmp_path))
    (home / ".lmstudio" / "settings.json").write_text(json.dumps({"downloadsFolder": str(tmp_path / "elsewhere")}))
    dirs = mc.lmstudio_dirs(home)
    assert dirs == [tmp_path / "elsewhere", models]
    entries = mc.discover([mc.ModelSource("lmstudio", d) for d in dirs], SUPPORTED)
    by_name = {e.name: e for e in entries}
    assert sorted(by_name) == ["lmstudio-community/Tiny-GGUF", "mlx-community/Tiny-4bit", "pub/Other"]
    assert by_name["pub/Other"].path == custom
    assert by_name["mlx-community/Tiny-4bit"].quantization == "4-bit (group 64)"
    gguf = by_name["lmstudio-community/Tiny-GGUF"]
    assert not gguf.supported and "GGUF" in gguf.problems[0].message and gguf.parameters is None


def test_user_folder_scan_stops_at_model_folders(tmp_path):
    root = tmp_path / "mine"
    plain_folder(root / "a" / "b", model_files(tmp_path))
    plain_folder(root / "a" / "b" / "checkpoint", model_files(tmp_path))  # inside a model: not listed
    plain_folder(root / "x" / "y" / "z" / "too-deep", model_files(tmp_path))
    assert [name for name, _, _ in mc.scan_folder(root)] == ["a/b"]


# --- what is refused and why --------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, files, tokenizer_config, expected",
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, {"config.json", "model.safetensors"}, None,
         "no implementation of model_type 'bert' (BertForMaskedLM)"),
        ({"model_type": "custom_lm", "auto_map": {"AutoModelForCausalLM": "modeling.M"}},
         {"config.json", "model.safetensors", "modeling.py"}, None, "needs the repository's own Python code"),
        ({"model_type": "llama"}, {"config.json", "pytorch_model.bin", "tokenizer.json"}, None,
         "only pickle weights (pytorch_model.bin)"),
        ({"model_type": "llama"}, {"config.json", "tokenizer_config.json"}, {"auto_map": {"AutoTokenizer": ["t.T", None]}},
         "the tokenizer needs the repository's own Python code"),
        ({}, {"config.json", "model.safetensors"}, None, "no 'model_type'"),
    ],
)
def test_refusals_explain(config, files, tokenizer_config, expected):
    problems = mc.usability_problems(config, files, SUPPORTED, tokenizer_config, where="repo")
    assert any(expected in p.message for p in problems), problems


def test_remote_code_of_a_supported_architecture_is_only_a_note(tmp_path):
    config = {**CONFIG, "auto_map": {"AutoConfig": "configuration.C"}}
    entry = mc.describe(plain_folder(tmp_path / "m", model_files(tmp_path, config)), supported=SUPPORTED)
    assert entry.supported and "auto_map" in entry.notes[0]


def test_check_usable_raises_with_every_reason(tmp_path):
    folder = plain_folder(tmp_path / "m", {"config.json": b'{"model_type": "bert"}', "model.bin": b"x"})
    with pytest.raises(mc.ProblemError) as info:
        mc.check_usable(folder, SUPPORTED)
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 2 and "model_type 'bert'" in messages[0] and "only pickle weights (model.bin)" in messages[1]


# --- numbers ------------------------------------------------------------------------------------


def test_parameters_from_the_config_match_the_weights(tmp_path):
    assert mc.estimate_parameters(CONFIG) == PARAMETERS
    folder = plain_folder(tmp_path / "m", model_files(tmp_path, **{"model.safetensors": None}))
    assert mc.parameter_count(folder, CONFIG) == (PARAMETERS, "config")


def test_quantized_weights_count_what_they_pack(tiny_model, tiny_model_q4):
    full, q4 = mc.describe(tiny_model), mc.describe(tiny_model_q4)
    assert full.parameters == q4.parameters == mc.estimate_parameters(json.loads((tiny_model / "config.json").read_text()))
    assert (full.parameters_from, q4.parameters_from) == ("weights", "weights")
    assert (full.quantization, q4.quantization) == (None, "4-bit (group 32)")
    assert q4.size_bytes < full.size_bytes


@pytest.mark.parametrize(
    "config, label",
    [({"quantization": {"bits": 8, "group_size": 32}}, "8-bit (group 32)"),
     ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "gptq 4-bit"),
     ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, "bitsandbytes 4-bit"),
     ({"quantization_config": {"quant_method": "fp8"}}, "fp8"), ({}, None)],
)
def test_quantization_labels(config, label):
    assert mc.quantization_label(config) == label


def test_mlx_lm_supported_model_types():
    from macfinetune.backend.architectures import supported_model_types

    types = supported_model_types()
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3"} <= types  # mistral: remapped to llama
    assert not {"bert", "t5", "cache", "rope_utils", "switch_layers"} & types


def test_supported_model_types_read_mlx_lm_without_importing_it():
    """The app scans models on a worker thread before any MLX work: the list must not import MLX,
    and the remapping read from mlx-lm's source must be the one mlx-lm uses."""
    import subprocess
    import sys

    code = ("import sys; from macfinetune.backend.architectures import supported_model_types as s; s(); "
            "print(sorted(m for m in ('mlx', 'mlx_lm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from mlx_lm.utils import MODEL_REMAPPING

    from macfinetune.backend import architectures

    assert architectures._remapping(architectures._package_folder() / "utils.py") == MODEL_REMAPPING


# --- the command line ---------------------------------------------------------------------------


def test_cli_models_list(tmp_path, monkeypatch, capsys, tiny_model):
    cache = tmp_path / "hub"
    hf_cache_repo(cache, "org/tiny-llama", model_files(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    parser = argparse.ArgumentParser()
    commands_data.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "list", "--folder", str(tiny_model.parent), "--json"])
    assert commands_data.cmd_models(args) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["org/tiny-llama"]["parameters"] == PARAMETERS and listed["tiny"]["supported"] is True
    args = parser.parse_args(["models", "list"])
    assert commands_data.cmd_models(args) == 0
    assert "org/tiny-llama" in capsys.readouterr().out
