"""A recorded Playground exchange made in code: stand-in checkpoint files for the sample run and the events
two answers stream, for screenshots and view tests (no weights, no generation)."""

from __future__ import annotations

import re
from pathlib import Path

from macfinetune.core import atomic, chat, runs
from macfinetune.core.events import GenerationFinished, ModelLoaded, TokenChunk

STAND_IN = b"not weights: a stand-in checkpoint for screenshots"

EXCHANGES = (
    ("My order arrived with a cracked screen. What can I do?",
     "There are several things you could consider doing in this situation. First, you may want to check "
     "whether the product came with a warranty. Many retailers offer some form of protection, although the "
     "details can vary considerably from one company to another, and it is often a good idea to read the "
     "terms and conditions carefully before taking any further steps.",
     "I'm sorry it arrived damaged. Send us a photo of the screen and of the box from your order page "
     "(Orders → Report a problem) and we'll ship a replacement within two working days. You don't need to "
     "return the broken one."),
    ("Can I get a refund instead?",
     "Refunds are usually possible, depending on the policy of the store where you made the purchase.",
     "Yes. Choose \"Refund\" instead of \"Replacement\" in the same form; the money is back on your card "
     "within 5 days of the report."),
)


def write_sample_checkpoints(run_dir: Path) -> list[int]:
    """Commit stand-in files for every checkpoint the sample run's metrics record; returns their iterations."""
    run_dir = Path(run_dir)
    iterations = [r["iteration"] for r in runs.read_metrics(run_dir) if r.get("event") == "checkpoint"]
    adapters = run_dir / runs.ADAPTERS
    adapters.mkdir(exist_ok=True)
    (run_dir / runs.CHECKPOINTS).mkdir(exist_ok=True)
    atomic.write_json(adapters / runs.ADAPTER_CONFIG, {"fine_tune_type": "lora", "num_layers": 16})
    for it in iterations:
        (adapters / runs.checkpoint_name(it)).write_bytes(STAND_IN)
        runs.optimizer_file(run_dir, it).write_bytes(STAND_IN)
        runs.write_checkpoint_state(run_dir, it, 0, None)
    return iterations


def sample_exchange(turn: int = 0, checkpoint: str = "0001000_adapters.safetensors") -> tuple[str, list]:
    """(prompt, [(pane, event), ...]) of one turn of the recorded conversation, both panes answering."""
    prompt, base, tuned = EXCHANGES[turn]
    events = []
    for pane, text, tps, name in ((chat.BASE, base, 96.4, ""), (chat.TUNED, tuned, 91.7, checkpoint)):
        events.append((pane, ModelLoaded(pane, "Qwen3-0.6B-bf16", name, 0.04 if turn else 2.1, turn > 0,
                                         bool(name) and turn == 0)))
        events += [(pane, TokenChunk(pane, piece)) for piece in _pieces(text)]
        events.append((pane, GenerationFinished(pane, text, 31, _count_tokens(text), tps)))
    return prompt, events


def _pieces(text: str, words: int = 12) -> list[str]:
    parts = re.findall(r"\S+\s*", text)
    return ["".join(parts[i:i + words]) for i in range(0, len(parts), words)]


def _count_tokens(text: str) -> int:
    """About 1.3 tokens a word: a plausible count for a recorded answer."""
    return round(len(text.split()) * 1.3)
