"""The Playground's engine side on the tiny model: models stay loaded, a checkpoint switch loads only the
adapter weights, answers match a fresh load, stop ends an answer, training jobs release the models."""

import shutil
import threading

import pytest

from macfinetune import jobs
from macfinetune.backend import generation
from macfinetune.backend.model_cache import ModelCache
from macfinetune.core import chat
from macfinetune.core.control import JobControl
from macfinetune.core.events import GenerationFinished, ModelLoaded, ModelsReleased, TokenChunk
from macfinetune.core.sampling import Sampling

GREEDY = Sampling(max_tokens=24, temperature=0.0)
ASK = (("user", "Say something about the sea."),)


def answer(cache, pane, model=None, adapter=None, messages=ASK, sampling=GREEDY, control=None):
    seen = []
    result = generation.run_chat(pane, str(model) if model else None, adapter, messages, sampling,
                                 emit=seen.append, control=control, cache=cache)
    return result, seen


def loaded(seen) -> ModelLoaded:
    return next(e for e in seen if isinstance(e, ModelLoaded))


def test_second_prompt_reuses_the_loaded_model(tiny_model):
    cache = ModelCache()
    first, seen1 = answer(cache, chat.BASE, tiny_model)
    second, seen2 = answer(cache, chat.BASE, tiny_model)
    assert (loaded(seen1).reused, loaded(seen2).reused) == (False, True)
    assert cache.loads == 1
    assert first.text == second.text and first.generated_tokens > 0
    chunks = [e for e in seen1 if isinstance(e, TokenChunk)]
    assert chunks and all(c.source == chat.BASE for c in chunks)
    assert "".join(c.text for c in chunks) == first.text
    assert isinstance(seen1[-1], GenerationFinished) and seen1[-1].tokens_per_second > 0


def test_checkpoint_switch_loads_only_the_adapter_and_matches_a_fresh_load(tiny_model, trained_run):
    cache = ModelCache()
    base_before, _ = answer(cache, chat.BASE, tiny_model)
    _, seen4 = answer(cache, chat.TUNED, adapter=(trained_run, "4"))
    tuned8, seen8 = answer(cache, chat.TUNED, adapter=(trained_run, "8"))
    assert (cache.loads, cache.twins) == (1, 1)
    assert (loaded(seen4).reused, loaded(seen8).reused, loaded(seen8).swapped) == (True, True, True)
    assert loaded(seen8).checkpoint == "0000008_adapters.safetensors"
    fresh8, _ = answer(ModelCache(), chat.TUNED, adapter=(trained_run, "8"))
    assert tuned8.text == fresh8.text
    base_after, seen = answer(cache, chat.BASE, tiny_model)
    assert base_after.text == base_before.text and loaded(seen).reused  # the twin never touched the base


def test_tuned_differs_from_base(tiny_model, trained_run):
    cache = ModelCache()
    base, _ = answer(cache, chat.BASE, tiny_model, sampling=Sampling(max_tokens=40, temperature=0.0))
    tuned, _ = answer(cache, chat.TUNED, adapter=(trained_run, "12"), sampling=Sampling(max_tokens=40,
                                                                                         temperature=0.0))
    assert base.text != tuned.text


def test_multi_turn_messages_go_through_the_chat_template(tiny_model):
    cache = ModelCache()
    ready = cache.base(tiny_model)
    turns = chat.Conversation().ask("one").answer("two").ask("three").messages("sys")
    text = ready.tokenizer.decode(generation.chat_prompt(ready.tokenizer, turns))
    assert text.index("sys") < text.index("one") < text.index("two") < text.index("three")
    assert text.rstrip().endswith("assistant")


def test_same_seed_same_sample_and_a_different_seed_differs(tiny_model):
    cache = ModelCache()
    warm = Sampling(max_tokens=30, temperature=1.0, seed=3)
    a, _ = answer(cache, chat.BASE, tiny_model, sampling=warm)
    b, _ = answer(cache, chat.BASE, tiny_model, sampling=warm)
    c, _ = answer(cache, chat.BASE, tiny_model, sampling=Sampling(max_tokens=30, temperature=1.0, seed=4))
    assert a.text == b.text != c.text


def test_stop_ends_the_answer_between_tokens(tiny_model):
    control = JobControl()
    cache = ModelCache()
    seen = []

    def emit(event):
        seen.append(event)
        if isinstance(event, TokenChunk):
            control.request_stop()

    result = generation.run_chat(chat.BASE, str(tiny_model), None, ASK, Sampling(max_tokens=200, temperature=1.0),
                                 emit=emit, control=control, cache=cache)
    assert 0 < result.generated_tokens <= 17  # the first chunk (16 tokens or 50 ms), then the stop
    assert seen[-1] == result


def test_tight_memory_releases_the_least_recently_used_model(tiny_model, tmp_path):
    other = shutil.copytree(tiny_model, tmp_path / "other")
    cache = ModelCache(available=lambda: (1, 1 << 40))  # nothing to spare: only the new model stays
    cache.base(tiny_model)
    cache.base(other)
    assert len(cache) == 1 and cache.loads == 2
    assert cache.base(other).reused  # the newer one is kept
    assert cache.base(tiny_model).reused is False and cache.loads == 3


def test_a_cache_used_from_another_thread_starts_over(tiny_model):
    cache = ModelCache()
    cache.base(tiny_model)
    out = {}
    worker = threading.Thread(target=lambda: out.update(ready=cache.base(tiny_model)))
    worker.start()
    worker.join()
    assert out["ready"].reused is False and cache.loads == 2


def test_chat_job_then_a_fuse_job_releases_the_models(tiny_model, trained_run, tmp_path):
    seen = []
    result = jobs.chat(seen.append, JobControl(), pane=chat.TUNED, model=None, adapter=(trained_run, "last"),
                       messages=ASK, sampling=GREEDY)
    assert isinstance(result, GenerationFinished) and len(generation.model_cache()) == 1
    jobs.fuse(seen.append, JobControl(), path=trained_run, which="last", out_dir=tmp_path / "fused")
    assert len(generation.model_cache()) == 0
    assert any(isinstance(e, ModelsReleased) and e.count == 1 and e.reason == "fusing" for e in seen)


def test_chat_job_refuses_bad_sampling_before_loading(tiny_model):
    from macfinetune.core.problems import ProblemError

    with pytest.raises(ProblemError, match="top_p"):
        jobs.chat(lambda e: None, JobControl(), pane=chat.BASE, model=str(tiny_model), adapter=None,
                  messages=ASK, sampling=Sampling(top_p=0))
