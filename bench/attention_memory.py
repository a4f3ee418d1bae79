"""Peak memory and speed of training with mlx's attention and loss vs the memory-light ones (issue 14).

Each measurement is a fresh process (``mx.get_peak_memory()`` is per process) that builds the same
random-weight llama, adds LoRA to every linear layer of every block (rank 8), and runs mlx-lm's
``train()`` for a few steps of batch ``--batch`` rows of exactly L tokens, through the paths a run
uses (backend/attention.py): ``stock`` (mlx's attention and mlx-lm's loss) or ``light``
(memory-light attention and chunked loss). Reports the peak (GB, weights included) and the median
seconds per step after the first. Paths alternate within each round.

    python bench/attention_memory.py --lengths 1024 2048 4096 --rounds 2
    python bench/attention_memory.py --speed 256 512 --rounds 3   # short sequences: step time
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 ...      # Linux: a faster BLAS

The "longest trainable sequence in a fixed budget": the budget is the stock path's peak at the
``--budget-length``; each path's peaks are interpolated (stock: quadratic, light: linear in L,
fitted to the measured points) to the longest L under that budget, and ``--probe`` lengths are
measured to confirm it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = dict(hidden_size=256, num_hidden_layers=4, intermediate_size=512, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=8192, rms_norm_eps=1e-5, tie_word_embeddings=False)
PATHS = {"stock": ("stock", "stock"), "light": ("memory_light", "chunked"), "attn": ("memory_light", "stock"),
         "loss": ("stock", "chunked")}


def child(path: str, length: int, batch: int, steps: int, dtype: str) -> dict:
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_map
    from mlx_lm.models import llama
    from mlx_lm.tuner.trainer import TrainingArgs, train

    from macfinetune.backend import adapters, attention
    from macfinetune.core.recipe import Recipe

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(model_type="llama", max_position_embeddings=16384, **MODEL))
    model.update(tree_map(lambda p: p.astype(getattr(mx, dtype)), model.parameters()))
    adapters.prepare_model(model, Recipe())
    mx.eval(model.parameters())
    rng = np.random.default_rng(0)
    data = [(rng.integers(1, MODEL["vocab_size"], length + 1).tolist(), 0) for _ in range(batch * 4)]
    attention_mode, loss_mode = PATHS[path]
    times = []

    class Callback:
        def on_train_loss_report(self, info):
            times.append(1.0 / info["iterations_per_second"])

        def on_val_loss_report(self, info):
            pass

    args = TrainingArgs(batch_size=batch, iters=steps, steps_per_report=1, steps_per_eval=10**9,
                        steps_per_save=10**9, max_seq_length=length + 1, adapter_file=os.devnull)
    mx.reset_peak_memory()
    context = attention.training_paths(model, attention_mode) if path != "stock" else contextlib.nullcontext()
    with context, contextlib.redirect_stdout(io.StringIO()):
        train(model, optim.Adam(learning_rate=1e-5), data, None, args, loss=attention.make_loss(loss_mode),
              training_callback=Callback())
    return {"path": path, "length": length, "batch": batch, "peak_gb": mx.get_peak_memory() / 1e9,
            "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0]}


def measure(path: str, length: int, batch: int, steps: int, dtype: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", path, str(length), str(batch), str(steps), dtype],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def longest_under(points: list[tuple[int, float]], budget: float, degree: int) -> float:
    import numpy as np

    xs, ys = zip(*points, strict=True)
    fit = np.polyfit(xs, ys, degree)
    roots = [r.real for r in np.roots(np.poly1d(fit) - budget) if abs(r.imag) < 1e-9 and r.real > 0]
    return max(roots) if roots else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--speed", type=int, nargs="*", default=[])
    ap.add_argument("--probe", type=int, nargs="*", default=[])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--speed-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--speed-steps", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--budget-length", type=int, default=2048)
    ap.add_argument("--child", nargs=5)
    a = ap.parse_args()
    if a.child:
        path, length, batch, steps, dtype = a.child
        print(json.dumps(child(path, int(length), int(batch), int(steps), dtype)))
        return
    import mlx.core as mx
    import mlx_lm

    print(f"# {platform.machine()} {platform.system()}, {os.cpu_count()} cores, mlx {mx.__version__}, "
          f"mlx-lm {mlx_lm.__version__}, python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, "
          f"BLAS {'OpenBLAS (LD_PRELOAD)' if 'openblas' in os.environ.get('LD_PRELOAD', '') else 'bundled'}")
    print(f"# model {MODEL} {a.dtype}, LoRA rank 8 on every linear layer, Adam")
    peaks: dict[tuple[str, int], list[dict]] = {}
    for r in range(a.rounds):
        for length in a.lengths + a.probe:
            order = ("stock", "light") if r % 2 == 0 else ("light", "stock")
            for path in order if length in a.lengths else ("light",):  # probes: the light path only
                m = measure(path, length, a.batch, a.steps, a.dtype)
                peaks.setdefault((path, length), []).append(m)
                print(f"round {r + 1}  L={length:>5}  {path:>5}  peak {m['peak_gb']:.4f} GB  step {m['step_s']:.2f} s",
                      flush=True)
    if a.lengths:
        print("\n| L | stock peak GB | light peak GB | ratio | stock s/step | light s/step | speed ratio |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for length in a.lengths + a.probe:
            s, li = peaks.get(("stock", length)), peaks.get(("light", length))
            if not s or not li:
                continue
            sp, lp = statistics.median(x["peak_gb"] for x in s), statistics.median(x["peak_gb"] for x in li)
            st, lt = statistics.median(x["step_s"] for x in s), statistics.median(x["step_s"] for x in li)
            print(f"| {length} | {sp:.4f} | {lp:.4f} | {lp / sp:.3f} | {st:.2f} | {lt:.2f} | {st / lt:.2f} |")
        stock = [(n, statistics.median(x["peak_gb"] for x in peaks[("stock", n)])) for n in a.lengths]
        light = [(n, statistics.median(x["peak_gb"] for x in peaks[("light", n)])) for n in a.lengths + a.probe
                 if ("light", n) in peaks]
        budget = dict(stock).get(a.budget_length)
        if budget:
            ls, ll = longest_under(stock, budget, 2), longest_under(light, budget, 1)
            print(f"\nbudget {budget:.4f} GB (stock peak at {a.budget_length}): longest sequence stock ~{ls:.0f}, "
                  f"light ~{ll:.0f} ({ll / ls:.2f}x)")
    if a.speed:
        speed: dict[tuple[str, int], list[float]] = {}
        for r in range(a.rounds):
            for length in a.speed:
                order = ("stock", "light") if r % 2 == 0 else ("light", "stock")
                for path in order:
                    m = measure(path, length, a.speed_batch, a.speed_steps, a.dtype)
                    speed.setdefault((path, length), []).append(m["step_s"])
                    print(f"speed round {r + 1}  L={length}  {path}  {m['step_s']:.3f} s/step", flush=True)
        print("\n| L | batch | stock s/step (runs) | light s/step (runs) | light speed / stock (median) |")
        print("|---:|---:|---|---|---:|")
        for length in a.speed:
            s, li = speed[("stock", length)], speed[("light", length)]
            print(f"| {length} | {a.speed_batch} | {', '.join(f'{x:.3f}' for x in s)} | "
                  f"{', '.join(f'{x:.3f}' for x in li)} | {statistics.median(s) / statistics.median(li):.2f} |")


if __name__ == "__main__":
    main()
