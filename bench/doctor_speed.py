"""Dataset doctor speed: read, convert and inspect N synthetic chat rows with a real tokenizer.

Writes N Alpaca-style rows (a JSON array) and N mlx-lm chat rows (JSONL, system + 1-3
user/assistant turns), then times, for each: reading + converting, the checks without tokens,
token counting with the chat template, and the whole report.

    python bench/doctor_speed.py [--rows 100000] [--model MODEL_FOLDER] [--parallel] [--stdlib-text]

Without --model the tiny offline model is built (its 1k-token BPE cuts text into ~3x more
tokens than a real vocabulary: the slow case for the encoder). --stdlib-text builds the rows
from English sentences (the Python standard library's docstrings) and trains a 16k-token BPE on
them, for realistic characters per token. --parallel sets TOKENIZERS_PARALLELISM=true (the CLI
sets it false by default).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

WORDS = ("owl sea ship sail wind star night moon rope deck cargo storm harbor map treasure parrot island "
         "captain anchor wave gold fog lantern").split()


SENTENCES: list[str] = []  # real sentences when --stdlib-text is given


def sentence(rng: random.Random, n: int) -> str:
    if SENTENCES:
        return " ".join(rng.choice(SENTENCES) for _ in range(max(1, n // 12)))
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def stdlib_sentences() -> list[str]:
    """English sentences from the docstrings of the Python standard library."""
    docs = []
    for path in Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs += [ast.get_docstring(n) or "" for n in ast.walk(tree)
                 if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    text = " ".join(" ".join(docs).split())
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if 20 < len(s) < 300]


def chat_row(rng: random.Random) -> dict:
    messages = [{"role": "system", "content": "You are a pirate. Answer briefly."}]
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": sentence(rng, rng.randint(5, 25))})
        messages.append({"role": "assistant", "content": sentence(rng, rng.randint(10, 60))})
    return {"messages": messages}


def alpaca_row(rng: random.Random) -> dict:
    return {"instruction": sentence(rng, rng.randint(5, 20)), "input": sentence(rng, rng.randint(0, 10)),
            "output": sentence(rng, rng.randint(10, 60))}


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    chat = folder / "chat.jsonl"
    chat.write_text("".join(json.dumps(chat_row(rng)) + "\n" for _ in range(rows)), encoding="utf-8")
    alpaca = folder / "alpaca.json"
    alpaca.write_text(json.dumps([alpaca_row(rng) for _ in range(rows)], indent=1), encoding="utf-8")
    return chat, alpaca


def timed(label: str, fn, results: dict):
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    print(f"  {label:<42} {results[label]:7.2f} s", flush=True)
    return value


def bench(name: str, path: Path, tokenizer, results: dict) -> None:
    from macfinetune.backend.tokens import count_tokens
    from macfinetune.core import doctor, formats

    print(name)
    data = timed("read + convert", lambda: formats.load_any(path), results)
    timed("checks without tokens", lambda: doctor.inspect(data), results)
    rows = list(data.split("train").rows)
    counts = timed("token counts (templates + encode)", lambda: count_tokens(rows, tokenizer), results)
    report = timed("whole report (checks + tokens + stats)", lambda: doctor.inspect(
        data, count_tokens=lambda r: count_tokens(r, tokenizer), max_seq_length=512), results)
    tokens = sum(c.total for c in counts)
    chars = sum(len(json.dumps(r, ensure_ascii=False)) for r in rows) / len(rows)
    print(f"  {len(rows):,} rows, ~{chars:,.0f} characters/row, {tokens:,} tokens "
          f"({tokens / results['token counts (templates + encode)']:,.0f} tokens/s); "
          f"median {report.lengths.median:,.0f} p95 {report.lengths.p95:,} max {report.lengths.max:,}")
    print(f"  read + whole report: {results['read + convert'] + results['whole report (checks + tokens + stats)']:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", type=Path, help="model folder (default: build the tiny model)")
    parser.add_argument("--parallel", action="store_true", help="let the Rust tokenizer use every core")
    parser.add_argument("--stdlib-text", action="store_true", help="real English sentences, 16k-token BPE")
    args = parser.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if args.parallel else "false"

    from macfinetune.backend.tokens import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.stdlib_text:
            SENTENCES.extend(stdlib_sentences())
        model = args.model or _tiny_model(work, SENTENCES)
        chat_file, alpaca_file = write_data(work, args.rows)
        tokenizer = load_tokenizer(model)
        print(f"model {model.name}, {os.cpu_count()} cores, TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}")
        bench("Alpaca JSON array (instruction/input/output -> chat)", alpaca_file, tokenizer, {})
        bench("multi-turn chat JSONL (system + 1-3 turns)", chat_file, tokenizer, {})
    return 0


def _tiny_model(work: Path, sentences: list[str]) -> Path:
    from macfinetune.backend.tinymodel import build_demo_model, build_tiny_model

    if sentences:
        return build_tiny_model(work / "tiny-16k", sentences, vocab_size=16384)
    return build_demo_model(work / "tiny")


if __name__ == "__main__":
    sys.exit(main())
