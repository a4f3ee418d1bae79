"""Secrets and code: the token stays in the keychain; repository code is never fetched or run."""

import io
import sys

import keyring
import pytest
from keyring.backend import KeyringBackend

from macfinetune import cli
from macfinetune.backend import models
from macfinetune.core import secrets
from macfinetune.core.problems import ProblemError

TOKEN = "hf_SECRET_test_token_123"


class MemoryKeyring(KeyringBackend):
    priority = 1

    def __init__(self):
        self.store = {}

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def get_password(self, service, username):
        return self.store.get((service, username))

    def delete_password(self, service, username):
        self.store.pop((service, username))


@pytest.fixture
def memory_keyring():
    previous = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


def test_login_keeps_the_token_in_the_keychain_only(memory_keyring, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO(TOKEN + "\n"))
    assert cli.main(["login"]) == 0
    assert memory_keyring.store[(secrets.SERVICE, secrets.ACCOUNT)] == TOKEN
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    seen = {}

    def fake_snapshot(repo_id, allow_patterns, token):
        seen.update(repo=repo_id, patterns=allow_patterns, token=token)
        raise OSError("no network in tests")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    with pytest.raises(ProblemError) as info:
        models.resolve_model_path("org/private-model")
    assert seen["token"] == TOKEN and TOKEN not in str(info.value)
    assert "model*.safetensors" in seen["patterns"] and not any(p.endswith(".py") for p in seen["patterns"])
    assert cli.main(["logout"]) == 0 and secrets.load_hf_token() is None


def test_without_a_keychain_login_says_what_to_do_instead(monkeypatch, capsys):
    from keyring.backends.fail import Keyring as NoKeyring

    previous = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())
    try:
        monkeypatch.setattr(sys, "stdin", io.StringIO(TOKEN + "\n"))
        assert cli.main(["login"]) == 2
        _, err = capsys.readouterr()
        assert "HF_TOKEN" in err and TOKEN not in err
        assert secrets.load_hf_token() is None
    finally:
        keyring.set_keyring(previous)


def test_models_load_without_trusting_remote_code(tiny_model, monkeypatch):
    import mlx_lm.utils

    calls = []
    real = mlx_lm.utils.load
    monkeypatch.setattr(mlx_lm.utils, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    models.load_model(tiny_model)
    assert calls and calls[0]["trust_remote_code"] is False
