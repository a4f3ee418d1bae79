"""Issue 14: real tokens/s, memory-light attention and loss, packing and length buckets (tiny arrays, tiny model)."""

from __future__ import annotations

import io

import mlx.core as mx
import numpy as np
from conftest import fast_recipe

from macfinetune.backend import loop
from macfinetune.backend.training import train_run
from macfinetune.core import runs
from macfinetune.core.events import TrainReport

# --- 1. real tokens per second ------------------------------------------------------------


def _padded_batch(rows: list[list[int]], offsets: list[int], width: int):
    arr = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        arr[i, : len(r)] = r
    return mx.array(arr), mx.array([[o, len(r)] for o, r in zip(offsets, rows, strict=True)])


def test_real_tokens_are_the_loss_targets_that_are_not_padding():
    from mlx_lm.tuner.trainer import default_loss

    rows = [[5, 6, 7, 8, 9], [5, 6, 7], [5, 6, 7, 8, 9, 10, 11, 12]]
    offsets = [0, 0, 3]  # the third row's prompt (3 tokens) is masked
    batch, lengths = _padded_batch(rows, offsets, width=9)
    # the targets mlx-lm's loss trains on, and which of them are real tokens (not padding)
    steps = np.arange(1, 9)
    mask = (steps >= np.array(offsets)[:, None]) & (steps <= np.array([len(r) for r in rows])[:, None])
    real = mask & (np.array(batch)[:, 1:] != 0)
    assert loop.real_tokens((batch, lengths)) == int(real.sum()) == 4 + 2 + 5
    _, ntoks = default_loss(_Echo(), batch, lengths)
    assert int(ntoks) == int(mask.sum()) == loop.real_tokens((batch, lengths)) + 3  # one pad target per padded row (all 3)


class _Echo:
    """A 'model' whose logits are one-hot of the input: enough for default_loss's mask count."""

    def __call__(self, inputs):
        return mx.eye(16)[inputs]


def test_reports_carry_real_tokens_per_second_in_events_log_and_progress_line(tiny_model, tmp_path):
    from macfinetune.cli.train import Progress

    events = []
    result = train_run(fast_recipe(tiny_model, "iterations=4"), tmp_path / "run", events.append)
    assert result.state == "finished"
    reports = [e for e in events if isinstance(e, TrainReport)]
    assert reports and all(r.real_tokens_per_second is not None for r in reports)
    # the sample data's rows are padded: mlx-lm counts one padding target per padded row
    assert all(0 < r.real_tokens_per_second < r.tokens_per_second for r in reports)
    logged = [m for m in runs.read_metrics(tmp_path / "run") if m["event"] == "train"]
    assert [m["real_tokens_per_second"] for m in logged] == [r.real_tokens_per_second for r in reports]
    out = io.StringIO()
    Progress(out).show(reports[-1])
    assert f"({reports[-1].real_tokens_per_second:,.0f} real)" in out.getvalue()
