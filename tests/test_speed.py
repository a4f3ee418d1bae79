"""Issue 14: real tokens/s, memory-light attention and loss, packing and length buckets (tiny arrays, tiny model)."""

from __future__ import annotations

import io

import mlx.core as mx
import numpy as np
import pytest
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


# --- 2. memory-light attention and the chunked loss ---------------------------------------------


def _qkv(b=2, heads=4, kv_heads=2, length=40, dim=8, seed=0):
    mx.random.seed(seed)
    q, k, v = (mx.random.normal((b, h, length, dim)) for h in (heads, kv_heads, kv_heads))
    return q, k, v, mx.random.normal((b, heads, length, dim))


def _attention_grads(fn, q, k, v, w):
    loss = lambda q, k, v: (fn(q, k, v) * w).sum()  # noqa: E731
    value, grads = mx.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)
    return [value, *grads]


def _close(a, b, tol=2e-4):
    for x, y in zip(a, b, strict=True):
        assert mx.allclose(x, y, atol=tol, rtol=tol).item(), float(mx.abs(x - y).max())


def _small_blocks(monkeypatch):
    """Blocks of 16 query rows whatever the size, so a 40-token test crosses block edges (and a ragged last one)."""
    from macfinetune.core import memory_light

    monkeypatch.setattr(memory_light, "attention_block", lambda b, h, n: 16)
    monkeypatch.setattr(memory_light, "loss_chunk", lambda vocab, tokens=None: 24)


def test_blockwise_attention_equals_stock_causal_with_grouped_heads(monkeypatch):
    from macfinetune.backend import attention

    _small_blocks(monkeypatch)
    q, k, v, w = _qkv()
    scale = 8**-0.5
    stock = _attention_grads(lambda q, k, v: attention._ORIGINAL(q, k, v, None, scale, "causal"), q, k, v, w)
    light = _attention_grads(lambda q, k, v: attention.blockwise_attention(q, k, v, scale), q, k, v, w)
    _close(stock, light)


def test_blockwise_attention_equals_stock_with_a_padding_mask_and_with_packed_segments(monkeypatch):
    from mlx_lm.models.base import create_causal_mask

    from macfinetune.backend import attention

    _small_blocks(monkeypatch)
    q, k, v, w = _qkv()
    scale = 0.3
    padding = create_causal_mask(40, right_padding=mx.array([0, 7]))  # (2, 1, 40, 40) bool
    stock = _attention_grads(lambda q, k, v: attention._ORIGINAL(q, k, v, None, scale, padding), q, k, v, w)
    light = _attention_grads(lambda q, k, v: attention.blockwise_attention(q, k, v, scale, padding), q, k, v, w)
    _close(stock, light)
    segments = mx.array([[0] * 10 + [1] * 25 + [2] * 5, [0] * 40])
    blockdiag = attention.segment_mask(segments)
    stock = _attention_grads(lambda q, k, v: attention._ORIGINAL(q, k, v, None, scale, blockdiag), q, k, v, w)
    light = _attention_grads(lambda q, k, v: attention.blockwise_attention(q, k, v, scale, "causal", segments),
                             q, k, v, w)
    _close(stock, light)


def test_windowed_packed_attention_equals_the_block_diagonal_mask_and_reads_fewer_keys():
    """Packed sequences whose examples are at most ``window`` tokens: each query block meets only the keys
    from window - 1 before it; outputs and gradients equal the dense block-diagonal mask's (grouped heads,
    padding at the end of a row as segment 0, a block boundary inside an example)."""
    from macfinetune.backend import attention
    from macfinetune.core import memory_light

    q, k, v, w = _qkv()  # (2, 4 heads, 40, 8), 2 kv heads
    scale = 0.3
    # row 2's 17-token example ends on a block's first query (32), which needs the key 16 = 32 - (17 - 1): the
    # window is exactly as long as it must be
    segments = mx.array([[1] * 9 + [2] * 7 + [3] * 9 + [4] * 8 + [0] * 7, [1] * 5 + [2] * 11 + [3] * 17 + [4] * 7])
    dense = attention.segment_mask(segments)
    stock = _attention_grads(lambda q, k, v: attention._ORIGINAL(q, k, v, None, scale, dense), q, k, v, w)
    windowed = _attention_grads(lambda q, k, v: attention.windowed_attention(q, k, v, scale, segments, 17, block=8),
                                q, k, v, w)
    _close(stock, windowed)
    short = _attention_grads(lambda q, k, v: attention.windowed_attention(q, k, v, scale, segments, 9, block=8),
                             q, k, v, w)  # a window shorter than an example (17 tokens) is not the same attention
    assert max(float(mx.abs(a - b).max()) for a, b in zip(stock, short, strict=True)) > 1e-3
    assert memory_light.packed_window(200, 511) == 200 and memory_light.packed_window(300, 511) is None


def _small_llama(seed=0, tie=False):
    from mlx_lm.models import llama

    from macfinetune.backend.adapters import prepare_model
    from macfinetune.core.recipe import Recipe

    args = llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=97,
                           tie_word_embeddings=tie)
    mx.random.seed(seed)
    model = llama.Model(args)
    prepare_model(model, Recipe())  # LoRA on every linear layer of the blocks, as training does
    mx.random.seed(seed + 1)  # non-zero LoRA B, so every gradient is non-trivial
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.1
    mx.eval(model.parameters())
    return model


def _loss_and_grads(model, loss, *batch):
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    (value, ntoks), grads = nn.value_and_grad(model, loss)(model, *batch)
    return value, ntoks, [g for _, g in tree_flatten(grads)]


def test_memory_light_training_step_equals_mlx_lm_on_a_small_llama(monkeypatch):
    """Loss, token count and every LoRA gradient: mlx-lm's default loss and attention vs the
    memory-light attention and chunked loss (tied and untied heads, padded rows, a masked prompt)."""
    from mlx_lm.tuner.trainer import default_loss

    from macfinetune.backend import attention

    _small_blocks(monkeypatch)
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 97, n).tolist() for n in (41, 17, 33)]
    batch, lengths = _padded_batch(rows, [0, 0, 5], width=41)
    for tie in (False, True):
        model = _small_llama(tie=tie)
        stock = _loss_and_grads(model, default_loss, batch, lengths)
        with attention.training_paths(model, "memory_light"):
            light = _loss_and_grads(model, attention.make_loss("chunked"), batch, lengths)
        assert int(stock[1]) == int(light[1])
        _close([stock[0]], [light[0]], 1e-5)
        assert len(stock[2]) == len(light[2]) == 2 * 7 * 2
        _close(stock[2], light[2], 1e-4)
    assert attention.base.scaled_dot_product_attention is attention._ORIGINAL
    from mlx_lm.models import llama

    assert llama.scaled_dot_product_attention is attention._ORIGINAL  # put back after the run


def test_a_run_with_memory_light_attention_and_chunked_loss_trains_as_the_stock_run(tiny_model, tmp_path):
    from macfinetune.core.events import ValReport

    def losses(*overrides):
        events = []
        result = train_run(fast_recipe(tiny_model, "iterations=4", *overrides), tmp_path / "-".join(overrides),
                           events.append)
        assert result.state == "finished"
        return ([e.train_loss for e in events if isinstance(e, TrainReport)],
                [e.val_loss for e in events if isinstance(e, ValReport)])

    stock = losses("training.attention=stock", "training.loss=stock")
    light = losses("training.attention=memory_light", "training.loss=chunked")
    assert np.allclose(stock[0], light[0], rtol=1e-4) and np.allclose(stock[1], light[1], rtol=1e-4)
    assert len(stock[1]) >= 2


def _shape(name="Meta-Llama-3-8B"):
    from macfinetune.core.modelshape import read_shape
    from macfinetune.core.paths import shipped

    return read_shape(shipped("resources", "estimator", "configs", name))


def test_the_estimator_models_the_path_the_run_takes():
    from dataclasses import replace

    from macfinetune.core.estimator import Settings, estimate, settings_from_recipe
    from macfinetune.core.recipe import Recipe, apply_overrides

    shape = _shape()
    # CPU mode adds every term at the peak; Metal mode takes the larger of the loss's and one block's backward
    cpu = Settings(batch_size=1, max_seq_length=4096, attention="stock", loss="stock", device="cpu")
    a, b = estimate(shape, cpu), estimate(shape, replace(cpu, attention="memory_light", loss="chunked"))
    assert b.term("attention").bytes < 0.05 * a.term("attention").bytes
    assert b.term("logits").bytes < 0.2 * a.term("logits").bytes
    metal = replace(cpu, device="gpu")
    m_stock, m_light = estimate(shape, metal), estimate(shape, replace(metal, attention="memory_light", loss="chunked"))
    assert m_light.term("attention").bytes < 0.05 * m_stock.term("attention").bytes
    assert m_light.total_bytes < 0.6 * m_stock.total_bytes  # 31.6 vs 53.4 GB: the L x L scores were the peak
    assert "chunked loss" in m_light.term("logits").detail
    stock = Settings(batch_size=1, max_seq_length=4096, attention="stock", loss="stock")
    light = replace(stock, attention="memory_light", loss="chunked")
    a, b = estimate(shape, stock), estimate(shape, light)
    assert "memory-light attention" in b.term("attention").detail and "chunked loss" in b.term("logits").detail
    assert "memory-light" not in a.term("attention").detail
    # auto: memory-light from 2048 tokens, mlx's below; the recipe's keys reach the estimator
    auto = settings_from_recipe(apply_overrides(Recipe(), ["batch_size=1", "max_seq_length=4096"]))
    assert (auto.attention, auto.loss) == ("auto", "auto")
    assert estimate(shape, auto).term("attention").bytes == b.term("attention").bytes
    short = replace(auto, max_seq_length=1024)
    assert estimate(shape, short).term("attention").bytes == estimate(shape, replace(short, attention="stock")).term(
        "attention").bytes
    # gemma 2 computes its own attention: the stock path whatever the recipe says
    g = _shape("gemma-2-2b-it")
    assert estimate(g, replace(light, max_seq_length=2048)).term("attention").bytes == estimate(
        g, replace(stock, max_seq_length=2048)).term("attention").bytes


def test_a_packed_run_is_judged_at_full_rows_with_its_windowed_attention():
    """Packed sequences fill max_seq_length whatever the longest example is (judging them at the longest
    example, as an unpacked run is, under-estimated the run); the windowed attention keeps L x (window + block)
    scores instead of L x L."""
    from dataclasses import replace

    from macfinetune.core import gate, memory_light
    from macfinetune.core.estimator import estimate
    from macfinetune.core.recipe import Recipe, apply_overrides

    shape = _shape()
    plain = apply_overrides(Recipe(), ["batch_size=4", "max_seq_length=1024", "attention=stock", "loss=stock"])
    packed = apply_overrides(plain, ["packing=true"])
    unpacked_s = gate.run_settings(plain, shape, "gpu", longest_row_tokens=200)
    packed_s = gate.run_settings(packed, shape, "gpu", longest_row_tokens=200)
    assert unpacked_s.max_seq_length == 224 and unpacked_s.packed_window is None
    assert packed_s.max_seq_length == 1024 and packed_s.packed_window == 200
    windowed, dense = estimate(shape, packed_s), estimate(shape, replace(packed_s, packed_window=None))
    assert windowed.total_bytes > estimate(shape, unpacked_s).total_bytes  # full rows, not the longest example
    keys = 200 + memory_light.PACKED_BLOCK
    ratio = windowed.term("attention").bytes / dense.term("attention").bytes
    assert ratio == pytest.approx(keys / 1024, rel=0.05)  # the scores shrink with the keys each query meets
    # examples over half the row: the dense block-diagonal mask, as the run takes it
    long_examples = gate.run_settings(packed, shape, "gpu", longest_row_tokens=600)
    assert estimate(shape, long_examples).term("attention").bytes == dense.term("attention").bytes


def test_auto_fit_proposes_memory_light_attention_before_shorter_sequences():
    """After checkpointing (the seeds' first step, already on here), before cutting the sequences."""
    from macfinetune.core.autofit import auto_fit
    from macfinetune.core.estimator import Settings, estimate
    from macfinetune.core.hardware import machine_from_memory

    shape = _shape("Qwen3-1.7B")
    s = Settings(batch_size=1, max_seq_length=8192, attention="stock", loss="stock", quantize=4,
                 grad_checkpoint=True)
    light = Settings(**{**s.__dict__, "attention": "memory_light", "loss": "chunked"})
    assert estimate(shape, light).total_gb < 10 < 12 < estimate(shape, s).total_gb
    fit = auto_fit(shape, s, machine_from_memory(16))
    assert fit.found
    keys = [c.key for c in fit.changes]
    assert keys[0] == "training.attention" and "data.max_seq_length" not in keys, fit.summary()
    assert fit.settings.max_seq_length == 8192 and fit.settings.attention == "memory_light"
    assert "memory-light attention" in fit.summary()


# --- 3. packing and length buckets -------------------------------------------------------------


def _examples(seed=0):
    """Rows of different lengths, one with a masked prompt of 4 tokens: (tokens, offset)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(1, 97, n).tolist(), off) for n, off in ((19, 0), (7, 0), (25, 4), (12, 0), (30, 0))]


def _unpacked_loss(rows):
    """Each row alone (no padding): cross-entropy over its own targets, summed over rows / their count."""
    import mlx.nn as nn

    def loss(model):
        total, count = mx.array(0.0), 0
        for tokens, offset in rows:
            t = mx.array(tokens)[None]
            ce = nn.losses.cross_entropy(model(t[:, :-1]), t[:, 1:])[0]
            first = max(offset, 1) - 1
            total = total + ce[first:].sum()
            count += len(tokens) - max(offset, 1)
        return total / count, mx.array(count)

    return loss


def test_a_packed_batch_has_the_loss_and_gradients_of_its_rows_trained_alone(monkeypatch):
    """Block-diagonal causal attention (example numbers per token), rotary positions left as they are
    (relative), and each row's own loss mask: on both attention paths and both losses."""
    from macfinetune.backend import attention, batching

    _small_blocks(monkeypatch)
    rows = _examples()
    tokens, weights, segments = batching.packed_arrays(rows, [[0, 1, 2], [3, 4]], max_seq_length=64)
    assert tokens.shape == (2, 64) and segments[0, :51].tolist() == [1] * 19 + [2] * 7 + [3] * 25
    assert int(weights.sum()) == (19 - 1) + (7 - 1) + (25 - 4) + (12 - 1) + (30 - 1)
    packed = (mx.array(tokens), mx.array(weights), mx.array(segments))
    model = _small_llama()
    alone = _loss_and_grads(model, lambda model: _unpacked_loss(rows)(model))
    for mode, loss in (("stock", "stock"), ("memory_light", "chunked")):
        with attention.training_paths(model, mode):
            got = _loss_and_grads(model, attention.make_packed_loss(loss), *packed)
        assert int(got[1]) == int(alone[1])
        _close([got[0]], [alone[0]], 1e-5)
        _close(got[2], alone[2], 1e-4)
    # every row in one sequence of 96 tokens, no row longer than 30: the windowed attention, same loss
    one = tuple(mx.array(a) for a in batching.packed_arrays(rows, [[0, 1, 2, 3, 4]], max_seq_length=128))
    assert one[0].shape[1] - 1 >= 2 * 30 + 32  # long enough for the window to be used
    calls = []
    windowed = attention.windowed_attention
    monkeypatch.setattr(attention, "windowed_attention", lambda *a, **k: calls.append(a[-1]) or windowed(*a, **k))
    for mode, loss in (("stock", "stock"), ("stock", "chunked")):
        with attention.training_paths(model, mode):
            got = _loss_and_grads(model, attention.make_packed_loss(loss, window=30), *one)
        _close([got[0]], [alone[0]], 1e-5)
        _close(got[2], alone[2], 1e-4)
    assert calls and set(calls) == {30}  # every block's attention took the window
    # without the block-diagonal mask (plain causal attention across rows) the loss is not the same
    plain = _loss_and_grads(model, attention.make_packed_loss("stock"), *packed)
    assert abs(float(plain[0]) - float(alone[0])) > 1e-3


def test_packing_with_gradient_checkpointing_recomputes_with_the_same_masks(monkeypatch):
    """mlx-lm's checkpointing runs each block again in the backward pass, after the loss returned:
    the recomputed attention must still keep to each row."""
    from mlx_lm.tuner.trainer import grad_checkpoint

    from macfinetune.backend import attention, batching

    _small_blocks(monkeypatch)
    rows = _examples()
    packed = tuple(mx.array(a) for a in batching.packed_arrays(rows, [[0, 1, 2], [3, 4]], max_seq_length=64))
    model = _small_llama()
    alone = _loss_and_grads(model, lambda model: _unpacked_loss(rows)(model))
    layer_class = type(model.layers[0])
    original = layer_class.__call__
    grad_checkpoint(model.layers[0])
    try:
        for mode in ("stock", "memory_light"):
            with attention.training_paths(model, mode):
                got = _loss_and_grads(model, attention.make_packed_loss("stock"), *packed)
                attention.make_loss("stock")(model, packed[0], mx.array([[0, 64]] * 2))  # validation in between
            _close([got[0]], [alone[0]], 1e-5)
            _close(got[2], alone[2], 1e-4)
    finally:
        layer_class.__call__ = original


def _fake_dataset(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(1, 50, n).tolist(), 0) for n in lengths]


def test_packed_batches_are_reproducible_from_the_seed_and_cover_every_row_once():
    from macfinetune.backend import batching

    data = _fake_dataset(np.random.default_rng(1).integers(5, 60, 200).tolist())

    def run(seed):
        return [(np.array(b[0]).tolist(), np.array(b[2]).tolist())
                for b in batching.packed_batches(data, 4, 128, seed=seed)]

    first = run(3)
    assert first == run(3) and first != run(4)
    seen = []
    for batch in batching.packed_batches(data, 4, 128, seed=3):
        tokens, weights, segments = (np.array(x) for x in batch)
        assert batch.real_tokens == int(weights.sum()) and tokens.shape[1] <= 128
        for row_tokens, row_segments in zip(tokens, segments, strict=True):
            for number in range(1, int(row_segments.max()) + 1):
                where = np.flatnonzero(row_segments == number)
                # a row's input positions; the last token of the sequence's last row is not an input
                seen.append(row_tokens[where[0] : where[-1] + 1].tolist())
    rows = [t for t, _ in data]
    found = [next(i for i, r in enumerate(rows) if r[: len(s)] == s and len(r) - len(s) in (0, 1)) for s in seen]
    assert len(found) == len(set(found)) > 0.9 * len(rows)  # once each; all but the last, incomplete batch


def test_length_buckets_pad_less_than_mlx_lm_and_are_reproducible():
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import iterate_batches

    from macfinetune.backend import batching

    lengths = np.random.default_rng(2).lognormal(4, 0.8, 256).astype(int).clip(8, 500).tolist()  # skewed
    data = _fake_dataset(lengths)

    class Rows:  # what mlx-lm's CacheDataset wraps: rows that 'process' into (tokens, offset)
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return {"text": "row"}  # mlx-lm's itemlen measures this dict, not the tokens

        def process(self, row):
            return self.rows[self._i]

    class Cached(CacheDataset):
        def __getitem__(self, i):
            self._data._i = i
            return super().__getitem__(i)

    np.random.seed(0)
    theirs = batching.padding_fraction(iterate_batches(Cached(Rows(data)), 8, 512))
    ours = batching.padding_fraction(batching.bucketed_batches(data, 8, 512, seed=0))
    assert ours < 0.5 * theirs
    a = [np.array(b[0]).tolist() for b in batching.bucketed_batches(data, 8, 512, seed=5)]
    assert a == [np.array(b[0]).tolist() for b in batching.bucketed_batches(data, 8, 512, seed=5)]


def test_a_packed_run_trains_several_rows_per_batch_slot(tiny_model, tmp_path):
    def tokens(*overrides):
        events = []
        common = ("iterations=3", "max_seq_length=256", "batch_size=2", "eval_every=100", "save_every=100")
        assert train_run(fast_recipe(tiny_model, *common, *overrides), tmp_path / "-".join(overrides or ("plain",)),
                         events.append).state == "finished"
        return [e for e in events if isinstance(e, TrainReport)][-1].trained_tokens

    assert tokens("packing=true") > 2.5 * tokens()


def test_a_packed_run_says_what_packing_made_of_the_rows(tiny_model, tmp_path):
    from macfinetune.core.events import Stage

    events = []
    train_run(fast_recipe(tiny_model, "iterations=1", "max_seq_length=256", "packing=true"), tmp_path / "run",
              events.append)
    notes = [e.message for e in events if isinstance(e, Stage) and e.message.startswith("Packing")]
    assert len(notes) == 1 and "rows into" in notes[0] and "sequences of up to 256 tokens" in notes[0]


# --- 4. validation off the critical path ---------------------------------------------------------


def test_validation_on_trimmed_batches_gives_mlx_lm_s_loss(tiny_model):
    from mlx_lm.tuner.trainer import evaluate

    from macfinetune.backend import models
    from macfinetune.backend.training import _datasets, preflight

    pre = preflight(fast_recipe(tiny_model, "max_seq_length=512"), tiny_model.parent / "unused-run")
    model, tokenizer, _ = models.load_model(tiny_model)
    _, valid = _datasets(pre, tokenizer)
    widths = []

    def counting(**kwargs):
        for batch in loop.trimmed_batches(**kwargs):
            widths.append(batch[0].shape[1])
            yield batch

    np.random.seed(0)
    theirs = evaluate(model, valid, batch_size=4, num_batches=5, max_seq_length=512)
    np.random.seed(0)
    ours = evaluate(model, valid, batch_size=4, num_batches=5, max_seq_length=512, iterate_batches=counting)
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert any(w % 32 != 1 for w in widths)  # narrower than mlx-lm's 32k + 1 somewhere
    assert loop.validation_loss(model, valid, 4, 5, 512, seed=0) == pytest.approx(theirs, rel=1e-6)


def test_the_estimate_of_the_memory_light_path_is_close_to_its_measured_peaks():
    """bench/attention_memory.py's measurements (resources/estimator/memory_light.jsonl)."""
    import json

    from macfinetune.core.estimator import Settings, estimate
    from macfinetune.core.modelshape import shape_from_config
    from macfinetune.core.paths import shipped

    rows = [json.loads(line) for line in shipped("resources", "estimator", "memory_light.jsonl").read_text().splitlines()]
    light = [r for r in rows if r["path"] == "light"]
    assert len(light) >= 4 and max(r["sequence_length"] for r in light) >= 8192
    for r in light:
        s = Settings(method=r["method"], rank=r["rank"], num_layers=r["num_layers"], batch_size=r["batch_size"],
                     max_seq_length=r["sequence_length"], device=r["device"], attention="memory_light", loss="chunked",
                     val_batch_size=1)
        est = estimate(shape_from_config(r["config"]), s).total_gb
        assert est == pytest.approx(r["measured_gb"], rel=0.08), r["sequence_length"]
    stock = {r["sequence_length"]: r["measured_gb"] for r in rows if r["path"] == "stock"}
    assert {n: r["measured_gb"] / stock[n] for r in light if (n := r["sequence_length"]) in stock}[4096] <= 0.5


def test_the_estimate_of_a_packed_step_follows_its_measured_peak(tmp_path):
    """A packed LoRA step measured with mx.get_peak_memory (this backend, CPU mode), windowed and with the dense
    block-diagonal mask: the window lowers the real peak; the estimate of the windowed step is not under it and
    within 20%, the dense one's within 10% (a larger model at 1,024 tokens: 0.504 vs 0.551 GB windowed, 0.827
    vs 0.854 GB dense; docs/benchmarks.md)."""
    import json
    from dataclasses import replace

    import mlx.nn as nn
    from mlx_lm.models import llama

    from macfinetune.backend import attention, batching
    from macfinetune.backend.adapters import prepare_model
    from macfinetune.core import gate
    from macfinetune.core.estimator import estimate
    from macfinetune.core.modelshape import read_shape
    from macfinetune.core.recipe import Recipe, apply_overrides

    config = dict(model_type="llama", hidden_size=128, num_hidden_layers=2, intermediate_size=256,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=512,
                  max_position_embeddings=2048, tie_word_embeddings=False, torch_dtype="float32")
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = read_shape(tmp_path)
    length, batch = 512, 2
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 120, 200).tolist()
    rows = [(rng.integers(1, 500, n).tolist(), 0) for n in lengths]
    sequences = list(batching.pack_sequences(lengths, length, range(len(rows))))[:batch]
    packed = tuple(mx.array(a) for a in batching.packed_arrays(rows, sequences, length))
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(**{k: v for k, v in config.items() if k != "torch_dtype"}))
    recipe = apply_overrides(Recipe(), [f"batch_size={batch}", f"max_seq_length={length}", "attention=stock",
                                        "loss=stock", "packing=true", "num_layers=-1"])
    prepare_model(model, recipe)
    mx.eval(model.parameters())
    window = max(lengths)
    measured, estimated = {}, {}
    for w in (window, None):
        with attention.training_paths(model, "stock"):
            step = nn.value_and_grad(model, attention.make_packed_loss("stock", w))
            mx.eval(step(model, *packed))  # the first call builds what stays (kernels, caches)
            mx.clear_cache()
            mx.reset_peak_memory()
            mx.eval(step(model, *packed))
            measured[w] = mx.get_peak_memory() / 1e9
        settings = gate.run_settings(recipe, shape, "cpu", window)
        estimated[w] = estimate(shape, settings if w else replace(settings, packed_window=None)).total_gb
    assert measured[window] < 0.85 * measured[None]
    assert measured[window] <= estimated[window] <= 1.2 * measured[window], (measured, estimated)
    assert estimated[None] == pytest.approx(measured[None], rel=0.1), (measured, estimated)  # the dense mask
