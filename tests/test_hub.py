"""Hub downloads against a local fake of the Hugging Face API (offline), and MLX conversion."""

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest

from macfinetune.backend import hub
from macfinetune.core.control import JobControl
from macfinetune.core.events import Stage
from macfinetune.core.models_catalog import DownloadFinished, DownloadProgress
from macfinetune.core.problems import ProblemError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SUPPORTED = frozenset({"llama"})
CONFIG = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode()
PIECE = 32 * 1024


class FakeHub:
    """The endpoints snapshot_download uses: repo info, file tree, HEAD/GET resolve (with Range)."""

    def __init__(self, repos: dict, slow: frozenset = frozenset()):
        self.repos, self.slow, self.requests = repos, slow, []
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub_.serve(self, body=False)

            def do_GET(self):
                hub_.serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def gets(self, name):
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith("/" + name)]

    def serve(self, h, body):
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        try:
            if parts[:2] == ["api", "models"]:
                return self.api(h, "/".join(parts[2:4]), parts[4])
            return self.resolve(h, "/".join(parts[:2]), "/".join(parts[4:]), body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client cancelled

    def api(self, h, repo, what):
        files = self.repos.get(repo)
        if files is None:
            return self.send(h, 404, b"", {"X-Error-Code": "RepoNotFound"})
        if what == "revision":
            info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
        else:
            info = [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                    for f, d in files.items()]
        self.send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def resolve(self, h, repo, name, body):
        data = self.repos.get(repo, {}).get(name)
        if data is None:
            return self.send(h, 404, b"", {"X-Error-Code": "EntryNotFound"})
        start = int(h.headers["Range"].split("=")[1].split("-")[0]) if h.headers.get("Range") else 0
        h.send_response(206 if start else 200)
        for key, value in {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                           "Content-Length": str(len(data) - start)}.items():
            h.send_header(key, value)
        h.end_headers()
        for i in range(start, len(data) if body else start, PIECE):
            h.wfile.write(data[i : i + PIECE])
            h.wfile.flush()
            if name in self.slow:
                time.sleep(0.1)

    @staticmethod
    def send(h, status, data, headers):
        h.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def online(monkeypatch):
    """The hub client online (conftest sets HF_HUB_OFFLINE=1), reading small chunks."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", PIECE)


@pytest.fixture
def fake_hub():
    hubs = []

    def make(repos, slow=frozenset()):
        hubs.append(FakeHub(repos, slow))
        return hubs[-1]

    yield make
    for h in hubs:
        h.close()


SHARD_1, SHARD_2 = os.urandom(4 * PIECE), os.urandom(8 * PIECE)
MODEL = {"config.json": CONFIG, "tokenizer.json": b"{}", "tokenizer_config.json": b"{}",
         "model-00001-of-00002.safetensors": SHARD_1, "model-00002-of-00002.safetensors": SHARD_2,
         "consolidated.safetensors": b"duplicate weights", "pytorch_model.bin": b"pickle", "modeling_x.py": b"code",
         "README.md": b"# card"}


def download(h, tmp_path, **kwargs):
    return hub.download_model("org/model", cache_dir=tmp_path / "cache", endpoint=h.url, supported=SUPPORTED,
                              **kwargs)


def test_download_fetches_only_what_mlx_lm_needs(online, fake_hub, tmp_path):
    h = fake_hub({"org/model": MODEL})
    events = []
    folder = download(h, tmp_path, emit=events.append)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model-00001-of-00002.safetensors",
                                                        "model-00002-of-00002.safetensors", "tokenizer.json",
                                                        "tokenizer_config.json"]
    assert (folder / "model-00002-of-00002.safetensors").read_bytes() == SHARD_2
    assert folder.parent.parent.name == "models--org--model" and folder.name == COMMIT
    progress = [e for e in events if isinstance(e, DownloadProgress)]
    assert [p.done_bytes for p in progress] == sorted(p.done_bytes for p in progress)
    assert progress[-1].files_done == progress[-1].files_total == 5
    assert progress[-1].done_bytes == progress[-1].total_bytes == len(SHARD_1) + len(SHARD_2)
    assert events[-1] == DownloadFinished("org/model", str(folder))


def test_cancel_then_resume(online, fake_hub, tmp_path):
    h = fake_hub({"org/model": MODEL}, slow=frozenset({"model-00002-of-00002.safetensors"}))
    control = JobControl()

    def stop_after_first_shard(event):
        if isinstance(event, DownloadProgress) and event.done_bytes >= len(SHARD_1) + 10:
            control.request_stop()

    with pytest.raises(hub.DownloadCancelled):
        download(h, tmp_path, emit=stop_after_first_shard, control=control)
    snapshot = tmp_path / "cache" / "models--org--model" / "snapshots" / COMMIT
    assert (snapshot / "model-00001-of-00002.safetensors").read_bytes() == SHARD_1
    assert not (snapshot / "model-00002-of-00002.safetensors").exists()
    with pytest.raises(ProblemError, match="only part of the model is in the local cache"):
        download(h, tmp_path, offline=True)
    before = len(h.gets("model-00001-of-00002.safetensors"))
    folder = download(h, tmp_path)
    assert (folder / "model-00002-of-00002.safetensors").read_bytes() == SHARD_2
    assert len(h.gets("model-00001-of-00002.safetensors")) == before  # finished files are not fetched again


@pytest.mark.parametrize(
    "files, expected",
    [({"config.json": CONFIG, "pytorch_model.bin": b"pickle", "tokenizer.json": b"{}"}, "only pickle weights"),
     ({"config.json": json.dumps({"model_type": "my_lm", "auto_map": {"AutoModel": "m.M"}}).encode(),
       "model.safetensors": b"w", "modeling.py": b"code", "tokenizer.json": b"{}"}, "own Python code"),
     ({"config.json": json.dumps({"model_type": "bert"}).encode(), "model.safetensors": b"w",
       "tokenizer.json": b"{}"}, "no implementation of model_type 'bert'")],
)
def test_unusable_models_are_refused_before_weights_move(online, fake_hub, tmp_path, files, expected):
    h = fake_hub({"org/model": files})
    with pytest.raises(ProblemError, match=expected):
        download(h, tmp_path)
    assert not [r for r in h.requests if r[0] == "GET" and r[1].endswith((".safetensors", ".bin", ".py"))]


def test_unknown_repository(online, fake_hub, tmp_path):
    h = fake_hub({})
    with pytest.raises(ProblemError, match="no such repository"):
        download(h, tmp_path)


def test_no_network_answers_from_the_cache_at_once_without_retries(online, tmp_path, monkeypatch):
    """huggingface.co unreachable (a closed port here): one request finds it out and the model comes from the cache
    or is refused; the API calls that huggingface_hub retries for about 20 s (printing each retry) are not made."""
    import socket

    from huggingface_hub import HfApi

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    retried = []
    monkeypatch.setattr(HfApi, "list_repo_files", lambda *a, **k: retried.append(a) or [])
    with pytest.raises(ProblemError) as info:
        hub.download_model("org/never-downloaded", cache_dir=tmp_path, endpoint=closed, supported=SUPPORTED)
    assert "not in the local cache" in info.value.problems[0].message and retried == []


def test_offline_and_not_cached_fails_clearly(tmp_path):
    with pytest.raises(ProblemError) as info:
        hub.download_model("org/never-downloaded", cache_dir=tmp_path, supported=SUPPORTED)
    (problem,) = info.value.problems
    assert "offline" in problem.message and problem.value == "org/never-downloaded"


@pytest.mark.parametrize(
    "error_name, expected",
    [("ConnectError", "no network connection"), ("GatedRepoError", "gated"),
     ("LocalEntryNotFoundError", "offline"), ("ValueError", "ValueError: boom")],
)
def test_hub_errors_become_sentences(error_name, expected):
    error = type(error_name, (Exception,), {})("boom")  # the hub client's types, matched by name
    assert expected in hub.hub_reason(error)


# --- conversion to MLX --------------------------------------------------------------------------


def test_convert_quantizes_in_process(tiny_model, tmp_path):
    from mlx_lm.utils import load

    from macfinetune.backend.convert import convert_model
    from macfinetune.core import models_catalog

    events = []
    out = convert_model(tiny_model, bits=8, group_size=32, out=tmp_path / "tiny-8bit", emit=events.append)
    assert models_catalog.describe(out).quantization == "8-bit (group 32)"
    assert [e.message for e in events if isinstance(e, Stage)][0] == "Loading the model"
    assert not list(tmp_path.glob(".*converting"))
    model, tokenizer = load(str(out))
    assert tokenizer.encode("the owl")


def test_convert_captures_only_mlx_lm_prints(tiny_model, tmp_path, capfd):
    """mlx-lm's lines become events; a print from another thread during the conversion still reaches stdout."""
    from macfinetune.backend.convert import convert_model

    def emit(event):
        events.append(event)
        if len(events) == 1:  # inside mlx-lm's convert(), while its prints are captured
            other = threading.Thread(target=print, args=("printed by another thread",))
            other.start()
            other.join()

    events = []
    convert_model(tiny_model, bits=4, group_size=32, out=tmp_path / "q", emit=emit)
    out, _ = capfd.readouterr()
    assert out == "printed by another thread\n"
    messages = [e.message for e in events]
    assert messages[0] == "Loading the model" and "Quantizing" in messages
    import mlx_lm.convert
    import mlx_lm.utils

    assert "print" not in vars(mlx_lm.convert) and "print" not in vars(mlx_lm.utils)  # the builtin again


def test_quantizing_a_loaded_model_prints_nothing(tiny_model, tmp_path, capfd):
    from macfinetune.backend.models import quantize_into

    quantize_into(tiny_model, tmp_path / "q", 4, 32)
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize(
    "kwargs, expected",
    [({"bits": 3}, "4 or 8 bits"), ({"bits": 4, "group_size": 48}, "group size"), ({"out": "EXISTS"}, "already exists")],
)
def test_convert_refuses_bad_options(tiny_model, tmp_path, kwargs, expected):
    from macfinetune.backend.convert import convert_model

    if kwargs.get("out") == "EXISTS":
        kwargs["out"] = tmp_path
    with pytest.raises(ProblemError, match=expected):
        convert_model(tiny_model, **kwargs)


def test_convert_refuses_quantized_and_unsupported_models(tiny_model_q4, tmp_path):
    from macfinetune.backend.convert import convert_model, default_output

    with pytest.raises(ProblemError, match="already quantized"):
        convert_model(tiny_model_q4, bits=4, out=tmp_path / "q")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    (bert / "model.safetensors").write_bytes(b"w")
    with pytest.raises(ProblemError, match="no implementation"):
        convert_model(bert, out=tmp_path / "b")
    assert default_output("org/Qwen3-0.6B", 4).name == "Qwen3-0.6B-4bit-mlx"
