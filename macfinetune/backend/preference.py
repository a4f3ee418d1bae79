"""Preference tuning (DPO, ORPO) on mlx-lm's trainer, through the same seams as supervised runs.

mlx-lm's ``train()`` calls ``loss(model, *batch)`` on whatever ``iterate_batches`` yields, so a
preference run is a batch source and a loss (the rest of the loop is the supervised one):

1. ``PairDataset`` tokenizes each pair's two answers exactly as mlx-lm's ChatDataset with prompt
   masking tokenizes a chat row (``(tokens, prompt length)``).
2. ``attach_reference`` gives every pair its reference log-probabilities (DPO): computed once,
   before the first update, with the weights the run starts from (fresh LoRA/DoRA adapters leave
   the base unchanged, full fine-tuning has not moved yet) and kept in the run folder
   (``data/reference.json``), so a resumed run uses the very same numbers. No second copy of the
   model and no reference forward pass per step.
3. ``pair_batches`` yields ``(tokens, lengths, reference)``: the batch's chosen rows then its
   rejected rows, mlx-lm's ``[offset, length]`` per row, drawn from a NumPy generator seeded with
   (seed, epoch), so exact resume fast-forwards through the same batches.
4. ``make_loss`` is DPO's sigmoid loss or ORPO's, from per-row summed answer log-probabilities.
5. ``Validator`` measures the held-out pairs: the loss (the run's validation loss, so the best
   checkpoint and early stopping follow the preference loss) and a ``PreferenceReport``; and at every
   report step the batch about to be trained, before its update (a ``PreferenceReport`` of split train).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from macfinetune.core import atomic, runs
from macfinetune.core.events import PreferenceReport
from macfinetune.core.formats import pairs

REFERENCE_FILE = "reference.json"  # in the run's data/ folder
PAD_TO = 32  # mlx-lm's rounding of a batch's width


# --- 1. tokenized pairs ----------------------------------------------------------------------


class PairDataset:
    """Pairs as ``(chosen tokens, rejected tokens, prompt length of each)``, tokenized on first use."""

    def __init__(self, rows: list[dict], tokenizer):
        from mlx_lm.tuner.datasets import ChatDataset

        self._rows = rows
        self._chat = ChatDataset([], tokenizer, mask_prompt=True)
        self._cache: list = [None] * len(rows)
        self.reference = np.zeros((len(rows), 2), np.float32)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int):
        if self._cache[i] is None:
            row = self._rows[i]
            self._cache[i] = tuple(self._chat.process(pairs.pair_as_chat(row, k)) for k in pairs.PAIR_KEYS)
        return self._cache[i]


def datasets(train_rows: list[dict], valid_rows: list[dict], tokenizer) -> tuple[PairDataset, PairDataset]:
    return PairDataset(train_rows, tokenizer), PairDataset(valid_rows, tokenizer)


# --- 3. batches ------------------------------------------------------------------------------


def batch_arrays(dataset: PairDataset, indices, max_seq_length: int):
    """(tokens [2B, W], lengths [2B, 2], reference [2B]) for the pairs ``indices``: chosen rows first."""
    items = [dataset[int(i)] for i in indices]
    rows = [item[0] for item in items] + [item[1] for item in items]
    lengths = [min(len(tokens), max_seq_length) for tokens, _ in rows]
    width = min(1 + PAD_TO * ((max(lengths) + PAD_TO - 1) // PAD_TO), max_seq_length)
    tokens = np.zeros((len(rows), width), np.int32)
    for j, ((ids, _), n) in enumerate(zip(rows, lengths, strict=True)):
        tokens[j, :n] = ids[:n]
    offsets = [min(offset, n) for (_, offset), n in zip(rows, lengths, strict=True)]
    reference = np.concatenate([dataset.reference[indices, 0], dataset.reference[indices, 1]])
    return tokens, np.array(list(zip(offsets, lengths, strict=True)), np.int32), reference.astype(np.float32)


def pair_batches(dataset, batch_size: int, max_seq_length: int, loop: bool = False, seed: int = 0,
                 comm_group=None):
    """mlx-lm's iterate_batches for pairs: a shuffled order per epoch from (seed, epoch)."""
    import mlx.core as mx

    if comm_group is not None and comm_group.size() > 1:
        raise ValueError("preference runs train on one machine; use one host")
    if len(dataset) < batch_size:
        raise ValueError(f"Dataset must have at least batch_size={batch_size} pairs but only has {len(dataset)}.")
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(dataset))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            tokens, lengths, reference = batch_arrays(dataset, order[start : start + batch_size], max_seq_length)
            yield mx.array(tokens), mx.array(lengths), mx.array(reference)
        epoch += 1
        if not loop:
            return


def describe(recipe) -> str:
    """One line for the start of a run: the objective and its knob."""
    t = recipe.training
    if t.objective == "dpo":
        return (f"Objective DPO (beta {t.dpo_beta:g}) on {recipe.method.type}: each batch of {t.batch_size} pairs "
                f"is {2 * t.batch_size} sequences; the reference is the starting model")
    return (f"Objective ORPO (lambda {t.orpo_lambda:g}) on {recipe.method.type}: each batch of {t.batch_size} pairs "
            f"is {2 * t.batch_size} sequences; no reference")


def batch_source(seed: int):
    from functools import partial

    return partial(pair_batches, seed=seed)


# --- 4. the losses ---------------------------------------------------------------------------


def answer_logps(model, tokens, lengths):
    """Per row: the summed log-probability of the answer's tokens and how many there are.

    Row r's answer is tokens ``offset .. length - 1`` (mlx-lm's prompt masking, without the padding
    target mlx-lm's loss also counts)."""
    import mlx.core as mx
    import mlx.nn as nn

    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs).astype(mx.float32)
    token_logps = -nn.losses.cross_entropy(logits, targets)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps < lengths[:, 1:])
    return (token_logps * mask).sum(axis=1), mask.sum(axis=1)


def dpo_terms(logps, reference, beta: float):
    """DPO's sigmoid loss per pair and the implicit rewards (chosen rows are the first half)."""
    import mlx.core as mx

    half = logps.shape[0] // 2
    rewards = beta * (logps - reference)
    margin = rewards[:half] - rewards[half:]
    return mx.logaddexp(0.0, -margin), rewards[:half], rewards[half:]


def orpo_terms(logps, counts, lam: float):
    """ORPO per pair: NLL of the chosen answer (per token) + lambda x -log sigmoid(log odds ratio).

    The odds use the mean per-token probability of each answer, as in the paper and TRL."""
    import mlx.core as mx

    half = logps.shape[0] // 2
    mean = logps / mx.maximum(counts, 1)
    mean = mx.minimum(mean, -1e-6)  # log(1 - p) needs p < 1
    log_odds = (mean[:half] - mean[half:]) - (mx.log1p(-mx.exp(mean[:half])) - mx.log1p(-mx.exp(mean[half:])))
    return mx.logaddexp(0.0, -log_odds) * lam, mean[:half], mean[half:]


def make_loss(objective: str, beta: float, lam: float):
    """The training loss mlx-lm's trainer calls as ``loss(model, tokens, lengths, reference)``."""
    import mlx.core as mx

    def dpo(model, tokens, lengths, reference):
        logps, counts = answer_logps(model, tokens, lengths)
        losses, _, _ = dpo_terms(logps, reference, beta)
        return losses.mean(), counts.sum()

    def orpo(model, tokens, lengths, reference):
        logps, counts = answer_logps(model, tokens, lengths)
        half = logps.shape[0] // 2
        nll = -logps[:half].sum() / mx.maximum(counts[:half].sum(), 1)
        ratio, _, _ = orpo_terms(logps, counts, lam)
        return nll + ratio.mean(), counts.sum()

    return {"dpo": dpo, "orpo": orpo}[objective]


# --- 2. the reference -----------------------------------------------------------------------


def all_logps(model, dataset: PairDataset, batch_size: int, max_seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed answer log-probabilities and answer token counts of every pair, shape (N, 2) each, in eval mode."""
    import mlx.core as mx

    model.eval()
    out, counts = np.zeros((len(dataset), 2), np.float32), np.zeros((len(dataset), 2), np.int64)
    for start in range(0, len(dataset), batch_size):
        indices = np.arange(start, min(start + batch_size, len(dataset)))
        tokens, lengths, _ = batch_arrays(dataset, indices, max_seq_length)
        logps, n = answer_logps(model, mx.array(tokens), mx.array(lengths))
        mx.eval(logps, n)
        half = len(indices)
        out[indices] = np.array(logps).reshape(2, half).T
        counts[indices] = np.array(n).reshape(2, half).T
    return out, counts


def attach_reference(model, train_set: PairDataset, valid_set: PairDataset, run_dir: Path, recipe) -> bool:
    """Give every pair its reference log-probabilities: read from the run folder, or computed now
    (before the first update) and written there. ORPO needs none. True when computed now."""
    if recipe.training.objective != "dpo":
        return False
    path = Path(run_dir) / runs.DATA / REFERENCE_FILE
    computed = not path.exists()
    if computed:
        size, longest = recipe.training.batch_size, recipe.data.max_seq_length
        record = {name: all_logps(model, ds, size, longest)[0].tolist()
                  for name, ds in (("train", train_set), ("valid", valid_set))}
        model.train()
        atomic.write_text(path, json.dumps(record))
    record = json.loads(path.read_text(encoding="utf-8"))
    for name, ds in (("train", train_set), ("valid", valid_set)):
        ds.reference = np.array(record[name], np.float32).reshape(len(ds), 2)
    return computed


# --- 5. validation ----------------------------------------------------------------------------


def measures(logps: np.ndarray, counts: np.ndarray, reference: np.ndarray, objective: str, beta: float,
             lam: float) -> dict:
    """The PreferenceReport numbers from per-pair (chosen, rejected) log-probabilities, in NumPy."""
    mean = logps / np.maximum(counts, 1)
    if objective == "dpo":
        rewards = beta * (logps - reference)
        losses = np.logaddexp(0.0, -(rewards[:, 0] - rewards[:, 1]))
    else:
        rewards = np.minimum(mean, -1e-6)
        log_odds = (rewards[:, 0] - rewards[:, 1]) - (np.log1p(-np.exp(rewards[:, 0])) - np.log1p(-np.exp(rewards[:, 1])))
        nll = -logps[:, 0].sum() / max(counts[:, 0].sum(), 1)
        losses = nll + lam * np.logaddexp(0.0, -log_odds)
    return {"loss": float(losses.mean()), "rewards_chosen": float(rewards[:, 0].mean()),
            "rewards_rejected": float(rewards[:, 1].mean()),
            "reward_margin": float((rewards[:, 0] - rewards[:, 1]).mean()),
            "accuracy": float((rewards[:, 0] > rewards[:, 1]).mean()),
            "logps_chosen": float(logps[:, 0].mean()), "logps_rejected": float(logps[:, 1].mean()),
            "likelihood_accuracy": float((mean[:, 0] > mean[:, 1]).mean())}


class Validator:
    """Measures the held-out pairs for the loop (``loop.StepHook``): emits a PreferenceReport and
    returns the validation loss. ``eval.val_batches`` batches (-1: all pairs), the same every time."""

    def __init__(self, recipe, batch_size: int):
        t = recipe.training
        self.objective, self.beta, self.lam = t.objective, t.dpo_beta, t.orpo_lambda
        self.batch_size, self.max_seq_length = batch_size, recipe.data.max_seq_length
        self.limit = recipe.eval.val_batches
        # the loss guard's scale: DPO starts at log 2 and heads for 0, where one hard batch may cost ten times more
        self.loss_floor = math.log(2) if self.objective == "dpo" else 1e-3

    def report(self, model, dataset: PairDataset, iteration: int, split: str = "valid") -> PreferenceReport:
        subset = _first(dataset, self.limit * self.batch_size if self.limit > 0 else len(dataset))
        logps, counts = all_logps(model, subset, self.batch_size, self.max_seq_length)
        numbers = measures(logps, counts, subset.reference, self.objective, self.beta, self.lam)
        return PreferenceReport(iteration, split, self.objective, pairs=len(subset), **numbers)

    def batch_report(self, model, batch, iteration: int) -> PreferenceReport:
        """The measures of one training batch (``split`` train) with the weights before its update."""
        import mlx.core as mx

        tokens, lengths, reference = batch
        model.eval()
        logps, counts = answer_logps(model, tokens, lengths)
        mx.eval(logps, counts)
        model.train()
        half = logps.shape[0] // 2
        pair = lambda a: np.array(a).reshape(2, half).T  # noqa: E731  (chosen, rejected) per pair
        numbers = measures(pair(logps), pair(counts), pair(reference), self.objective, self.beta, self.lam)
        return PreferenceReport(iteration, "train", self.objective, pairs=half, **numbers)

    def __call__(self, model, dataset, iteration: int, emit) -> float:
        tic = time.perf_counter()
        report = self.report(model, dataset, iteration)
        emit(report)
        self.seconds = time.perf_counter() - tic
        return report.loss


def _first(dataset: PairDataset, n: int):
    """The first ``n`` pairs of a dataset (sharing its tokens and reference)."""
    return dataset if n >= len(dataset) else _Head(dataset, n)


class _Head:
    def __init__(self, dataset: PairDataset, n: int):
        self._dataset, self._n = dataset, n
        self.reference = dataset.reference[:n]

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int):
        return self._dataset[i]
