"""Fixtures for the wizard's Qt tests: Qt warnings fail, no widget or thread outlives its test."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QtMsgType, qInstallMessageHandler
from PySide6.QtWidgets import QApplication

from macfinetune.core.hardware import machine_from_memory
from macfinetune.ui.wizard import WizardPage, WizardServices, worker

# The offscreen platform says this for every shown window; it is about the platform, not our code.
_PLATFORM_NOISE = ("This plugin does not support propagateSizeHints()",)


@pytest.fixture(autouse=True)
def qt_warnings_fail(qapp):
    seen: list[str] = []

    def handler(kind, context, message):
        if kind != QtMsgType.QtDebugMsg and kind != QtMsgType.QtInfoMsg and message not in _PLATFORM_NOISE:
            seen.append(message)

    previous = qInstallMessageHandler(handler)
    yield
    qInstallMessageHandler(previous)
    assert seen == []


@pytest.fixture(autouse=True)
def no_leaked_widgets(qapp):
    before = set(QApplication.topLevelWidgets())
    yield
    QApplication.processEvents()
    leaked = [w for w in QApplication.topLevelWidgets() if w not in before and w.isVisible()]
    assert leaked == []


class FakeEngine:
    """Records what the wizard hands to the engine."""

    def __init__(self):
        self.started: list[tuple] = []
        self.monitor_shown = 0

    def train(self, recipe, run_dir, allow_over_budget):
        self.started.append((recipe, run_dir, allow_over_budget))

    def show_monitor(self):
        self.monitor_shown += 1


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so the scan sees only the folders a test adds."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def supported_types():
    from macfinetune.backend.architectures import supported_model_types

    return supported_model_types()


@pytest.fixture(scope="session")
def token_counter():
    from macfinetune.backend.tokens import token_counter

    return token_counter


@pytest.fixture(scope="session")
def template_renderer():
    from macfinetune.backend.chat_preview import template_renderer

    return template_renderer


@pytest.fixture
def fake_engine():
    return FakeEngine()


@pytest.fixture
def make_page(qtbot, hub_cache, fake_engine, supported_types, token_counter, template_renderer, tmp_path):
    pages = []

    def make(memory_gb: float = 16, folders=(), **overrides) -> WizardPage:
        services = WizardServices(machine=machine_from_memory(memory_gb), start_training=fake_engine.train,
                                  show_monitor=fake_engine.show_monitor, token_counter=token_counter,
                                  template_renderer=template_renderer,
                                  supported_types=supported_types, model_folders=list(folders),
                                  runs_home=lambda: tmp_path / "runs")
        for key, value in overrides.items():
            setattr(services, key, value)
        page = WizardPage(services)
        page.resize(1100, 800)
        page.show()
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.shutdown()
        page.close()
        page.deleteLater()
    QApplication.processEvents()
    assert worker.running() == []


def wait_data(qtbot, page, tokens: bool = True) -> None:
    """Until the Data step has read (and, with ``tokens``, tokenized) the data."""
    def ready():
        info = page.state.data
        return info is not None and not page.state.data_busy and (not tokens or info.longest_tokens is not None
                                                                   or bool(info.problem))
    qtbot.waitUntil(ready, timeout=60_000)
