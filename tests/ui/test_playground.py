"""The Playground on the tiny model through the real engine: both panes stream, Stop stops, the models stay
loaded between prompts, a checkpoint switch loads only adapter weights, multi-turn keeps the history; and
the page's intent with a fake engine (what each job is asked, when asking is allowed)."""

import re
import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from macfinetune import jobs
from macfinetune.backend import generation
from macfinetune.core import sample_run
from macfinetune.core.chat import BASE, TUNED
from macfinetune.core.events import JobStarted, ModelLoaded, TokenChunk
from macfinetune.engine import Engine
from macfinetune.ui.main_window import create_main_window

from .conftest import start_job

SPEED = re.compile(r"^\d+ tokens? · \d+\.\d tokens/s")


@pytest.fixture
def run_in_data(trained_run, tmp_path):
    """The shared trained run (checkpoints 4, 8, 12) inside this test's data folder."""
    return shutil.copytree(trained_run, tmp_path / "data" / "runs" / "20261203-lora")


@pytest.fixture
def real(qtbot, settings, run_in_data):
    generation._CACHE = None  # count this test's loads only
    engine = Engine()
    engine.start()
    window = create_main_window(engine, settings)
    window.resize(1100, 720)
    window.show()
    window.show_page("playground")
    page = window.pages["playground"]
    seen = []
    window.session.jobEvent.connect(lambda job_event: seen.append(job_event.event))
    page.controls.temperature.setValue(0.0)
    page.controls.max_tokens.setValue(40)
    yield page, seen
    assert engine.shutdown(60_000)
    window.pages["runs"].wait_for_scan()
    window.close()
    window.deleteLater()
    QApplication.processEvents()


def idle(page) -> bool:
    return not page._jobs


def ask(qtbot, page, text: str) -> None:
    page.prompt.setPlainText(text)
    qtbot.keyClick(page.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert not idle(page)
    qtbot.waitUntil(lambda: idle(page), timeout=60_000)


def loaded(seen) -> list[ModelLoaded]:
    return [e for e in seen if isinstance(e, ModelLoaded)]


def test_both_panes_stream_and_the_second_prompt_reuses_the_models(real, qtbot):
    page, seen = real
    assert page.checkpoint_box.currentText() == "12 (best)"
    page.controls.max_tokens.setValue(80)
    ask(qtbot, page, "Tell me about the sea.")
    chunks = {pane: [e.text for e in seen if isinstance(e, TokenChunk) and e.source == pane] for pane in (BASE, TUNED)}
    for pane in (BASE, TUNED):
        assert len(chunks[pane]) >= 2, chunks  # streamed, not one block
        assert page.panes[pane].text().endswith("".join(chunks[pane]))
        assert SPEED.match(page.panes[pane].speed.text()), page.panes[pane].speed.text()
    assert "Tell me about the sea." in page.panes[BASE].text()
    assert [(e.pane, e.reused, e.swapped) for e in loaded(seen)] == [(BASE, False, False), (TUNED, True, True)]
    assert page.panes[BASE].load.text().startswith("model loaded in")

    ask(qtbot, page, "And the mountains?")
    assert [(e.pane, e.reused, e.swapped) for e in loaded(seen)[2:]] == [(BASE, True, False), (TUNED, True, False)]
    assert page.panes[TUNED].load.text() == "model already loaded"
    assert generation.model_cache().loads == 1


def test_multi_turn_keeps_each_panes_history(real, qtbot):
    page, seen = real
    ask(qtbot, page, "Tell me about the sea.")
    ask(qtbot, page, "And the mountains?")
    turns = page.conversations[TUNED].turns
    assert [role for role, _ in turns] == ["user", "assistant", "user", "assistant"]
    assert page.panes[TUNED].text().count("You") == 2
    with_history = turns[-1][1]
    page.new_chat()
    assert page.conversations[TUNED].turns == () and page.panes[TUNED].text() == ""
    ask(qtbot, page, "And the mountains?")
    assert page.conversations[TUNED].turns[-1][1] != with_history  # the earlier turns were part of the prompt


def test_stop_ends_the_answer_and_cancels_the_queued_one(real, qtbot):
    page, seen = real
    page.controls.temperature.setValue(1.0)
    page.controls.max_tokens.setValue(1000)
    page.prompt.setPlainText("Write a long story.")
    page.send_button.click()
    qtbot.waitUntil(lambda: any(isinstance(e, TokenChunk) for e in seen), timeout=60_000)
    assert page.stop_button.isEnabled()
    page.stop_button.click()
    qtbot.waitUntil(lambda: idle(page), timeout=60_000)
    assert page.panes[BASE].speed.text().endswith("· stopped")
    assert int(page.panes[BASE].speed.text().split()[0]) < 1000
    assert page.panes[TUNED].load.text() == "⚠ stopped before it answered"
    for pane in (BASE, TUNED):  # both panes keep the question
        assert "You\nWrite a long story." in page.panes[pane].text()
    assert page.conversations[TUNED].turns == () and page.conversations[BASE].turns[-1][0] == "assistant"
    assert page.send_button.isEnabled() is False  # the prompt box is empty again
    page.prompt.setPlainText("again")
    assert page.send_button.isEnabled() and not page.stop_button.isEnabled()


def test_checkpoint_switch_loads_only_the_adapter_weights(real, qtbot):
    page, seen = real
    page.checkpoint_box.setCurrentIndex(page.checkpoint_box.findData(4))
    ask(qtbot, page, "Hello")
    page.checkpoint_box.setCurrentIndex(page.checkpoint_box.findData(8))
    assert page.panes[TUNED].title.text() == "Tuned · checkpoint 8"
    ask(qtbot, page, "Hello")
    switched = loaded(seen)[-1]
    assert (switched.pane, switched.reused, switched.swapped) == (TUNED, True, True)
    assert switched.checkpoint == "0000008_adapters.safetensors"
    assert page.panes[TUNED].load.text().startswith("checkpoint loaded in")
    assert (generation.model_cache().loads, generation.model_cache().twins) == (1, 1)


def test_same_prompt_on_all_checkpoints_and_history_rerun(real, qtbot):
    page, seen = real
    ask(qtbot, page, "Hello")
    page.all_button.click()
    qtbot.waitUntil(lambda: idle(page), timeout=60_000)
    table = page.answers
    assert page.answers_box.isVisible() and table.labels() == ["4", "8", "12 (best)"]
    answers = [table.answer(f"checkpoint {it}") for it in (4, 8, 12)]
    assert all(answers) and all(SPEED.match(table.item(row, 2).text()) for row in range(3))
    assert answers[2] == page.conversations[TUNED].turns[1][1]  # checkpoint 12 answers as the tuned pane did
    assert generation.model_cache().loads == 1
    item = page.history_list.item(0)
    assert item.text() == "Hello"
    page.history_list.itemDoubleClicked.emit(item)
    qtbot.waitUntil(lambda: idle(page), timeout=60_000)
    assert page.panes[BASE].text().count("You") == 2


# --- the page's intent, with the fake engine ------------------------------------------------


@pytest.fixture
def page(window, runs_dir):
    run = runs_dir / "finished-run"
    from macfinetune.core import sample_chat

    sample_chat.write_sample_checkpoints(run)
    page = window.pages["playground"]
    page.refresh_runs()
    return page


def test_send_submits_one_chat_job_per_pane_with_the_conversation(page, engine, window):
    assert page.run_box.currentText() == "finished-run"
    page.controls.system.setText("Be brief.")
    page.controls.seed.setValue(7)
    page.prompt.setPlainText("Hi")
    page.send_button.click()
    (_, fn1, base), (_, fn2, tuned) = [c for c in engine.calls if c[0] == "chat"]
    assert fn1 is jobs.chat and fn2 is jobs.chat
    assert base["pane"] == BASE and base["adapter"] is None and base["model"] == "Qwen3-0.6B-bf16"
    assert tuned["adapter"][1] == "1000" and tuned["model"] is None
    assert tuned["messages"] == (("system", "Be brief."), ("user", "Hi"))
    assert tuned["sampling"].seed == 7
    assert not page.send_button.isEnabled() and page.stop_button.isEnabled()


def test_a_checkpoint_from_the_checkpoints_page_is_preselected(page, window, runs_dir):
    window.session.testPrompt.emit(str(runs_dir / "finished-run"), "300")
    assert page.checkpoint_box.currentText() == "300"
    window.session.testPrompt.emit(str(runs_dir / "finished-run"), "best")
    assert page.checkpoint_box.currentText() == "1000 (best)"


def test_no_asking_while_a_run_trains(page, engine, window):
    page.prompt.setPlainText("Hi")
    assert page.send_button.isEnabled()
    start_job(engine, window.session)
    assert not page.send_button.isEnabled() and page.notice.text().startswith("A run is training")
    engine.send(JobStarted())
    page.send()
    assert [c for c in engine.calls if c[0] == "chat"] == []


def test_empty_data_folder_says_how_to_get_a_run(window):
    window.show_page("playground")
    page = window.pages["playground"]
    assert page.run_box.count() == 0 and not page.send_button.isEnabled()
    assert page.notice.isVisible() and "No run with a saved checkpoint" in page.notice.text()


def test_sample_run_helper_writes_committed_checkpoints(tmp_path):
    from macfinetune.core import chat, sample_chat

    sample_run.write_sample_run(tmp_path / "r")
    assert sample_chat.write_sample_checkpoints(tmp_path / "r") == list(range(100, 1001, 100))
    assert chat.run_choice(tmp_path / "r").best == 1000


def test_a_prompt_beyond_the_models_context_is_refused_with_both_numbers(real, qtbot):
    page, seen = real
    ask(qtbot, page, "ship " * 3000)
    for pane in (BASE, TUNED):
        said = page.panes[pane].load.text()
        assert re.match(r"⚠ .*the conversation is [\d,]+ tokens and this model reads at most 1,024", said), said
        assert "ship ship" in page.panes[pane].text()  # the question stays in sight
    assert not [e for e in seen if isinstance(e, TokenChunk)]  # nothing was generated
