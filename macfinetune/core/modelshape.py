"""A model's shape read from its config.json alone: sizes, the linear layers of a block, parameters.

No weights are needed, so the estimator works before a download. Fields a config leaves out
are taken from the defaults of the architecture (as the Hugging Face config class would) and
named in ``ModelShape.uncertain``; an architecture mlx-lm does not know is estimated as a
llama-like block, and said so.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core.problems import Problem, ProblemError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


@dataclass(frozen=True)
class Linear:
    """One linear layer inside a transformer block, named as mlx-lm names it."""

    name: str  # path inside the block, e.g. 'self_attn.q_proj' (mlx-lm's LoRA key)
    inputs: int
    outputs: int
    bias: bool = False
    copies: int = 1  # experts of a mixture-of-experts layer share one name
    group: str = ""  # layers that read the same input share a group ('attn_in', 'o_in', 'mlp_in', 'down_in')


@dataclass(frozen=True)
class Family:
    """How an architecture lays out its block: what the estimator needs beyond the sizes."""

    layout: str  # 'gated' (q,k,v,o + gate,up,down), 'phi' (q,k,v,dense + fc1,fc2), 'fused' (qkv + gate_up)
    kind: str = "llama"  # whose measured activation coefficients apply (memory_model.yaml)
    norms: int = 2  # norm layers per block
    qk_norm: bool = False
    attn_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False
    tied_default: bool = True  # mlx-lm's default when the config does not say
    always_tied: bool = False  # the output head is the embedding, whatever the config says
    head_bias: bool = False
    known: bool = True  # mlx-lm implements it


_LLAMA = Family("gated")
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": Family("gated", attn_bias=True),
    "qwen3": Family("gated", "qwen3", qk_norm=True),
    "gemma": Family("gated", "gemma3_text", always_tied=True),
    "gemma2": Family("gated", "gemma3_text", norms=4, always_tied=True),
    "gemma3_text": Family("gated", "gemma3_text", norms=4, qk_norm=True, always_tied=True),
    "phi": Family("phi", "phi", attn_bias=True, mlp_bias=True, norm_bias=True, norms=1, tied_default=False,
                  head_bias=True),
    "phi3": Family("fused", tied_default=False),
    "starcoder2": Family("phi", "phi", attn_bias=True, mlp_bias=True, norm_bias=True),
    "olmo2": Family("gated", "qwen3", qk_norm=True),
    "granite": _LLAMA,
    "smollm3": _LLAMA,
    "mixtral": _LLAMA,
    "qwen2_moe": Family("gated", attn_bias=True),
    "qwen3_moe": Family("gated", "qwen3", qk_norm=True),
}
# Multimodal wrappers whose text model mlx-lm trains (the vision tower is dropped on load).
_TEXT_MODEL_TYPES = {"gemma3": "gemma3_text", "mistral3": "mistral", "qwen2_vl": "qwen2", "qwen3_vl": "qwen3"}
# What the Hugging Face config classes assume when a field is absent.
_FIELD_DEFAULTS: dict[str, dict] = {
    "gemma3_text": {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "max_position_embeddings": 131072},
    "gemma2": {"head_dim": 256, "vocab_size": 256000},
    "gemma": {"head_dim": 256, "vocab_size": 256000},
    "qwen3": {"head_dim": 128},
    "phi": {"vocab_size": 51200, "intermediate_size": 10240},
}
_ALIASES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "intermediate_size": ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_key_value_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"),
    "vocab_size": ("vocab_size", "padded_vocab_size", "n_vocab"),
    "head_dim": ("head_dim",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
# Which estimate terms a guessed field moves.
_AFFECTS = {
    "hidden_size": "every term", "intermediate_size": "weights and activations", "num_hidden_layers": "every term",
    "num_attention_heads": "attention and weights", "num_key_value_heads": "weights and activations",
    "vocab_size": "weights and logits", "head_dim": "weights, activations and attention",
    "max_position_embeddings": "the longest allowed sequence",
}


@dataclass(frozen=True)
class ModelShape:
    """Everything about a model's size that memory and time depend on."""

    model_type: str
    family: Family
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    max_positions: int | None
    dtype: str
    quant_bits: int | None
    quant_group: int
    linears: tuple[Linear, ...]
    experts_per_token: int = 0  # mixture of experts: experts used per token (0: dense)
    uncertain: tuple[str, ...] = ()

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 2)

    @property
    def attn_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def linear_params(self) -> int:
        """Weights (and biases) of one block's linear layers."""
        return sum(x.copies * (x.inputs * x.outputs + (x.outputs if x.bias else 0)) for x in self.linears)

    @property
    def norm_params(self) -> int:
        per_norm = self.hidden * (2 if self.family.norm_bias else 1)
        return self.family.norms * per_norm + (2 * self.head_dim if self.family.qk_norm else 0)

    @property
    def block_params(self) -> int:
        return self.linear_params + self.norm_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        """The output projection when it is not the embedding itself."""
        if self.tied:
            return 0
        return self.vocab * self.hidden + (self.vocab if self.family.head_bias else 0)

    @property
    def total_params(self) -> int:
        final_norm = self.hidden * (2 if self.family.norm_bias else 1)
        return self.layers * self.block_params + self.embedding_params + self.head_params + final_norm

    def names(self) -> tuple[str, ...]:
        return tuple(x.name for x in self.linears)


# --- reading -----------------------------------------------------------------------------


def read_shape(folder: Path | str) -> ModelShape:
    """The shape of the model in ``folder`` (only config.json is needed; weights refine the dtype)."""
    folder = Path(folder).expanduser()
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProblemError(Problem("no config.json in the model folder", file=str(folder), value=str(folder))) from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ProblemError(Problem(f"cannot be read: {getattr(e, 'msg', e)}", file=str(path),
                                   line=getattr(e, "lineno", None))) from None
    if not isinstance(config, dict):
        raise ProblemError(Problem("not a JSON object", file=str(path)))
    return shape_from_config(config, file=str(path), weights_dtype=weights_dtype(folder))


def shape_from_config(config: dict, file: str = "config.json", weights_dtype: str | None = None) -> ModelShape:
    """Sizes from a config dict; missing fields come from the architecture's defaults (noted)."""
    model_type, fields, notes = _merged_fields(config)
    family = FAMILIES.get(model_type)
    if family is None:
        family = Family("gated", known=False)
        notes.append(f"architecture {model_type!r} is not one mlx-lm trains here; estimated as a llama-like block; "
                     "uncertain: weights, activations and trainable parameters (the block's layers are guessed)")
    sizes = _sizes(fields, model_type, file, notes)
    dtype, note = _dtype(fields, weights_dtype)
    notes += [note] if note else []
    bits, group = _quantization(config, notes)
    experts, per_token = _experts(fields, notes)
    tied = _tied(fields, family, notes)
    linears = block_linears(family, sizes, experts)
    return ModelShape(
        model_type=model_type, family=family, linears=linears, tied=tied, dtype=dtype,
        quant_bits=bits, quant_group=group, experts_per_token=per_token, uncertain=tuple(notes), **sizes,
    )


def _merged_fields(config: dict) -> tuple[str, dict, list[str]]:
    """Top-level fields overlaid with the text model's (multimodal configs nest it)."""
    notes: list[str] = []
    model_type = str(config.get("model_type") or "")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    fields = {**config, **text}
    if model_type in _TEXT_MODEL_TYPES:
        model_type = _TEXT_MODEL_TYPES[model_type]
    elif text.get("model_type") in FAMILIES:
        model_type = text["model_type"]
    if not model_type:
        notes.append("config.json has no model_type; estimated as a llama-like block")
        model_type = "unknown"
    return model_type, fields, notes


def _sizes(fields: dict, model_type: str, file: str, notes: list[str]) -> dict:
    defaults = _FIELD_DEFAULTS.get(model_type, {})
    raw = {name: _first_int(fields, aliases) for name, aliases in _ALIASES.items()}
    for name, value in defaults.items():
        if raw.get(name) is None:
            raw[name] = value
            notes.append(f"{name} missing: took {value} ({model_type}'s default); uncertain: {_AFFECTS[name]}")
    missing = [name for name in _REQUIRED if raw.get(name) is None]
    if missing:
        raise ProblemError(
            Problem(f"config.json lacks {', '.join(missing)}: the model's size cannot be estimated", file=file,
                    field=missing[0])
        )
    return _derived_sizes(raw, fields, notes)


def _derived_sizes(raw: dict, fields: dict, notes: list[str]) -> dict:
    hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
    kv = raw["num_key_value_heads"]
    if kv is None:
        kv = 1 if fields.get("multi_query") else heads
        if not fields.get("multi_query"):
            notes.append("num_key_value_heads missing: assumed one per attention head; uncertain: "
                         + _AFFECTS["num_key_value_heads"])
    intermediate = raw["intermediate_size"]
    if intermediate is None:
        intermediate = 4 * hidden
        notes.append(f"intermediate_size missing: assumed 4 x hidden = {intermediate}; uncertain: "
                     + _AFFECTS["intermediate_size"])
    return {
        "hidden": hidden, "intermediate": intermediate, "layers": raw["num_hidden_layers"], "heads": heads,
        "kv_heads": kv, "head_dim": raw["head_dim"] or hidden // heads, "vocab": raw["vocab_size"],
        "max_positions": raw["max_position_embeddings"],
    }


def _first_int(fields: dict, aliases: tuple[str, ...]) -> int | None:
    for key in aliases:
        value = fields.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _dtype(fields: dict, weights_dtype: str | None) -> tuple[str, str | None]:
    if weights_dtype:
        return weights_dtype, None
    declared = fields.get("torch_dtype") or fields.get("dtype")
    if declared in DTYPE_BYTES:
        return declared, None
    return "bfloat16", "the weights' dtype is not given: assumed bfloat16; uncertain: every term"


def _quantization(config: dict, notes: list[str]) -> tuple[int | None, int]:
    quant = config.get("quantization") or config.get("quantization_config") or {}
    if not isinstance(quant, dict) or not quant:
        return None, 64
    method = quant.get("quant_method")
    bits = quant.get("bits")
    if method and method not in ("mlx", "affine") and "group_size" not in quant:
        notes.append(f"quantization {method!r} is not MLX's; mlx-lm cannot train it as it is")
    if not isinstance(bits, int):
        notes.append("quantization without 'bits': assumed 4; uncertain: weights")
        bits = 4
    group = quant.get("group_size") if isinstance(quant.get("group_size"), int) else 64
    return bits, group


def _experts(fields: dict, notes: list[str]) -> tuple[int, int]:
    experts = _first_int(fields, ("num_local_experts", "num_experts", "n_routed_experts"))
    if not experts:
        return 0, 0
    per_token = _first_int(fields, ("num_experts_per_tok", "num_experts_per_token", "top_k")) or 2
    notes.append(f"mixture of {experts} experts ({per_token} per token): activations assume the routed share; "
                 "uncertain: activations")
    return experts, per_token


def _tied(fields: dict, family: Family, notes: list[str]) -> bool:
    value = fields.get("tie_word_embeddings")
    if family.always_tied:
        return True
    if isinstance(value, bool):
        return value
    notes.append(f"tie_word_embeddings missing: assumed {family.tied_default} (mlx-lm's default); uncertain: weights")
    return family.tied_default


def block_linears(family: Family, sizes: dict, experts: int = 0) -> tuple[Linear, ...]:
    """The linear layers of one block in mlx-lm's naming, with the input each one reads."""
    h, i = sizes["hidden"], sizes["intermediate"]
    q, kv = sizes["heads"] * sizes["head_dim"], sizes["kv_heads"] * sizes["head_dim"]
    ab, mb, n = family.attn_bias, family.mlp_bias, max(experts, 1)
    if family.layout == "phi":  # attention and MLP read the same normalised input
        return (Linear("self_attn.q_proj", h, q, ab, 1, "attn_in"), Linear("self_attn.k_proj", h, kv, ab, 1, "attn_in"),
                Linear("self_attn.v_proj", h, kv, ab, 1, "attn_in"), Linear("self_attn.dense", q, h, ab, 1, "o_in"),
                Linear("mlp.fc1", h, i, mb, n, "attn_in"), Linear("mlp.fc2", i, h, mb, n, "down_in"))
    if family.layout == "fused":
        return (Linear("self_attn.qkv_proj", h, q + 2 * kv, group="attn_in"), Linear("self_attn.o_proj", q, h, group="o_in"),
                Linear("mlp.gate_up_proj", h, 2 * i, copies=n, group="mlp_in"),
                Linear("mlp.down_proj", i, h, copies=n, group="down_in"))
    mlp = "mlp.switch_mlp" if experts else "mlp"
    return (Linear("self_attn.q_proj", h, q, ab, 1, "attn_in"), Linear("self_attn.k_proj", h, kv, ab, 1, "attn_in"),
            Linear("self_attn.v_proj", h, kv, ab, 1, "attn_in"), Linear("self_attn.o_proj", q, h, False, 1, "o_in"),
            Linear(f"{mlp}.gate_proj", h, i, mb, n, "mlp_in"), Linear(f"{mlp}.up_proj", h, i, mb, n, "mlp_in"),
            Linear(f"{mlp}.down_proj", i, h, mb, n, "down_in"))


def weights_dtype(folder: Path) -> str | None:
    """The floating dtype of the first safetensors file's tensors, read from its header only."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    try:
        with open(files[0], "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(min(size, 50_000_000)))
    except (OSError, ValueError, struct.error):
        return None
    kinds = [v.get("dtype") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    floats = [_SAFETENSORS_DTYPES[k] for k in kinds if k in _SAFETENSORS_DTYPES]
    return max(set(floats), key=floats.count) if floats else None
