"""Samples at checkpoints: greedy, short answers of the weights being trained to fixed prompts.

Called by the training loop right after a checkpoint is saved, on the engine thread. Generation is
greedy (argmax: no random numbers are drawn) and leaves the model in the mode it found it in, so
the run's losses, data order and RNG are the same with samples on or off (tests/test_samples.py).
"""

from __future__ import annotations

import time

from macfinetune.core.samples import SamplePrompt


def answer_prompts(model, tokenizer, prompts: list[SamplePrompt], max_tokens: int) -> tuple[tuple[str, ...], float]:
    """(one greedy answer per prompt, seconds taken); the model is in eval mode only meanwhile."""
    was_training = model.training
    tic = time.perf_counter()
    model.eval()
    try:
        texts = tuple(answer(model, tokenizer, p, max_tokens) for p in prompts)
    finally:
        model.train(was_training)
    return texts, time.perf_counter() - tic


def answer(model, tokenizer, prompt: SamplePrompt, max_tokens: int) -> str:
    from mlx_lm.generate import generate

    return generate(model, tokenizer, prompt_tokens(tokenizer, prompt), max_tokens=max_tokens)


def prompt_tokens(tokenizer, prompt: SamplePrompt) -> list[int]:
    """Chat messages through the model's chat template (plain text when it has none); text as it is."""
    if prompt.text is not None:
        return tokenizer.encode(prompt.text)
    messages = [dict(m) for m in prompt.messages]
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    return tokenizer.encode("\n".join(str(m["content"]) for m in messages))
