"""Peak memory of one packed LoRA training step: the windowed attention against the dense block-diagonal mask.

Builds a random-weight llama (hidden 256, 4 blocks, 4 heads, 2 KV heads, vocab 1024, float32), packs random
examples of 30-199 tokens into ``--batch`` sequences of ``--length`` tokens (backend/batching), and measures
``mx.get_peak_memory()`` of one loss-and-gradient step through backend/attention's packed loss with the window
(the longest example) and without it, beside the estimator's figure for each (CPU mode on Linux).

    python bench/packed_memory.py [--length 1024] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = dict(model_type="llama", hidden_size=256, num_hidden_layers=4, intermediate_size=512, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=1024, max_position_embeddings=4096,
              tie_word_embeddings=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()

    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx_lm.models import llama

    from macfinetune.backend import attention, batching
    from macfinetune.backend.adapters import prepare_model
    from macfinetune.core import gate
    from macfinetune.core.estimator import estimate
    from macfinetune.core.modelshape import read_shape
    from macfinetune.core.recipe import Recipe, apply_overrides

    folder = Path(tempfile.mkdtemp(prefix="mf-packed-"))
    (folder / "config.json").write_text(json.dumps({**CONFIG, "torch_dtype": "float32"}))
    shape = read_shape(folder)
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 200, 400).tolist()
    rows = [(rng.integers(1, 1000, n).tolist(), 0) for n in lengths]
    sequences = list(batching.pack_sequences(lengths, a.length, range(len(rows))))[: a.batch]
    packed = tuple(mx.array(x) for x in batching.packed_arrays(rows, sequences, a.length))
    window = max(lengths)
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(**CONFIG))
    recipe = apply_overrides(Recipe(), [f"batch_size={a.batch}", f"max_seq_length={a.length}", "attention=stock",
                                        "loss=stock", "packing=true", "num_layers=-1"])
    prepare_model(model, recipe)
    mx.eval(model.parameters())
    device = "gpu" if mx.metal.is_available() else "cpu"
    print(f"# {platform.machine()} {platform.system()}, mlx {mx.__version__}, {device}; length {a.length}, batch "
          f"{a.batch}, examples 30-199 tokens (window {window})")
    print("| attention | measured peak GB | estimate GB | error |\n|---|---:|---:|---:|")
    for w in (window, None):
        with attention.training_paths(model, "stock"):
            step = nn.value_and_grad(model, attention.make_packed_loss("stock", w))
            mx.eval(step(model, *packed))
            mx.clear_cache()
            mx.reset_peak_memory()
            mx.eval(step(model, *packed))
            peak = mx.get_peak_memory() / 1e9
        settings = gate.run_settings(recipe, shape, device, window)
        est = estimate(shape, settings if w else replace(settings, packed_window=None)).total_gb
        print(f"| {'windowed' if w else 'dense mask'} | {peak:.4f} | {est:.4f} | {(est - peak) / peak:+.1%} |")


if __name__ == "__main__":
    main()
