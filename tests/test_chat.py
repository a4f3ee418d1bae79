"""core.chat: conversations, prompt history, token batching, run choices and the cache's release rule."""

import json
from pathlib import Path

import pytest

from macfinetune.core import chat, runs


def test_conversation_keeps_turns_and_puts_the_system_prompt_first():
    c = chat.Conversation().ask("hi").answer("hello").ask("and then?")
    assert c.waiting
    assert c.messages() == (("user", "hi"), ("assistant", "hello"), ("user", "and then?"))
    assert c.messages("  Be brief. ")[0] == ("system", "Be brief.")
    assert c.messages("   ") == c.messages()
    assert not c.answer("more").waiting


def test_undo_question_drops_only_an_unanswered_question():
    c = chat.Conversation().ask("a").answer("b")
    assert c.ask("c").undo_question() == c
    assert c.undo_question() == c


def test_as_dicts_names_a_bad_role():
    assert chat.as_dicts([("user", "x")]) == [{"role": "user", "content": "x"}]
    with pytest.raises(ValueError, match="'robot'"):
        chat.as_dicts([("robot", "x")])


def test_plain_prompt_joins_the_turns():
    assert chat.plain_prompt([("system", "S"), ("user", "U")]) == "S\n\nU\n\n"


def test_history_is_newest_first_without_duplicates_and_bounded():
    h = chat.PromptHistory(limit=3).add("a").add("b").add("  ").add("a").add("c").add("d")
    assert h.prompts == ("d", "c", "a")
    assert chat.PromptHistory().add("a").add("b").add(" a ").prompts == ("a", "b")


def test_history_label_shortens_and_marks_more_lines():
    assert chat.history_label("short") == "short"
    assert chat.history_label("x" * 80, width=10) == "x" * 9 + "…"
    assert chat.history_label("first\nsecond") == "first …"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_batcher_sends_every_n_tokens():
    batcher = chat.ChunkBatcher(tokens=3, seconds=10, clock=Clock())
    assert [batcher.add(t) for t in "abcdefg"] == [None, None, "abc", None, None, "def", None]
    assert batcher.flush() == "g"
    assert batcher.flush() is None


def test_batcher_sends_after_the_interval():
    clock = Clock()
    batcher = chat.ChunkBatcher(tokens=100, seconds=0.05, clock=clock)
    assert batcher.add("a") is None
    clock.now = 0.06
    assert batcher.add("b") == "ab"


def test_speed_and_load_texts():
    assert chat.tokens_per_second(50, 0.5) == 100.0
    assert chat.tokens_per_second(5, 0) == 0.0
    assert chat.speed_text(48, 312.54) == "48 tokens · 312.5 tokens/s"
    assert chat.speed_text(1, 2.0, stopped=True) == "1 token · 2.0 tokens/s · stopped"
    assert chat.load_text(1.234, False, False) == "model loaded in 1.2 s"
    assert chat.load_text(0.0, True, False) == "model already loaded"
    assert chat.load_text(0.051, True, True) == "checkpoint loaded in 0.05 s (base already loaded)"


def _run(folder: Path, checkpoints=(4, 8), best=None, model="org/base") -> Path:
    folder.mkdir(parents=True)
    (folder / runs.RECIPE).write_text("{}\n")
    (folder / runs.ADAPTERS).mkdir()
    (folder / runs.ADAPTERS / runs.ADAPTER_CONFIG).write_text(json.dumps({"model": model}))
    log = runs.MetricsLog(folder)
    from macfinetune.core.events import CheckpointSaved

    for it in checkpoints:
        (folder / runs.ADAPTERS / runs.checkpoint_name(it)).write_bytes(b"x")
        (folder / runs.CHECKPOINTS).mkdir(exist_ok=True)
        runs.optimizer_file(folder, it).write_bytes(b"x")
        val = 1.0 if it == best else 2.0 + it
        runs.write_checkpoint_state(folder, it, 0, val)
        log.write(CheckpointSaved(it, "", val, it == best))
    log.close()
    return folder


def test_run_choices_list_runs_with_committed_checkpoints(tmp_path):
    _run(tmp_path / "20260101-a", best=4)
    _run(tmp_path / "demo" / "20260102-b", checkpoints=(10,))
    _run(tmp_path / "20260103-empty", checkpoints=())
    choices = chat.list_run_choices(tmp_path)
    assert [c.label for c in choices] == ["20260102-b", "20260101-a"]
    a = choices[1]
    assert a.base_model == "org/base" and a.checkpoints == (4, 8) and a.best == 4
    assert a.checkpoint_labels() == ["4 (best)", "8"]
    assert (a.pick("best"), a.pick("last"), a.pick("8"), a.pick("12"), a.pick("x")) == (4, 8, 8, None, None)
    assert choices[0].pick("best") == 10  # no validation-best: the last one


def test_run_base_model_prefers_the_status(tmp_path):
    folder = _run(tmp_path / "r")
    runs.write_status(folder, runs.RunStatus(state="finished", model="/models/base"))
    assert chat.run_base_model(folder) == "/models/base"
    assert chat.run_base_model(tmp_path / "missing") == ""


def test_models_to_release_least_recently_used_first():
    gb = 1 << 30
    cached = [("old", 4 * gb), ("new", 2 * gb)]
    assert chat.models_to_release(cached, 1 * gb, 100 * gb, max_models=3) == []
    assert chat.models_to_release(cached, 1 * gb, 100 * gb, max_models=2) == ["old"]
    assert chat.models_to_release(cached, 5 * gb, 2 * gb, max_models=9) == ["old"]
    assert chat.models_to_release(cached, 7 * gb, 2 * gb, max_models=9) == ["old", "new"]
    assert chat.models_to_release(cached, 1 * gb, 2 * gb, max_models=9, reserve=2 * gb) == ["old"]
