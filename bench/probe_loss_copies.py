"""Copies of batch x L x vocab that mlx-lm's loss holds at its peak, today's loss and the loss before 2025-04.

    python bench/probe_loss_copies.py [--compile]

mlx-lm's ``default_loss`` is ``nn.losses.cross_entropy`` on the model-dtype logits; until mlx-lm #63
(2025-04-03, "Update logits to new mlx") it first upcast the logits to float32
(``logits = logits.astype(mx.float32)``). The loss is the same graph on the CPU and Metal backends (MLX has no
fused loss kernel), so the copies measured here on MLX's CPU backend are the Metal mode's ``logits`` term
(memory_model.yaml) and, for rows measured before 2025-04, bench/calibrate_metal.py's older-MLX term. Measured:
the peak of ``value_and_grad`` of the loss through an output head (bf16), above the inputs and the head's
weight gradient, in bf16 copies of batch x L x vocab. Today's ``logsumexp`` is a fused op (mlx #2028, 2025-03-31); the composed one before it held
more, so the float32 figure is a lower bound for rows measured before that.
"""

from __future__ import annotations

import argparse

B, L, V, H = 4, 512, 32000, 256


def copies(upcast: bool, compiled: bool, B: int = B, L: int = L, V: int = V) -> float:
    import mlx.core as mx
    import mlx.nn as nn

    mx.random.seed(0)
    x = mx.random.normal((B, L, H)).astype(mx.bfloat16)
    w = (mx.random.normal((V, H)) * 0.02).astype(mx.bfloat16)
    targets = mx.random.randint(0, V, (B, L))
    mx.eval(x, w, targets)

    def loss(w):
        logits = x @ w.T
        if upcast:
            logits = logits.astype(mx.float32)
        return nn.losses.cross_entropy(logits, targets).astype(mx.float32).sum() / (B * L)

    step = mx.value_and_grad(loss)
    if compiled:
        step = mx.compile(step)
    mx.eval(step(w))  # warm-up (and compilation)
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    mx.eval(step(w))
    gradient = V * H * 2  # the head's weight gradient: an output of the step, not the loss's
    return (mx.get_peak_memory() - base - gradient) / (B * L * V * 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    import mlx.core as mx

    print(f"# mlx {mx.__version__}, batch {B}, length {L}, vocab {V}, {'compiled' if a.compile else 'not compiled'}")
    print(f"today's loss (model-dtype logits):        {copies(False, a.compile):.2f} bf16 copies of batch x L x vocab")
    print(f"before 2025-04 (logits upcast to float32): {copies(True, a.compile):.2f}")


if __name__ == "__main__":
    main()
