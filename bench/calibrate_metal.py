"""The public Metal calibration table: published mlx-lm peaks on Apple-silicon Macs against the Metal mode.

    python bench/calibrate_metal.py             # recompute the estimates, write resources/estimator/calibration_metal.yaml
    python bench/calibrate_metal.py --markdown  # the table for docs/estimator.md

Each row is a measurement someone published (``Peak mem`` from mlx-lm's trainer, i.e. ``mx.get_peak_memory()``,
or the same counter in a benchmark script), with the settings it states or implies, where it comes from and what
it leaves uncertain. Nothing here is fitted: the estimate is ``core.estimator`` in its Metal mode
(``device='gpu'``) from the shipped config.json. ``held_out`` marks rows that no coefficient of the Metal mode was
taken from (memory_model.yaml 'metal' names its sources; mlx-train-perf's attention-backward fit used the
Qwen3-8B-4bit runs below, so those rows check the structure, not that coefficient). Rows from a trainer other
than mlx-lm's ``train`` are reported apart and are not held to the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macfinetune.core import estimator  # noqa: E402
from macfinetune.core.modelshape import read_shape  # noqa: E402
from macfinetune.core.paths import shipped  # noqa: E402

OUT = ROOT / "resources" / "estimator" / "calibration_metal.yaml"
GIB = 2**30 / 1e9  # GiB in GB
PERF = "https://github.com/IonDen/mlx-train-perf/blob/main/docs/papers/when-the-bottleneck-moved.md"
PERF_NOTE = ("Qwen3-8B-4bit (mlx-community, 4-bit group 64), batch 1, LoRA rank 8 on every linear layer of all 36 "
             "blocks, AdamW, bf16, gradient checkpointing, mlx-lm's compiled train loop, stock loss and attention; "
             "M1 Max 32 GB. Published as the marginal peak above ~4.29 GiB of resident model state; the total is "
             "that sum (rounding of the resident figure: +-0.05 GiB).")

MLX_TUNE_NOTE = ("mlx-tune's SFTTrainer trains with mlx-lm's own train() and default loss (mlx_tune/sft_trainer.py, "
                 "_train_native; AdamW), so this is mlx-lm's trainer; but the page gives the context as the run's "
                 "maximum, not the length of its longest batch, and does not name the data: rows shorter than the "
                 "maximum lower every L and L^2 term. Reported apart ('context a maximum'), with the length at which "
                 "the estimate meets the measured peak ('implied_length').")

# Rows measured before 2025-04 ran two mechanisms that have since changed; they are estimated with the mechanisms
# of their time, derived from the same terms, not fitted (docs/estimator.md, "Older MLX"):
# - attention: until mlx #2054 ("no sdpa in grad", 2025-04-08) the fused SDPA kernel ran in the forward pass of
#   training too, keeping no L^2 scores, and its VJP (fast.cpp Custom::vjp) re-ran the unfused fallback for one
#   block at a time in the backward pass: nothing L^2 is kept across blocks, and one block's backward holds the
#   recomputed probabilities (attention_kept) besides its own backward copies (attention_backward);
# - loss: until mlx-lm #63 (2025-04-03) default_loss upcast the logits to float32 before cross_entropy:
#   10.0 bf16 copies of batch x L x vocab against 4.0 today (bench/probe_loss_copies.py), so logits + 6.0.
OLDER_MLX = "mlx before 2025-04 (fused SDPA in training, float32 logits)"
LOSS_UPCAST_EXTRA = 6.0  # bench/probe_loss_copies.py: 10.0 - 4.0


def older_mlx_metal(metal: dict) -> dict:
    return {**metal, "attention_kept": 0.0, "attention_backward": metal["attention_kept"] + metal["attention_backward"],
            "logits": metal["logits"] + LOSS_UPCAST_EXTRA}


@contextlib.contextmanager
def mechanisms_of(row: dict):
    """The estimator with the Metal mechanisms of the row's MLX (today's unless the row says otherwise)."""
    if row.get("mechanisms") != OLDER_MLX:
        yield
        return
    today = estimator.coefficients
    older = replace(today(), metal=older_mlx_metal(today().metal))
    estimator.coefficients = lambda: older
    try:
        yield
    finally:
        estimator.coefficients = today


PR53 = dict(machine="not stated", mlx="mlx at ml-explore/mlx#2006 (2025-03)",
            settings=dict(num_layers=16, rank=8, target_modules=("q_proj", "v_proj"), batch_size=4,
                          max_seq_length=2048),
            trainer="mlx-lm train", held_out=True, mechanisms=OLDER_MLX)  # the two rows of mlx-lm PR #53

ROWS = [
    dict(name="mlx-train-perf Qwen3-8B-4bit L1024", config="Qwen3-8B-4bit", measured_gb=(2.12 + 4.29) * GIB,
         settings=dict(num_layers=-1, rank=8, batch_size=1, max_seq_length=1024, grad_checkpoint=True,
                       optimizer="adamw"),
         source=PERF + " (section 1 table, stock loss)", machine="M1 Max 32 GB", mlx="0.31.2, mlx-lm 0.31.3",
         trainer="mlx-lm train", held_out=False, uncertain=PERF_NOTE),
    dict(name="mlx-train-perf Qwen3-8B-4bit L2048", config="Qwen3-8B-4bit", measured_gb=(3.75 + 4.29) * GIB,
         settings=dict(num_layers=-1, rank=8, batch_size=1, max_seq_length=2048, grad_checkpoint=True,
                       optimizer="adamw"),
         source=PERF + " (section 1 table, stock loss)", machine="M1 Max 32 GB", mlx="0.31.2, mlx-lm 0.31.3",
         trainer="mlx-lm train", held_out=False, uncertain=PERF_NOTE),
    dict(name="mlx-train-perf Qwen3-8B-4bit L4096", config="Qwen3-8B-4bit", measured_gb=(7.48 + 4.29) * GIB,
         settings=dict(num_layers=-1, rank=8, batch_size=1, max_seq_length=4096, grad_checkpoint=True,
                       optimizer="adamw"),
         source=PERF + " (section 1 table, stock loss)", machine="M1 Max 32 GB", mlx="0.31.2, mlx-lm 0.31.3",
         trainer="mlx-lm train", held_out=False, uncertain=PERF_NOTE),
    dict(name="mlx-train-perf Qwen3-8B-4bit L8192", config="Qwen3-8B-4bit", measured_gb=25.68 * GIB,
         settings=dict(num_layers=-1, rank=8, batch_size=1, max_seq_length=8192, grad_checkpoint=True,
                       optimizer="adamw"),
         source="https://github.com/IonDen/mlx-train-perf (README, 'stock attention' total peak)",
         machine="M1 Max 32 GB", mlx="0.32.0", trainer="mlx-lm train", held_out=False,
         uncertain=PERF_NOTE.replace("Published as the marginal peak above ~4.29 GiB of resident model state; the "
                                     "total is that sum (rounding of the resident figure: +-0.05 GiB).",
                                     "Published as the total peak (GiB).")),
    dict(name="mlx-train-perf Qwen3-8B-4bit L7936 (context ceiling)", config="Qwen3-8B-4bit",
         measured_gb=24.5 * GIB,
         settings=dict(num_layers=-1, rank=8, batch_size=1, max_seq_length=7936, grad_checkpoint=True,
                       optimizer="adamw"),
         source=PERF + " (section 5 table) and the project's CHANGELOG", machine="M1 Max 32 GB", mlx="0.32.0",
         trainer="mlx-lm train", held_out=False,
         uncertain="'about 24.5 GiB' at the largest context that completed; " + PERF_NOTE.split(";")[0]),
    dict(name="mlx-lm PR #53 1B L2048 b4 (compiled step)", config="Llama-3.2-1B-Instruct", measured_gb=40.508,
         source="https://github.com/ml-explore/mlx-lm/pull/53 ('Post': Peak mem 40.508 GB)", **PR53,
         uncertain="'a 1B' model: taken as Llama-3.2-1B (bf16); mlx-lm's defaults of 2025-03 (16 blocks, rank 8, "
                   "q_proj and v_proj; checked in mlx-lm's history); 80,880 tokens in 10 iterations of batch 4 "
                   "(~2,022 per row) with 'a ~2048 sequence length': rows taken as filling 2048"),
    dict(name="mlx-lm PR #53 1B L2048 b4 (step not compiled)", config="Llama-3.2-1B-Instruct", measured_gb=47.302,
         source="https://github.com/ml-explore/mlx-lm/pull/53 ('Pre': Peak mem 47.302 GB)", **PR53,
         uncertain="the same run as the compiled row before the step was compiled (the estimate does not tell a "
                   "compiled step from one that is not: its coefficients come from compiled steps)"),
    dict(name="mlx-lm PR #47 1B L4096 b4 (step not compiled)", config="Llama-3.2-1B-Instruct", measured_gb=69.810,
         settings=dict(num_layers=16, rank=8, target_modules=("q_proj", "v_proj"), batch_size=4,
                       max_seq_length=4096),
         source="https://github.com/ml-explore/mlx-lm/pull/47 (description, 2025-03-22, 'Without splitting': "
                "Iter 5 ... Trained Tokens 81900, Peak mem 69.810 GB)", machine="not stated (>= 96 GB)",
         mlx="mlx and mlx-lm main of 2025-03-22", trainer="mlx-lm train", held_out=True, mechanisms=OLDER_MLX,
         uncertain="mlx-community/llama-3.2-1B-Instruct-bf16, mlx-lm's defaults of the day (16 blocks = all, rank "
                   "8, q_proj and v_proj, batch 4, Adam, no checkpointing, step not compiled before mlx-lm #53); "
                   "81,900 trained tokens in 5 iterations = 4 x 4,095 per step: every row cut at 4,096; run on the "
                   "PR's branch without its --seq-step-size (the same path as main); the data is not named"),
    dict(name="unsloth PR #1289 Llama-3-8B 4-bit b2 wikisql", config="Meta-Llama-3-8B", base_bits=4,
         measured_gb=5.419,
         settings=dict(num_layers=16, rank=16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
                       batch_size=2, max_seq_length=128, optimizer="adamw"),
         source="https://github.com/unslothai/unsloth/pull/1289 (comment of 2025-06-01, M1 Max 32 GB: "
                "'Peak mem 5.419 GB' at iterations 2-4 of unsloth-cli.py --load_in_4bit on MLX)",
         machine="M1 Max 32 GB", mlx="mlx and mlx-lm latest of 2025-06-01", trainer="mlx-lm train (via unsloth)",
         held_out=True,
         uncertain="unsloth/llama-3-8b quantized to 4 bits at load (MLX affine, group 64 taken); 6.816M trainable "
                   "parameters = LoRA rank 16 on q, k, v, o of 16 blocks (mlx-lm's default block count; rank 8 "
                   "on 32 blocks gives the same count and estimates 6.53 GB, +20%); mlx-community/wikisql rows of "
                   "~96 tokens by the log (192 trained tokens for the 2 rows of iteration 1), so the longest batch "
                   "of the first iterations is taken as 128 (mlx-lm pads to 32 + 1); AdamW (--optim adamw_torch). "
                   "The same run's peak grew to 5.914 GB by iteration 86 (a longer batch; at 192 tokens the "
                   "estimate is 6.29 GB, +6%)"),
    dict(name="seed 000 Qwen3-1.7B full b3", config="Qwen3-1.7B", measured_gb=20.6,
         settings=dict(method="full", num_layers=-1, batch_size=3, max_seq_length=1024),
         source="seed 000 (resources/estimator/calibration.yaml seeds)", machine="M4 Max 128 GB", mlx="not stated",
         trainer="mlx-lm (MLX-LM)", held_out=True,
         uncertain="~3,000 tokens per iteration of 3 rows: rows of ~1,000 tokens padded to 1,024; every block "
                   "trained; the optimizer is not stated (Adam taken)"),
    dict(name="seed 000 Gemma3-12B full b2", config="gemma-3-12b-it", measured_gb=102.1,
         settings=dict(method="full", num_layers=-1, batch_size=2, max_seq_length=1056),
         source="seed 000 (resources/estimator/calibration.yaml seeds)", machine="M4 Max 128 GB", mlx="not stated",
         trainer="mlx-lm (MLX-LM)", held_out=True,
         uncertain="~2,100 tokens per iteration of 2 rows: ~1,050 padded to 1,056; the optimizer is not stated"),
    dict(name="mlx-tune Qwen3-0.6B L1024 q/v 16 blocks", config="Qwen3-0.6B", measured_gb=2.6,
         settings=dict(num_layers=16, rank=16, target_modules=("q_proj", "v_proj"), batch_size=1,
                       max_seq_length=1024),
         source="https://arahim3.github.io/mlx-tune/performance.html (SFT row)", machine="M4 Pro 48 GB",
         mlx="not stated", trainer="mlx-lm train (via mlx-tune)", held_out=True, context_is_maximum=True,
         uncertain=MLX_TUNE_NOTE + " 'LoRA rank 8-16' (16 taken)."),
    dict(name="mlx-tune Qwen3-0.6B L4096 all blocks", config="Qwen3-0.6B", measured_gb=18.0,
         settings=dict(num_layers=-1, rank=16, batch_size=1, max_seq_length=4096),
         source="https://arahim3.github.io/mlx-tune/performance.html (SFT row)", machine="M4 Pro 48 GB",
         mlx="not stated", trainer="mlx-lm train (via mlx-tune)", held_out=True, context_is_maximum=True,
         uncertain=MLX_TUNE_NOTE + " 'full LoRA, no checkpointing' taken as every linear layer of every block; "
                   "at a full 4,096 tokens the step would keep ~15.5 GB of attention probabilities alone "
                   "(28 blocks x 16 heads x 4096^2 bf16), more than the 18 GB peak leaves beside the rest."),
]


def implied_length(shape, row: dict) -> int | None:
    """The sequence length (a multiple of 32) at which the estimate first reaches the measured peak."""
    for length in range(64, row["settings"]["max_seq_length"] + 1, 32):  # (no older-MLX row gives a maximum)
        settings = estimator.Settings(device="gpu", **{**row["settings"], "max_seq_length": length})
        if estimator.estimate(shape, settings).total_gb >= row["measured_gb"]:
            return length
    return None


def estimate_row(row: dict) -> dict:
    shape = read_shape(shipped("resources", "estimator", "configs", row["config"]))
    if row.get("base_bits"):  # trained on a base quantized at load (MLX affine, group 64)
        shape = replace(shape, quant_bits=row["base_bits"], quant_group=64)
    settings = estimator.Settings(device="gpu", **row["settings"])
    with mechanisms_of(row):
        est = estimator.estimate(shape, settings)
    out = {k: v for k, v in row.items() if k != "settings"}
    if row.get("context_is_maximum"):
        out["implied_length"] = implied_length(shape, row)
    out["settings"] = {k: list(v) if isinstance(v, tuple) else v for k, v in row["settings"].items()}
    if row.get("mechanisms"):  # what today's mechanisms would have said of it
        out["estimate_today_gb"] = round(estimator.estimate(shape, settings).total_gb, 3)
    out.update(measured_gb=round(row["measured_gb"], 3), estimate_gb=round(est.total_gb, 3),
               error=round((est.total_gb - row["measured_gb"]) / row["measured_gb"], 4), phase=est.phase,
               breakdown_gb=est.breakdown_gb())
    return out


def summary(rows: list[dict]) -> dict:
    if not rows:
        return {}
    errors = [r["error"] for r in rows]
    return {"rows": len(rows), "median_abs_error": round(statistics.median(map(abs, errors)), 4),
            "signed_median_error": round(statistics.median(errors), 4),
            "worst_abs_error": round(max(map(abs, errors)), 4)}


def summaries(rows: list[dict]) -> dict:
    known = [r for r in rows if not r.get("context_is_maximum")]
    mlx_lm = [r for r in known if r["trainer"].startswith("mlx-lm") and not r.get("mechanisms")]
    return {"mlx-lm trainer": summary(mlx_lm), "mlx-lm trainer, held out": summary([r for r in mlx_lm if r["held_out"]]),
            "mlx-lm trainer, " + OLDER_MLX: summary([r for r in known if r.get("mechanisms") == OLDER_MLX]),
            "other trainers": summary([r for r in known if not r["trainer"].startswith("mlx-lm")]),
            "context a maximum (lengths unknown)": summary([r for r in rows if r.get("context_is_maximum")]),
            "all rows": summary(rows)}


def write(path: Path, rows: list[dict]) -> None:
    data = {"provenance": {"source": "bench/calibrate_metal.py", "estimator": "core.estimator, Metal mode (device gpu)",
                           "note": "published measurements; estimates recomputed from the shipped configs"},
            "summary": summaries(rows), "rows": rows}
    header = ("# The public Metal calibration table (docs/estimator.md shows it): published mx.get_peak_memory()\n"
              "# figures from mlx-lm training on Apple-silicon Macs against the estimator's Metal mode.\n"
              "# Written by bench/calibrate_metal.py; do not edit by hand.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")


def markdown(path: Path) -> str:
    data = yaml.safe_load(path.read_text())
    lines = ["| row | trainer | held out | measured GB | estimate GB | error | source |", "|---|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['name']} | {r['trainer']}{', older MLX' if r.get('mechanisms') else ''} | "
              f"{'yes' if r['held_out'] else 'no'} | {r['measured_gb']:.2f} | "
              f"{r['estimate_gb']:.2f} | {r['error']:+.1%}"
              f"{_today(r)}"
              f"{' (meets the peak at ' + str(r['implied_length']) + ' tokens)' if r.get('implied_length') else ''} | "
              f"{r['source']} |" for r in data["rows"]]
    lines.append("")
    for name, s in data["summary"].items():
        if s:
            lines.append(f"- {name}: {s['rows']} rows, median |error| {s['median_abs_error']:.1%}, signed median "
                         f"{s['signed_median_error']:+.1%}, worst {s['worst_abs_error']:.1%}")
    return "\n".join(lines)


def _today(row: dict) -> str:
    if "estimate_today_gb" not in row:
        return ""
    error = (row["estimate_today_gb"] - row["measured_gb"]) / row["measured_gb"]
    return f" (today's mechanisms: {row['estimate_today_gb']:.2f} GB, {error:+.0%})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(args.out))
        return 0
    rows = [estimate_row(r) for r in ROWS]
    write(args.out, rows)
    print(yaml.safe_dump(summaries(rows), sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
