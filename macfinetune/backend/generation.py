"""Stream text from a base model, base + checkpoint, or a fused model, with the chat template."""

from __future__ import annotations

import time
from pathlib import Path

from macfinetune.core import runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import GenerationFinished, Stage, TokenChunk
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.sampling import Sampling

CHUNK_TOKENS = 16
CHUNK_SECONDS = 0.05


def format_prompt(tokenizer, prompt: str, system: str | None = None):
    """Token ids of the prompt through the model's chat template (raw text when it has none)."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def generate(model, tokenizer, prompt: str, sampling: Sampling, *, source: str = "model", system: str | None = None,
             emit=lambda e: None, control: JobControl | None = None, context: int | None = None) -> GenerationFinished:
    """Generate, emitting TokenChunk every 16 tokens or 50 ms; stops between tokens on request. A prompt longer than
    ``context`` (the model's, from config.json) is refused before anything is generated."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from macfinetune.core import chat

    formatted = format_prompt(tokenizer, prompt, system)
    tokens = len(formatted) if isinstance(formatted, list) else len(tokenizer.encode(formatted))
    problem = chat.context_problem(tokens, context, "the prompt", "shorten it (the model would not read past it)")
    if problem is not None:
        raise ProblemError(problem)
    control = control or JobControl()
    mx.random.seed(sampling.seed)
    sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p)
    pieces, pending, last_flush, response = [], [], time.perf_counter(), None
    for response in stream_generate(model, tokenizer, formatted, max_tokens=sampling.max_tokens, sampler=sampler):
        pending.append(response.text)
        if len(pending) >= CHUNK_TOKENS or time.perf_counter() - last_flush > CHUNK_SECONDS:
            emit(TokenChunk(source, "".join(pending)))
            pieces += pending
            pending, last_flush = [], time.perf_counter()
        if control.stop_requested:
            break
    stopped = control.stop_requested
    if pending:
        emit(TokenChunk(source, "".join(pending)))
        pieces += pending
    return _finished(source, "".join(pieces), response, stopped)


def load_generator(model: str | None, adapter: tuple[Path, str] | None, emit=lambda e: None):
    """(model, tokenizer, base, checkpoint file) for a model and an optional adapter spec."""
    from macfinetune.backend import fusing, models

    adapters_dir = runs.adapters_dir(adapter[0]) if adapter else None
    if model and adapters_dir:
        check_model_for_adapter(model, adapters_dir, emit)
    base = model or (fusing.base_model_of(adapters_dir) if adapters_dir else None)
    if base is None:
        raise ProblemError(Problem("pass --model, or --adapter with a run folder", field="model"))
    folder = models.resolve_model_path(base)
    weights = runs.resolve_checkpoint(adapter[0], adapter[1])[0] if adapter else None
    emit(Stage("generate", f"Loading {folder}"))
    net, tokenizer, _ = models.load_model(folder)
    return net, tokenizer, adapters_dir, weights, _context(folder)


def _context(folder: Path) -> int | None:
    """The model's context (config.json), or None when it does not say."""
    from macfinetune.core import modelinfo, models_catalog

    return models_catalog.context_length(modelinfo.read_config(folder))


def check_model_for_adapter(model: str, adapters_dir: Path, emit=lambda e: None) -> None:
    """--model with --adapter: refuse a fused model that already holds this adapter (it would be applied
    twice); warn, in one line, when --model is not the base the adapter was trained on."""
    from macfinetune.backend.adapters import read_adapter_config

    run = adapters_dir.parent if adapters_dir.name == runs.ADAPTERS else adapters_dir
    trained_on = runs.base_model(run) if adapters_dir.name == runs.ADAPTERS else ""
    trained_on = trained_on or str(read_adapter_config(adapters_dir).get("model") or "")
    fused = fused_record(model)
    if fused and (_same(fused.get("run"), run) if fused.get("run") else _same(fused["base_model"], trained_on)):
        raise ProblemError(Problem(
            f"{model} is a fused model that already holds the adapter of {run}; applying it again would double it. "
            f"Pass --model {model} without --adapter (add --compare to see it beside its base {fused['base_model']}), "
            f"or --adapter {run} without --model", field="adapter", value=str(run)))
    if trained_on and not _same(model, trained_on):
        emit(Stage("generate", f"warning: --model {model} is not the base this adapter was trained on ({trained_on})"))


def _same(a, b) -> bool:
    """Two model paths or repo ids naming the same thing."""
    if not a or not b:
        return False
    pa, pb = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a).rstrip("/") == str(b).rstrip("/")


def run_generate(model: str | None, adapter: tuple[Path, str] | None, prompt: str, sampling: Sampling, *,
                 compare: bool = False, system: str | None = None, emit=lambda e: None,
                 control: JobControl | None = None) -> list[GenerationFinished]:
    """Generate once (base, base + adapter, or a fused model) or side by side (base, then tuned)."""
    from macfinetune.backend import adapters as adapter_ops

    problems = sampling.problems()
    if problems:
        raise ProblemError(problems)
    if compare and adapter is None:
        return _compare_fused(model, prompt, sampling, system=system, emit=emit, control=control)
    net, tokenizer, adapters_dir, weights, context = load_generator(model, adapter, emit)
    results = []
    if compare:
        results.append(generate(net, tokenizer, prompt, sampling, source="base", system=system, emit=emit,
                                control=control, context=context))
        if control and control.stop_requested:
            return results
    if adapter:
        adapter_ops.apply_adapter(net, adapters_dir, weights)
    source = "tuned" if adapter else "model"
    results.append(generate(net, tokenizer, prompt, sampling, source=source, system=system, emit=emit, control=control,
                            context=context))
    return results


def fused_base_of(model: str | None) -> str | None:
    """The base model a fused folder records (``macfinetune.json``), or None."""
    return fused_record(model).get("base_model")


def fused_record(model: str | None) -> dict:
    """What a fused folder's ``macfinetune.json`` says (base_model, run, checkpoint), with a base and run
    that were inside a since-moved run folder found where the fused folder is now ({} when not fused)."""
    import json

    from macfinetune.backend import models

    if not model:
        return {}
    try:
        folder = models.resolve_model_path(model)
        record = json.loads((folder / "macfinetune.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, ProblemError):
        return {}
    if not isinstance(record, dict) or not record.get("base_model"):
        return {}
    record["base_model"] = runs.relocated_base(str(record["base_model"]), folder.parent)
    if record.get("run") and not Path(record["run"]).exists() and runs.is_run_dir(folder.parent):
        record["run"] = str(folder.parent)
    return record


def _compare_fused(model: str | None, prompt: str, sampling: Sampling, **kw) -> list[GenerationFinished]:
    """--compare on a fused model: the base it records, then the fused model."""
    from macfinetune.backend import models

    base = fused_base_of(model)
    if base is None:
        raise ProblemError(Problem("--compare needs --adapter RUN_DIR[:best|last|N], or --model a fused model "
                                   "folder (it records its base)", field="compare", value=model))
    results = []
    for source, folder in (("base", base), ("tuned", model)):
        if kw["control"] and kw["control"].stop_requested:
            break
        kw["emit"](Stage("generate", f"Loading {folder}"))
        resolved = models.resolve_model_path(folder)
        net, tokenizer, _ = models.load_model(resolved)
        results.append(generate(net, tokenizer, prompt, sampling, source=source, context=_context(resolved), **kw))
    return results


# --- the Playground: models kept loaded, multi-turn chat ---------------------------------------

_CACHE = None  # the engine thread's ModelCache, made on first use


def model_cache():
    """The process's Playground model cache (used from the engine thread only)."""
    global _CACHE
    if _CACHE is None:
        from macfinetune.backend.model_cache import ModelCache

        _CACHE = ModelCache()
    return _CACHE


def release_models(reason: str, emit=lambda e: None) -> int:
    """Let go of the Playground's models (a training job is about to start); says so when any were held."""
    from macfinetune.core.events import ModelsReleased

    count = _CACHE.release() if _CACHE is not None else 0
    if count:
        emit(ModelsReleased(count, reason))
    return count


def chat_prompt(tokenizer, messages) -> list[int] | str:
    """The turns through the model's chat template, ready for the answer (plain text when it has none)."""
    from macfinetune.core import chat

    if not getattr(tokenizer, "chat_template", None):
        return chat.plain_prompt(messages)
    return tokenizer.apply_chat_template(chat.as_dicts(messages), add_generation_prompt=True)


def run_chat(pane: str, model: str | None, adapter: tuple[Path, str] | None, messages, sampling: Sampling, *,
             emit=lambda e: None, control: JobControl | None = None, cache=None) -> GenerationFinished:
    """One answer in a Playground pane: the model (from the cache when it is there), then the stream."""
    problems = sampling.problems()
    if problems:
        raise ProblemError(problems)
    started = time.perf_counter()
    ready, folder, weights = _ready_model(model_cache() if cache is None else cache, model, adapter, emit)
    from macfinetune.core.events import ModelLoaded

    emit(ModelLoaded(pane, str(folder), weights.name if weights else "", time.perf_counter() - started,
                     ready.reused, ready.swapped))
    prompt = chat_prompt(ready.tokenizer, messages)
    _check_context(prompt, ready.tokenizer, folder)
    return stream_chat(ready.model, ready.tokenizer, prompt, sampling, pane=pane, emit=emit, control=control)


def _check_context(prompt: list[int] | str, tokenizer, folder: Path) -> None:
    """Refuse a conversation longer than the model's context (config.json) before generating."""
    from macfinetune.core import chat, modelinfo, models_catalog

    tokens = len(prompt) if isinstance(prompt, list) else len(tokenizer.encode(prompt))
    problem = chat.context_problem(tokens, models_catalog.context_length(modelinfo.read_config(folder)))
    if problem is not None:
        raise ProblemError(problem)


def _ready_model(cache, model: str | None, adapter: tuple[Path, str] | None, emit):
    from macfinetune.backend import fusing, models

    adapters_dir = runs.adapters_dir(adapter[0]) if adapter else None
    if model and adapters_dir:
        check_model_for_adapter(model, adapters_dir, emit)
    base = model or (fusing.base_model_of(adapters_dir) if adapters_dir else None)
    if base is None:
        raise ProblemError(Problem("choose a model, or a run to take its base model from", field="model"))
    folder = models.resolve_model_path(base)
    if adapter is None:
        return cache.base(folder), folder, None
    weights = runs.resolve_checkpoint(adapter[0], adapter[1])[0]
    return cache.tuned(folder, adapters_dir, weights), folder, weights


def stream_chat(model, tokenizer, prompt, sampling: Sampling, *, pane: str, emit=lambda e: None,
                control: JobControl | None = None) -> GenerationFinished:
    """Seeded sampling; TokenChunk(pane, ...) every 16 tokens or 50 ms; stops between tokens on request.
    Ends with GenerationFinished (emitted and returned), holding what was written up to a stop."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from macfinetune.core.chat import ChunkBatcher

    control = control or JobControl()
    mx.random.seed(sampling.seed)
    sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p)
    batcher, pieces, response = ChunkBatcher(), [], None
    for response in stream_generate(model, tokenizer, prompt, max_tokens=sampling.max_tokens, sampler=sampler):
        pieces.append(response.text)
        if (text := batcher.add(response.text)) is not None:
            emit(TokenChunk(pane, text))
        if control.stop_requested:
            break
    stopped = control.stop_requested
    if (text := batcher.flush()) is not None:
        emit(TokenChunk(pane, text))
    finished = _finished(pane, "".join(pieces), response, stopped)
    emit(finished)
    return finished


def _finished(source: str, text: str, response, stopped: bool) -> GenerationFinished:
    if response is None:
        return GenerationFinished(source, text, 0, 0, 0.0, stopped)
    return GenerationFinished(source, text, response.prompt_tokens, response.generation_tokens,
                              response.generation_tps, stopped)
