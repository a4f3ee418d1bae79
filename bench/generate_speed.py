"""Generation speed: the Playground's in-process generation versus `python -m mlx_lm generate`.

Same model, prompt (through the chat template), greedy sampling, max tokens and seed. Alternates them for
N rounds (timings on shared machines drift; side by side is fair) and prints each one's decode tokens/s as
mlx-lm counts it (tokens after the first / time since the first: prompt processing and start-up excluded,
the same number `mlx_lm generate` prints as "Generation: N tokens, X tokens-per-sec"), the medians and the
ratio (target >= 0.95). On a busy machine the wall clock swings by 2-4x between runs, so each call also runs
with 1 token and the CPU time of the difference gives tokens per CPU-second, a steadier second measure. A third contender, mlx-lm's ``stream_generate`` called in this process on the same
loaded model, separates the cost of our per-token work from that of running in-process at all. Ours runs ``jobs.chat`` exactly as the engine runs it (model cache, stop checks,
TokenChunk batching, events), with the model already loaded, as it is from the second prompt on.

    python bench/generate_speed.py [--rounds 7] [--max-tokens 128] [--models tiny,small]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's macfinetune, not another installed one
PROMPT = "Tell me about the sea and the ships that sail on it."
GENERATION_LINE = re.compile(r"Generation: (\d+) tokens, ([\d.]+) tokens-per-sec")
SHAPES = {  # built like the tests' tiny model (random llama, tokenizer trained on the sample data), bigger
    "tiny": {},
    "small": {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "num_kv_heads": 4, "intermediate_size": 1408},
    "medium": {"hidden_size": 1024, "num_layers": 12, "num_heads": 16, "num_kv_heads": 8,
               "intermediate_size": 2816},
}


def build_model(name: str, folder: Path) -> Path:
    """Built in a child process: training its tokenizer starts a thread pool that would stay in this one."""
    code = (
        "import sys; from pathlib import Path; from macfinetune.backend import tinymodel as t\n"
        "data = t.shipped('resources', 'sample_data', 'train.jsonl').parent\n"
        "texts = [x for f in ('train.jsonl', 'valid.jsonl') for x in t._contents(data / f)]\n"
        f"t.build_tiny_model(Path(sys.argv[1]), texts, **{SHAPES[name]!r})\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder / name)], check=True, cwd=ROOT)
    return folder / name


def run_ours(model: Path, max_tokens: int, seed: int) -> tuple[int, float]:
    from macfinetune import jobs
    from macfinetune.core.control import JobControl
    from macfinetune.core.sampling import Sampling

    result = jobs.chat(lambda e: None, JobControl(), pane="base", model=str(model), adapter=None,
                       messages=(("user", PROMPT),), sampling=Sampling(max_tokens, 0.0, 1.0, seed))
    return result.generated_tokens, result.tokens_per_second


def run_inprocess(model: Path, max_tokens: int, seed: int) -> tuple[int, float]:
    """mlx-lm's own ``stream_generate`` on the same loaded model in this process (nothing of ours per token):
    tells a gap of ours from a gap of running in-process at all."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from macfinetune.backend import generation

    ready = generation.model_cache().base(Path(model).resolve())
    prompt = generation.chat_prompt(ready.tokenizer, (("user", PROMPT),))
    mx.random.seed(seed)
    responses = stream_generate(ready.model, ready.tokenizer, prompt, max_tokens=max_tokens,
                                sampler=make_sampler(temp=0.0))
    last = deque(responses, maxlen=1)[0]
    return last.generation_tokens, last.generation_tps


def run_mlx_lm(model: Path, max_tokens: int, seed: int) -> tuple[int, float]:
    command = [sys.executable, "-m", "mlx_lm", "generate", "--model", str(model), "--prompt", PROMPT,
               "--max-tokens", str(max_tokens), "--temp", "0", "--top-p", "1.0", "--seed", str(seed)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = GENERATION_LINE.search(out)
    if match is None:
        raise SystemExit(f"no 'Generation:' line in mlx_lm's output:\n{out}")
    return int(match.group(1)), float(match.group(2))


CONTENDERS = (("ours", run_ours), ("in-process", run_inprocess), ("mlx_lm", run_mlx_lm))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (all threads): on a busy machine a steadier
    measure than the wall clock, which counts the time other processes hold the cores."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, model: Path, max_tokens: int, seed: int) -> tuple[int, float, float]:
    """(tokens, decode tokens/s by the wall clock as mlx-lm counts it, CPU seconds of the whole call)."""
    before = cpu_seconds()
    tokens, tps = fn(model, max_tokens, seed)
    return tokens, tps, cpu_seconds() - before


def one_round(fn, model: Path, max_tokens: int, seed: int) -> dict:
    """The call with ``max_tokens`` and with 1 token: their CPU difference is the decode's own CPU time
    (start-up, loading and the prompt cancel out)."""
    tokens, tps, cpu = timed(fn, model, max_tokens, seed)
    one, _, cpu_one = timed(fn, model, 1, seed)
    return {"tokens": tokens, "wall": tps, "cpu": (tokens - one) / max(cpu - cpu_one, 1e-9)}


def measure(model: Path, rounds: int, max_tokens: int, seed: int) -> dict:
    run_ours(model, max_tokens, seed)  # load once (the Playground keeps it loaded) and warm up
    done: dict[str, list] = {label: [] for label, _ in CONTENDERS}
    for n in range(rounds):
        for label, fn in CONTENDERS:
            r = one_round(fn, model, max_tokens, seed)
            done[label].append(r)
            print(f"  round {n + 1} {label:10s} {r['tokens']:4d} tokens {r['wall']:9.1f} tokens/s (wall) "
                  f"{r['cpu']:9.1f} tokens/CPU-s", flush=True)
    out = {"tokens": {label: rs[0]["tokens"] for label, rs in done.items()}}
    for kind in ("wall", "cpu"):
        med = {label: statistics.median(r[kind] for r in rs) for label, rs in done.items()}
        out[kind] = {**med, "ours/mlx_lm": med["ours"] / med["mlx_lm"], "ours/in-process": med["ours"] / med["in-process"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="tiny,small")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="macfinetune-genbench-") as tmp:
        for name in args.models.split(","):
            print(f"{name}:", flush=True)
            results[name] = measure(build_model(name, Path(tmp)), args.rounds, args.max_tokens, args.seed)
    print(f"\n{'model':8s} {'measure':22s} {'ours':>9s} {'in-process':>11s} {'mlx_lm CLI':>11s} {'ours/CLI':>9s} "
          f"{'ours/in-process':>16s}   (medians)")
    for name, r in results.items():
        for kind, text in (("wall", "tokens/s (wall clock)"), ("cpu", "tokens per CPU-second")):
            m = r[kind]
            print(f"{name:8s} {text:22s} {m['ours']:9.1f} {m['in-process']:11.1f} {m['mlx_lm']:11.1f} "
                  f"{m['ours/mlx_lm']:9.3f} {m['ours/in-process']:16.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
