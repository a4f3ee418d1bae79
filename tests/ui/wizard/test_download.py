"""The Model step's Download through the real engine and session, against a local fake of the hub:
progress in bytes and files, the model selected when it lands, Cancel, and offline said in words."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QLineEdit
from test_hub import PIECE, FakeHub

from macfinetune.engine import Engine

from .test_wizard import button

REPO = "org/tiny"


@pytest.fixture
def hub_files(tiny_model) -> dict:
    return {f.name: f.read_bytes() for f in tiny_model.iterdir() if f.is_file()}


@pytest.fixture
def online(monkeypatch):
    """The hub client online (conftest sets HF_HUB_OFFLINE=1), reading small chunks."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", PIECE)


@pytest.fixture
def serve(monkeypatch):
    hubs = []

    def make(repos, slow=frozenset()) -> FakeHub:
        hubs.append(FakeHub(repos, slow))
        monkeypatch.setenv("HF_ENDPOINT", hubs[-1].url)
        return hubs[-1]

    yield make
    for h in hubs:
        h.close()


@pytest.fixture
def model_step(qtbot, hub_cache, settings):
    from macfinetune.ui.main_window import create_main_window

    engine = Engine()
    engine.start()
    window = create_main_window(engine, settings)
    window.resize(1100, 760)
    window.show()
    window.show_page("new")
    page = window.pages["new"]
    yield page.steps["model"]
    assert engine.shutdown(60_000)
    page.shutdown()
    window.close()
    window.deleteLater()
    QApplication.processEvents()


def status(step) -> str:
    return step.findChild(QLabel, "downloadStatus").text()


def click_download(qtbot, step, repo: str = REPO) -> None:
    step.findChild(QLineEdit, "hubId").setText(repo)
    qtbot.mouseClick(button(step, "download"), Qt.MouseButton.LeftButton)


def seen_statuses(qtbot, step, until: str, timeout: int = 60_000) -> list[str]:
    """Every text the status label showed (polled) until one starts with ``until``."""
    texts: list[str] = []

    def reached() -> bool:
        if not texts or texts[-1] != status(step):
            texts.append(status(step))
        return texts[-1].startswith(until)

    qtbot.waitUntil(reached, timeout=timeout)
    return texts


def test_download_shows_bytes_and_files_then_selects_the_model(qtbot, online, serve, hub_cache, hub_files,
                                                              model_step):
    serve({REPO: hub_files}, slow=frozenset({"model.safetensors"}))
    click_download(qtbot, model_step)
    assert model_step.cancel_button.isEnabled() and not model_step.download_button.isEnabled()
    texts = seen_statuses(qtbot, model_step, "Downloaded")
    progress = [t for t in texts if re.fullmatch(rf"Downloading {REPO}: [\d.]+ kB of [\d.]+ kB, \d/6 files", t)]
    assert len(progress) >= 2 and progress[0] != progress[-1], texts  # it moved while the label was watched
    assert texts[-1] == f"Downloaded {REPO}."
    folder = model_step.page.state.values["model"]["path"]
    assert folder.startswith(str(hub_cache / "models--org--tiny" / "snapshots"))
    assert model_step.path_edit.text() == folder and model_step.page.state.shape.layers == 2
    assert "<b>" in model_step.facts.text() and "parameters" in model_step.facts.text()
    assert not model_step.cancel_button.isEnabled() and model_step.download_button.isEnabled()


def test_cancel_stops_the_download_and_says_it_resumes(qtbot, online, serve, hub_files, model_step):
    h = serve({REPO: hub_files}, slow=frozenset({"model.safetensors"}))
    click_download(qtbot, model_step)
    qtbot.waitUntil(lambda: bool(h.gets("model.safetensors")), timeout=60_000)  # the weights are moving
    qtbot.mouseClick(model_step.cancel_button, Qt.MouseButton.LeftButton)
    assert status(model_step) == "Cancelling the download…"
    seen_statuses(qtbot, model_step, "Download cancelled")
    assert status(model_step) == "Download cancelled; starting it again resumes where it stopped."
    assert model_step.page.state.values["model"]["path"] == ""
    assert model_step.download_button.isEnabled() and not model_step.cancel_button.isEnabled()


def test_offline_says_so_in_words(qtbot, serve, hub_files, model_step):
    serve({REPO: hub_files})  # the hub is there, but HF_HUB_OFFLINE=1 (conftest) forbids asking it
    click_download(qtbot, model_step)
    seen_statuses(qtbot, model_step, "Download failed")
    assert "offline" in status(model_step) and "not in the local cache" in status(model_step)
    assert "Traceback" not in status(model_step)
