"""The recipe schema: sections as frozen dataclasses, each field with its help text and allowed values."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields

SCHEMA_VERSION = 1


def knob(default, help: str, *, choices=None, low=None, high=None, special=(), texts=False):
    """A recipe field: its default, its help text and its allowed values (``texts``: a list of free text)."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "special": special, "texts": texts}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelSection:
    path: str = knob("", "Local model folder or Hugging Face repo id (e.g. mlx-community/Qwen3-0.6B-bf16).")
    quantize: int | None = knob(
        None,
        "Quantize a full-precision base to 4 or 8 bits into the run folder before training "
        "(QLoRA); null trains the model as it is.",
        choices=(None, 4, 8),
    )
    quantize_group_size: int = knob(64, "Group size of on-the-fly quantization.", choices=(32, 64, 128))


@dataclass(frozen=True)
class DataSection:
    path: str = knob(
        "",
        "A dataset file (.jsonl, .json, .csv, .tsv, .txt/.md), a folder (train/valid[/test] files, "
        ".txt/.md files, or a saved Hugging Face dataset), or a Hugging Face dataset name; "
        "a seeded validation split is made when there is none.",
    )
    mask_prompt: bool = knob(
        False, "Train on completions only: the loss ignores the prompt (chat and completions data)."
    )
    max_seq_length: int = knob(
        2048, "Longest sequence in tokens; longer rows are truncated, and .txt/.md documents are split into "
        "chunks of this many tokens.", low=8
    )
    chunk_overlap: int = knob(
        0, "Tokens from the end of one chunk of a .txt/.md document repeated at the start of the next "
        "(0: chunks follow each other); less than half of max_seq_length.", low=0
    )
    valid_fraction: float = knob(
        0.1, "Share of rows held out for validation when the data has no valid.jsonl.", low=0.01, high=0.5
    )
    packing: bool = knob(
        False, "Pack several short rows into each max_seq_length sequence (separated by EOS; attention and loss "
        "stay inside each row): far fewer padding tokens on short data. An iteration then trains several rows "
        "per batch slot."
    )
    length_buckets: bool = knob(
        False, "Batch rows of similar length together (reshuffled every epoch from the seed) and pad each batch "
        "only to its longest row: less padding than mlx-lm's batching."
    )


@dataclass(frozen=True)
class MethodSection:
    type: str = knob("lora", "lora, dora (weight-decomposed LoRA) or full fine-tuning.", choices=("lora", "dora", "full"))
    num_layers: int = knob(
        16, "Transformer blocks trained, counted from the last; -1 for all.", low=1, special=(-1,)
    )
    rank: int = knob(8, "LoRA/DoRA rank r: the width of the low-rank update.", low=1, high=4096)
    alpha: float = knob(
        16.0, "LoRA/DoRA alpha; the update is scaled by alpha / rank (mlx-lm's 'scale').", low=1e-6
    )
    dropout: float = knob(0.0, "Dropout on the LoRA/DoRA input during training.", low=0.0, high=0.9)
    target_modules: tuple[str, ...] = knob(
        (),
        "Module names to adapt inside each block, e.g. [q_proj, v_proj]; 'all' (or empty) "
        "adapts every linear layer (mlx-lm's default).",
    )

    @property
    def scale(self) -> float:
        """mlx-lm's LoRA scale."""
        return self.alpha / self.rank


@dataclass(frozen=True)
class TrainingSection:
    iterations: int | None = knob(
        1000,
        "Training iterations (one batch each); set this or epochs, not both.",
        low=1,
    )
    epochs: float | None = knob(
        None, "Passes over the training rows; converted to iterations from the data size and batch.", low=0.001
    )
    batch_size: int = knob(4, "Rows per iteration.", low=1, high=4096)
    grad_accumulation: int = knob(
        1, "Iterations whose gradients are summed before one optimizer update.", low=1, high=1024
    )
    learning_rate: float = knob(1e-5, "Peak learning rate.", low=1e-12, high=1.0)
    lr_schedule: str = knob(
        "constant", "Learning-rate schedule after warmup.", choices=("constant", "cosine", "linear")
    )
    min_lr_ratio: float = knob(
        0.0, "Final learning rate of the cosine or linear schedule, as a share of the peak.", low=0.0, high=1.0
    )
    warmup_steps: int = knob(0, "Optimizer updates of linear warmup from 0 to the peak rate.", low=0)
    warmup_ratio: float = knob(
        0.0, "Warmup as a share of all optimizer updates (instead of warmup_steps).", low=0.0, high=0.5
    )
    optimizer: str = knob("adam", "Optimizer: adam, adamw (decoupled weight decay), sgd or adafactor (least memory).", choices=("adam", "adamw", "sgd", "adafactor"))
    weight_decay: float = knob(0.0, "Decoupled weight decay (adamw, sgd, adafactor).", low=0.0, high=1.0)
    grad_checkpoint: bool = knob(
        False, "Recompute activations in the backward pass: less memory, about 30% slower."
    )
    seed: int = knob(0, "Seed for data order, LoRA initialisation and dropout.", low=0)
    attention: str = knob(
        "auto", "Attention in training: memory_light keeps no L x L scores for the backward pass (it recomputes "
        "them: far less memory at long sequences); stock is mlx's; auto uses memory_light from 2048 tokens.",
        choices=("auto", "stock", "memory_light"),
    )
    loss: str = knob(
        "auto", "Loss in training: chunked computes the logits a chunk of tokens at a time and recomputes them "
        "in the backward pass (less memory with large vocabularies); auto chunks when a batch's float32 logits "
        "pass 256 MiB.", choices=("auto", "stock", "chunked"),
    )
    objective: str = knob(
        "sft", "What the run learns: sft (supervised, the answers in the data), dpo (Direct Preference "
        "Optimization: prefer each pair's chosen answer over its rejected one, relative to the base model) or "
        "orpo (odds-ratio preference: supervised loss on the chosen answer plus a preference term, no reference). "
        "dpo and orpo need preference pairs (prompt, chosen, rejected).", choices=("sft", "dpo", "orpo"),
    )
    dpo_beta: float = knob(
        0.1, "DPO's beta: how far the model may move from the base to express a preference; the loss is "
        "-log sigmoid(beta x (chosen - rejected log-ratio to the base)). Smaller lets it move further.",
        low=0.001, high=10.0,
    )
    orpo_lambda: float = knob(
        0.1, "ORPO's lambda: the weight of the odds-ratio preference term added to the supervised loss on the "
        "chosen answer.", low=0.0, high=10.0,
    )


@dataclass(frozen=True)
class EvalSection:
    report_every: int = knob(10, "Iterations between training-loss reports.", low=1)
    eval_every: int = knob(50, "Iterations between validation passes.", low=1)
    save_every: int = knob(50, "Iterations between checkpoints.", low=1)
    val_batches: int = knob(25, "Validation batches per pass; -1 for the whole validation set.", low=1, special=(-1,))
    early_stopping_patience: int = knob(
        0, "Stop after this many validations without improvement (0: never stop early).", low=0
    )
    early_stopping_min_delta: float = knob(
        0.0, "Smallest drop in validation loss that counts as an improvement.", low=0.0
    )
    keep_checkpoints: int = knob(
        0, "Keep only the best N checkpoints by validation loss, plus the latest (0: keep all).", low=0
    )
    samples: bool = knob(
        False, "At every checkpoint, answer a few fixed prompts greedily with its weights (samples.jsonl; the "
        "Checkpoints page shows them side by side). Off by default: it costs training time."
    )
    sample_prompts: tuple[str, ...] = knob(
        (), "Prompts for the checkpoint samples, each a user message; empty: the first prompts of the "
        "validation set.", texts=True
    )
    sample_count: int = knob(3, "How many prompts each checkpoint answers.", low=1, high=32)
    sample_max_tokens: int = knob(48, "Longest answer of a checkpoint sample, in tokens.", low=1, high=2048)


@dataclass(frozen=True)
class Recipe:
    schema: int = knob(SCHEMA_VERSION, "Recipe schema version.")
    name: str = knob("", "Short name of the recipe.")
    description: str = knob("", "What the recipe is for.")
    model: ModelSection = field(default_factory=ModelSection, metadata={"help": "The base model."})
    data: DataSection = field(default_factory=DataSection, metadata={"help": "The dataset."})
    method: MethodSection = field(default_factory=MethodSection, metadata={"help": "How weights are trained."})
    training: TrainingSection = field(default_factory=TrainingSection, metadata={"help": "Optimisation."})
    eval: EvalSection = field(default_factory=EvalSection, metadata={"help": "Reports, validation and checkpoints."})


SECTIONS = ("model", "data", "method", "training", "eval")
_TOP_SCALARS = ("schema", "name", "description")

# Keys people bring from other tools: where they go in a recipe, or why they do not exist here.
FOREIGN_KEYS: dict[str, str] = {
    "lora_r": "use method.rank",
    "lora_rank": "use method.rank",
    "r": "use method.rank",
    "lora_alpha": "use method.alpha (mlx-lm's scale = alpha / rank)",
    "scale": "use method.alpha: mlx-lm's scale = alpha / rank",
    "lora_dropout": "use method.dropout",
    "lora_layers": "use method.num_layers",
    "dora_layers": "use method.num_layers with method.type: dora",
    "fine_tune_type": "use method.type",
    "iters": "use training.iterations",
    "max_iterations": "use training.iterations",
    "num_train_epochs": "use training.epochs",
    "gradient_accumulation_steps": "use training.grad_accumulation",
    "gradient_checkpointing": "use training.grad_checkpoint",
    "max_length": "use data.max_seq_length",
    "lr": "use training.learning_rate",
    "torch_compile": "MLX compiles the training step itself; remove the key",
    "load_in_4bit": "use model.quantize: 4 (MLX affine 4-bit, not nf4)",
    "bnb_4bit_quant_type": "nf4 is a bitsandbytes format; MLX uses affine quantization: model.quantize: 4",
    "fp16": "MLX trains in the model's own dtype; remove the key",
    "bf16": "MLX trains in the model's own dtype; remove the key",
    # litgpt, Hugging Face Trainer/PEFT/TRL and mlx-lm command-line names (issue 3)
    "micro_batch_size": "use training.batch_size (rows per iteration; litgpt's micro batch)",
    "per_device_train_batch_size": "use training.batch_size",
    "global_batch_size": "use training.batch_size x training.grad_accumulation (global batch / micro batch)",
    "grad_accumulation_steps": "use training.grad_accumulation",
    "lr_warmup_steps": "use training.warmup_steps",
    "lr_scheduler_type": "use training.lr_schedule (constant, cosine or linear)",
    "min_lr": "use training.min_lr_ratio = min_lr / learning_rate",
    "lr_decay_iters": "the schedule decays over the whole run; set training.iterations",
    "max_steps": "use training.iterations",
    "optim": "use training.optimizer (adam, adamw, sgd or adafactor)",
    "use_dora": "use method.type: dora",
    "lora_query": "use method.target_modules, e.g. [q_proj, v_proj]",
    "lora_key": "use method.target_modules, e.g. [q_proj, k_proj, v_proj]",
    "lora_value": "use method.target_modules, e.g. [q_proj, v_proj]",
    "lora_projection": "use method.target_modules with o_proj",
    "lora_mlp": "use method.target_modules with gate_proj, up_proj, down_proj",
    "lora_head": "mlx-lm adapts the layers inside the blocks, not the output head; remove the key",
    "bnb_4bit_use_double_quant": "MLX affine quantization has no double quantization; model.quantize: 4 is enough",
    "bnb_4bit_compute_dtype": "MLX computes in the model's own dtype; remove the key",
    "quantization_config": "use model.quantize: 4 or 8 (MLX affine, group model.quantize_group_size)",
    "precision": "MLX trains in the model's own dtype (bf16 weights train in bf16); remove the key",
    "eval_steps": "use eval.eval_every",
    "steps_per_eval": "use eval.eval_every",
    "save_steps": "use eval.save_every",
    "logging_steps": "use eval.report_every",
    "steps_per_report": "use eval.report_every",
    "load_best_model_at_end": "the best checkpoint by validation loss is always kept (fuse RUN --checkpoint best)",
    "task_type": "macfinetune trains causal language models; remove the key",
    "devices": "MLX trains on one Mac's GPU; remove the key",
    # preference tuning (TRL's DPOConfig/ORPOConfig, mlx-lm-lora)
    "beta": "use training.dpo_beta for DPO's beta, or training.orpo_lambda for ORPO's lambda "
            "(TRL's ORPOConfig calls it beta)",
    "orpo_alpha": "use training.orpo_lambda",
    "loss_type": "use training.objective: dpo (the sigmoid DPO loss) or orpo; other loss types "
                 "(hinge, ipo, simpo) are not offered",
    "ref_model": "the reference is the base model itself: its log-probabilities are computed once before "
                 "training (no second copy in memory); remove the key",
    "reference_model": "the reference is the base model itself; remove the key",
    "precompute_ref_log_probs": "the reference log-probabilities are always computed once before training; "
                                "remove the key",
    "train_type": "use training.objective (sft, dpo or orpo) and method.type (lora, dora or full)",
    "training_mode": "use training.objective (sft, dpo or orpo)",
    "max_prompt_length": "use data.max_seq_length: prompt and answer together",
    "max_completion_length": "use data.max_seq_length: prompt and answer together",
}


def field_help(section: str, name: str) -> str:
    cls = _section_class(section)
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def all_keys() -> list[str]:
    """Every settable key, dotted: 'training.batch_size', ..."""
    keys = [k for k in _TOP_SCALARS if k != "schema"]
    for section in SECTIONS:
        keys += [f"{section}.{f.name}" for f in fields(_section_class(section))]
    return keys


def _field(cls, name):
    return next((f for f in fields(cls) if f.name == name), None)


def _section_class(section: str):
    return typing.get_type_hints(Recipe)[section]

