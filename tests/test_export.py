"""Exports on the tiny model: GGUF read back with llama.cpp's own reader, the Ollama Modelfile and its
template, LM Studio's folder, the hub upload to a local fake server, atomicity, the CLI."""

import base64
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import gguf
import mlx.core as mx
import numpy as np
import pytest
from conftest import run_cli

from macfinetune import jobs
from macfinetune.backend import exporting, fusing, gguf_export, models
from macfinetune.core import exports, gotemplate, models_catalog, ollama
from macfinetune.core.control import JobControl
from macfinetune.core.events import ExportFinished, Progress, Stage
from macfinetune.core.problems import ProblemError

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"


def read_gguf(path):
    reader = gguf.GGUFReader(path)
    fields = {name: f for name, f in reader.fields.items()}
    return reader, fields


def value(fields, key):
    return fields[key].contents()


def value_type(fields, key):
    return [t.name for t in fields[key].types]


def export(run_dir, target, dest=None, checkpoint="last", emit=None, control=None, **options):
    events = []
    result = jobs.export_model(emit or events.append, control or JobControl(), run_dir=run_dir,
                               checkpoint=checkpoint, target=target, dest=dest, **options)
    return result, events


# --- GGUF -------------------------------------------------------------------------------------------


def test_gguf_metadata_is_what_llama_cpp_requires(trained_run, tiny_model, tmp_path):
    result, events = export(trained_run, "gguf", tmp_path / "g")
    assert isinstance(events[-1], ExportFinished) and result.files == ("model.gguf",)
    reader, fields = read_gguf(tmp_path / "g" / "model.gguf")
    tokenizer_config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    tokens = json.loads((tiny_model / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in tokens}
    assert value_type(fields, "tokenizer.ggml.token_type") == ["ARRAY", "INT32"]  # mlx-lm wrote UINT32
    assert value(fields, "tokenizer.ggml.model") == "gpt2"  # byte-level BPE, not "llama"
    assert value(fields, "tokenizer.ggml.pre") == "gpt-2"
    assert len(value(fields, "tokenizer.ggml.merges")) > 500
    assert len(value(fields, "tokenizer.ggml.tokens")) == 1024 == value(fields, "llama.vocab_size")
    assert value(fields, "tokenizer.ggml.eos_token_id") == ids[tokenizer_config["eos_token"]] == ids["<|im_end|>"]
    assert value(fields, "tokenizer.ggml.bos_token_id") == ids["<s>"]
    assert value(fields, "tokenizer.ggml.padding_token_id") == ids["</s>"]
    assert value(fields, "tokenizer.chat_template") == (tiny_model / "chat_template.jinja").read_text()
    types = value(fields, "tokenizer.ggml.token_type")
    assert types[ids["<|im_start|>"]] == gguf.TokenType.CONTROL and types[100] == gguf.TokenType.NORMAL
    assert value(fields, "general.architecture") == "llama" and value(fields, "llama.block_count") == 2
    assert value(fields, "llama.attention.head_count_kv") == 2 and value(fields, "llama.rope.dimension_count") == 16
    shapes = {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in reader.tensors}
    assert len(shapes) == 2 + 2 * 9  # token_embd, output_norm, 9 per block; the tied output is not repeated
    assert shapes["token_embd.weight"] == ("F16", (64, 1024))
    assert shapes["blk.1.attn_k.weight"] == ("F16", (64, 32))
    assert shapes["blk.0.attn_norm.weight"] == ("F32", (64,))


def test_llama_q_and_k_are_permuted_as_convert_hf_to_gguf_does(trained_run, tmp_path):
    export(trained_run, "gguf", tmp_path / "g", dtype="f32")
    loaded = fusing.load_fused(trained_run, "last", dequantize=True)
    q = np.array(dict(_flat(loaded.net))["model.layers.0.self_attn.q_proj.weight"])
    v = np.array(dict(_flat(loaded.net))["model.layers.0.self_attn.v_proj.weight"])
    reader, _ = read_gguf(tmp_path / "g" / "model.gguf")
    data = {t.name: np.array(t.data) for t in reader.tensors}
    expected = q.reshape(4, 2, 8, 64).swapaxes(1, 2).reshape(64, 64)  # 4 heads of 16: halves interleaved
    np.testing.assert_array_equal(data["blk.0.attn_q.weight"], expected)
    np.testing.assert_array_equal(data["blk.0.attn_v.weight"], v)  # v is not permuted


def _flat(net):
    from mlx.utils import tree_flatten

    return tree_flatten(net.parameters())


@pytest.mark.parametrize("model_type, arch, expected", [
    ("mistral", "llama", {"blk.0.attn_q.weight"}),
    ("qwen2", "qwen2", {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"}),
    ("qwen3", "qwen3", {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"}),
    ("gemma3_text", "gemma3", {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight",
                               "blk.0.attn_q_norm.weight"}),
])
def test_each_architecture_maps_every_tensor(tiny_variants, tmp_path, model_type, arch, expected):
    folder = tiny_variants(model_type)
    net, _, config = models.load_model(folder)
    plan = gguf_export.plan_gguf(folder, config, "f32")
    weights = dict(_flat(net))
    written = gguf_export.write_gguf(plan, weights, tmp_path / "m.gguf", lambda a: np.array(a.astype(mx.float32)))
    reader, fields = read_gguf(tmp_path / "m.gguf")
    assert value(fields, "general.architecture") == arch
    assert expected <= set(written) and len(reader.tensors) == len(written) == len(weights)
    assert value_type(fields, "tokenizer.ggml.token_type") == ["ARRAY", "INT32"]
    if model_type == "gemma3_text":  # Gemma3RMSNorm's (1 + w) baked in, as llama.cpp expects
        data = {t.name: np.array(t.data) for t in reader.tensors}
        np.testing.assert_allclose(data["blk.0.attn_norm.weight"],
                                   np.array(weights["model.layers.0.input_layernorm.weight"]) + 1)
        assert value(fields, "gemma3.attention.sliding_window") == 64


def test_sentencepiece_vocabulary(tiny_sentencepiece_model, tmp_path):
    import sentencepiece

    net, _, config = models.load_model(tiny_sentencepiece_model)
    plan = gguf_export.plan_gguf(tiny_sentencepiece_model, config)
    weights = dict(_flat(net))
    gguf_export.write_gguf(plan, weights, tmp_path / "m.gguf", lambda a: np.array(a.astype(mx.float32)))
    reader, fields = read_gguf(tmp_path / "m.gguf")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tiny_sentencepiece_model / "tokenizer.model"))
    assert value(fields, "tokenizer.ggml.model") == "llama" and value(fields, "tokenizer.ggml.pre") == "default"
    assert value_type(fields, "tokenizer.ggml.scores") == ["ARRAY", "FLOAT32"]
    assert value_type(fields, "tokenizer.ggml.token_type") == ["ARRAY", "INT32"]
    tokens, types = value(fields, "tokenizer.ggml.tokens"), value(fields, "tokenizer.ggml.token_type")
    assert tokens[300] == sp.id_to_piece(300) and value(fields, "tokenizer.ggml.scores")[300] == sp.get_score(300)
    assert types[0] == gguf.TokenType.UNKNOWN and types[1] == gguf.TokenType.CONTROL
    assert types[3] == gguf.TokenType.BYTE and tokens[3] == "<0x00>"  # byte fallback pieces
    assert value(fields, "tokenizer.ggml.add_bos_token") is True
    assert {t.name for t in reader.tensors} >= {"output.weight", "token_embd.weight"}  # untied here
    translation = ollama.translate(value(fields, "tokenizer.chat_template"), "<s>", "</s>")
    assert translation.family == "mistral"


@pytest.mark.parametrize("method", ["dora", "full", "qlora"])
def test_gguf_from_each_method(method_runs, tmp_path, method):
    result, _ = export(method_runs[method], "gguf", tmp_path / "g", dtype="bf16")
    reader, fields = read_gguf(Path(result.location) / "model.gguf")
    kinds = {t.tensor_type.name for t in reader.tensors}
    assert kinds == {"BF16", "F32"} and value(fields, "general.file_type") == gguf.LlamaFileType.MOSTLY_BF16
    assert len(reader.tensors) == 20  # the QLoRA base was de-quantized: no scales or biases tensors


def test_unsupported_architecture_is_refused_before_anything_is_written(trained_run, tiny_model, tmp_path):
    config = json.loads((tiny_model / "config.json").read_text())
    with pytest.raises(ProblemError, match="GGUF export supports llama, mistral, qwen2, qwen3.*'phi3'"):
        gguf_export.plan_gguf(tiny_model, {**config, "model_type": "phi3"})
    with pytest.raises(ProblemError, match="RoPE scaling 'longrope'"):
        gguf_export.plan_gguf(tiny_model, {**config, "rope_scaling": {"rope_type": "longrope"}})
    with pytest.raises(ProblemError, match="every 6th layer.*sliding_window_pattern 2"):
        gguf_export.plan_gguf(tiny_model, {**config, "model_type": "gemma3_text", "sliding_window_pattern": 2})


def test_unknown_pre_tokenizer_is_refused_with_the_reason(tiny_model, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for f in tiny_model.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "add_prefix_space": False,
                                                        "trim_offsets": True, "use_regex": True}]}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((folder / "config.json").read_text())
    with pytest.raises(ProblemError, match="does not know this tokenizer's pre-tokenizer"):
        gguf_export.plan_gguf(folder, config)


def test_refused_export_leaves_nothing(tiny_model, trained_run, tmp_path, monkeypatch):
    original = gguf_export.plan_gguf
    monkeypatch.setattr(gguf_export, "plan_gguf", lambda base, config, *a, **k: original(
        base, {**config, "model_type": "phi3"}, *a, **k))
    with pytest.raises(ProblemError, match="'phi3'"):
        export(trained_run, "gguf", tmp_path / "out" / "g")
    assert not (tmp_path / "out").exists()


# --- atomic, cancel -----------------------------------------------------------------------------------


def test_stopped_export_leaves_nothing(trained_run, tmp_path):
    control = JobControl()

    def stop_when_writing(event):
        if isinstance(event, Stage) and "model.gguf" in event.message:
            control.request_stop()

    with pytest.raises(jobs.Cancelled):
        export(trained_run, "ollama", tmp_path / "exports" / "o", emit=stop_when_writing, control=control)
    assert not (tmp_path / "exports").exists()


def test_failed_write_leaves_nothing(trained_run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", broken)
    (tmp_path / "exports").mkdir()
    with pytest.raises(OSError, match="disk full"):
        export(trained_run, "gguf", tmp_path / "exports" / "g")
    assert list((tmp_path / "exports").iterdir()) == []


# --- Ollama -------------------------------------------------------------------------------------------


def test_ollama_modelfile_beside_the_gguf(trained_run, tiny_model, tmp_path):
    result, _ = export(trained_run, "ollama", tmp_path / "o", system="You answer briefly.", name="tiny-test")
    folder = Path(result.location)
    assert result.files == ("Modelfile", "model.gguf")
    assert result.command == f'cd "{folder}" && ollama create tiny-test -f Modelfile'
    text = (folder / "Modelfile").read_text()
    assert "FROM ./model.gguf\n" in text and 'SYSTEM """You answer briefly."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    template = text.split('TEMPLATE """')[1].split('"""')[0]
    chat_template = (tiny_model / "chat_template.jinja").read_text()
    for messages in ollama.SAMPLES:
        assert ollama.render_go(template, messages) == ollama.render_jinja(chat_template, messages)


@pytest.mark.parametrize("file, bos, eos, family", [
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", "llama3.1"),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", "llama3.1"),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>", "chatml (default system prompt)"),
    ("Qwen-Qwen3-0.6B.jinja", "", "<|im_end|>", "chatml"),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>", "mistral (tekken)"),
    ("mistral-7b-instruct-v0.3.jinja", "<s>", "</s>", "mistral"),
    ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>", "gemma"),
    ("gemma-3-it.jinja", "<bos>", "<eos>", "gemma"),
    ("llama-3-8b-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", "llama3"),
])
def test_known_chat_templates_translate_and_render_the_same(file, bos, eos, family):
    chat_template = (TEMPLATES / file).read_text()
    translation = ollama.translate(chat_template, bos, eos)
    assert translation.family == family and eos in translation.stops
    for messages in ollama.SAMPLES:
        try:
            expected = ollama.render_jinja(chat_template, messages, bos, eos).removeprefix(bos)
        except Exception:
            continue  # e.g. Gemma 2 refuses a system message
        assert ollama.render_go(translation.template, messages) == expected


def test_unknown_chat_template_falls_back_with_the_reason():
    odd = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    translation = ollama.translate(odd, "", "</s>")
    assert translation.template is None and "none of the known families" in translation.reason
    text = ollama.modelfile("model.gguf", translation)
    assert 'TEMPLATE """' not in text and 'PARAMETER stop "</s>"' in text and "none of the known" in text
    assert ollama.translate(None).reason == "the model has no chat template"


def test_go_template_subset():
    data = {"Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}], "System": ""}
    template = ('{{- $n := 0 }}{{ range $i, $m := .Messages }}{{ $n = $i }}'
                '{{- if eq .Role "user" }}U:{{ .Content }}{{ else if eq .Role "x" }}?{{ else }} A:{{ $m.Content }}'
                '{{- end }}{{ end }} last={{ $n }} {{ if not $.System }}none{{ end }}'
                '{{ len (slice $.Messages 1) }}')
    assert gotemplate.render(template, data) == "U:a A:b last=1 none1"
    assert gotemplate.render("a \n{{- .System -}} \n b{{/* note */}}", data) == "ab"
    with pytest.raises(gotemplate.TemplateError, match="unknown function 'index'"):
        gotemplate.render("{{ index .Messages 0 }}", data)


# --- LM Studio ------------------------------------------------------------------------------------------


def test_lmstudio_export_appears_where_discovery_looks(trained_run, tmp_path, monkeypatch):
    home = tmp_path / "home"
    downloads = tmp_path / "LMStudioModels"
    downloads.mkdir(parents=True)
    (home / ".lmstudio").mkdir(parents=True)
    (home / ".lmstudio" / "settings.json").write_text(json.dumps({"downloadsFolder": str(downloads)}))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    assert exports.lmstudio_models_dir() == downloads
    result, _ = export(trained_run, "lmstudio", name="tiny-chat")
    assert result.location == str(downloads / "macfinetune" / "tiny-chat")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(result.files)
    found = models_catalog.discover([models_catalog.ModelSource("lmstudio", downloads)], supported={"llama"})
    assert [(e.name, e.supported) for e in found] == [("macfinetune/tiny-chat", True)]
    net, _, _ = models.load_model(Path(result.location))  # loads as a plain MLX model
    assert net is not None


def test_lmstudio_export_refuses_an_existing_name(trained_run, tmp_path):
    (tmp_path / "models" / "macfinetune" / "taken").mkdir(parents=True)
    with pytest.raises(ProblemError, match="already exists"):
        exports.plan_export(trained_run, "last", "lmstudio", tmp_path / "models", name="taken")


# --- Hugging Face hub (a local fake of its upload API) ---------------------------------------------------


class UploadHub:
    """create / exists / preupload (every file 'regular') / commit / delete, recorded."""

    def __init__(self):
        self.repos, self.created, self.deleted, self.commits, self.posts = {}, [], [], [], []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.get(self)

            def do_POST(self):
                hub.post(self)

            def do_DELETE(self):
                hub.delete(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def body(self, h):
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def get(self, h):
        parts = unquote(urlparse(h.path).path).strip("/").split("/")
        repo = "/".join(parts[2:4])
        if repo in self.repos:
            return self.send(h, 200, {"id": repo, "sha": "0" * 40, "private": self.repos[repo]["private"],
                                      "siblings": []})
        self.send(h, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    def post(self, h):
        path = unquote(urlparse(h.path).path).strip("/")
        body = self.body(h)
        if path == "api/repos/create":
            info = json.loads(body)
            repo = f"{info['organization']}/{info['name']}"
            self.created.append(info)
            self.repos[repo] = {"private": info.get("visibility") == "private", "files": {}}
            return self.send(h, 200, {"url": f"{self.url}/{repo}"})
        if path == "api/validate-yaml":  # the hub checks a README's metadata before the commit
            return self.send(h, 200, {})
        parts = path.split("/")
        repo = "/".join(parts[2:4])
        self.posts.append(path)
        if len(parts) < 5:
            return self.send(h, 404, {"error": f"unknown POST {path}"})
        if parts[4] == "preupload":
            files = json.loads(body)["files"]
            return self.send(h, 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                for f in files]})
        if parts[4] == "commit":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            files = {v["value"]["path"]: base64.b64decode(v["value"]["content"]) for v in lines if v["key"] == "file"}
            self.commits.append((repo, files))
            self.repos[repo]["files"].update(files)
            return self.send(h, 200, {"commitUrl": f"{self.url}/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40})
        self.send(h, 404, {})

    def delete(self, h):
        info = json.loads(self.body(h))
        repo = f"{info['organization']}/{info['name']}"
        self.deleted.append(repo)
        self.repos.pop(repo, None)
        self.send(h, 200, {})

    @staticmethod
    def send(h, status, obj, headers=None):
        data = json.dumps(obj).encode()
        h.send_response(status)
        for key, v in {**(headers or {}), "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            h.send_header(key, v)
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def upload_hub(monkeypatch):
    from huggingface_hub import constants

    from macfinetune.core import secrets

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(secrets, "load_hf_token", lambda: "hf_test_token")
    hub = UploadHub()
    yield hub
    hub.close()


def test_hub_upload_of_the_fused_model_with_a_model_card(trained_run, upload_hub):
    result, events = export(trained_run, "hub", "me/tiny-tuned", checkpoint="best", endpoint=upload_hub.url)
    assert upload_hub.created[0]["visibility"] == "private" and len(upload_hub.commits) == 1
    files = upload_hub.repos["me/tiny-tuned"]["files"]
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert set(result.files) == set(files) and result.location.endswith("me/tiny-tuned")
    card = files["README.md"].decode()
    best = json.loads((trained_run / "status.json").read_text())
    assert f"iteration {best['best_iteration']} (validation loss {best['best_val_loss']:.4f})" in card
    assert "**LORA**" in card and "- train: " in card and "## Recipe" in card and "checkpoint **12**" in card
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == sum(len(d) for d in files.values())


def test_hub_upload_of_adapters(trained_run, upload_hub):
    result, _ = export(trained_run, "hub", "me/tiny-adapters", contents="adapters", private=False,
                       endpoint=upload_hub.url)
    assert set(upload_hub.repos["me/tiny-adapters"]["files"]) == {"README.md", "adapter_config.json",
                                                                  "adapters.safetensors"}
    assert upload_hub.created[0]["visibility"] == "public"
    assert "--adapter-path me/tiny-adapters" in upload_hub.repos["me/tiny-adapters"]["files"]["README.md"].decode()


@pytest.mark.parametrize("offline", [True, False])
def test_an_unreachable_hub_stops_the_upload_before_the_model_is_fused(trained_run, monkeypatch, offline):
    """Offline mode, or no network (a closed port here): said in seconds, in upload words, and nothing is loaded
    or fused first."""
    import socket

    from huggingface_hub import constants

    from macfinetune.backend import fusing

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # the port is free again once closed: nothing listens
    fused = []
    monkeypatch.setattr(fusing, "save_fused", lambda *a, **k: fused.append(a))
    reason = ("offline mode is on \\(HF_HUB_OFFLINE is set\\); unset it to upload" if offline else
              "no network connection to huggingface.co; nothing was uploaded")
    with pytest.raises(ProblemError, match=f"could not upload to 'me/offline': {reason}") as e:
        export(trained_run, "hub", "me/offline", endpoint=closed)
    assert "cached model" not in str(e.value) and fused == []


def test_the_hub_export_without_a_repository_says_to_pass_out(trained_run):
    with pytest.raises(ProblemError, match="repository id like 'your-name/model-name'; pass --out your-name/model-name"):
        export(trained_run, "hub", None)


def test_stopped_upload_commits_nothing_and_removes_the_new_repo(trained_run, upload_hub):
    control = JobControl()

    def stop_after_first_file(event):
        if isinstance(event, Progress):
            control.request_stop()

    with pytest.raises(jobs.Cancelled):
        export(trained_run, "hub", "me/stopped", endpoint=upload_hub.url, emit=stop_after_first_file,
               control=control)
    assert upload_hub.commits == [] and upload_hub.deleted == ["me/stopped"]
    assert len([p for p in upload_hub.posts if p.endswith("/preupload/main")]) == 1  # stopped between files


# --- the plan, the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("target, dest, options, expected", [
    ("zip", None, {}, "export target must be one of gguf, ollama, lmstudio, hub, mlx, got 'zip'"),
    ("hub", "not-a-repo", {}, "repository id like 'your-name/model-name'; got 'not-a-repo'"),
    ("ollama", None, {"system": 'Talk like a "pirate" """ end'}, 'three double quotes in a row (""")'),
    ("gguf", None, {"dtype": "q4"}, "GGUF type must be one of f16, bf16, f32, got 'q4'"),
    ("gguf", None, {"system": "x"}, "the gguf export takes no option system"),
    ("ollama", None, {"name": "Bad Name"}, "name must be lower-case"),
])
def test_plan_refuses_bad_values_by_name(trained_run, target, dest, options, expected):
    with pytest.raises(ProblemError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        exports.plan_export(trained_run, "last", target, dest, **options)


def test_an_ollama_name_may_carry_a_tag(trained_run):
    plan = exports.plan_export(trained_run, "last", "ollama", name="pirate:v1")
    assert plan.options["name"] == "pirate:v1" and ":" not in Path(plan.location).name  # the folder keeps the run's
    with pytest.raises(ProblemError, match="with an optional :tag, got 'pirate:v1:x'"):
        exports.plan_export(trained_run, "last", "ollama", name="pirate:v1:x")


def test_plan_default_locations(trained_run):
    plan = exports.plan_export(trained_run, "last", "ollama")
    assert plan.location == str(trained_run / "exports" / "lora-12-ollama") and plan.name == "lora-12"
    assert exports.plan_export(trained_run, "best", "hub", "me/x").location == "me/x"


def test_cli_export_prints_where_it_went_and_the_ollama_command(trained_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", trained_run, "--target", "ollama", "--checkpoint", "last",
                             "--out", tmp_path / "o", "--name", "tiny")
    assert code == 0, err
    assert f"ollama export: {tmp_path / 'o'}" in out and "ollama create tiny -f Modelfile" in out


def test_cli_export_errors_name_the_value(trained_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", trained_run, "--target", "gguf", "--checkpoint", "99")
    assert code == 2 and "there is no checkpoint 99" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "export", trained_run, "--target", "hub", "--out", "x")
    assert code == 2 and "got 'x'" in err
    code, out, err = run_cli(capsys, "export", trained_run, "--target", "gguf", "--out", trained_run)
    assert code == 2 and "already exists" in err


def test_export_job_runs_on_the_engine_contract(trained_run, tmp_path):
    """exporting.run_export is what the job runs; a plan checked once is enough to run it."""
    plan = exports.plan_export(trained_run, "last", "mlx", tmp_path / "m")
    result = exporting.run_export(plan, lambda e: None)
    assert result.target == "mlx" and (tmp_path / "m" / "config.json").is_file()
