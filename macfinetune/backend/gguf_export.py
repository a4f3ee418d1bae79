"""GGUF export with llama.cpp's own Python library (``gguf``): the file current llama.cpp loads.

What llama.cpp's ``convert_hf_to_gguf.py`` does for each supported architecture, done here from
the fused MLX weights in memory (mlx-lm keeps the Hugging Face tensor names):

1. ``plan_gguf`` reads only the base model's folder (config.json, tokenizer files) and refuses an
   architecture, tokenizer or RoPE scaling it does not support, before any weight is loaded.
2. The vocabulary: SentencePiece (``tokenizer.model``) -> ``llama`` with scores; a Hugging Face BPE
   with byte fallback (Llama 2 / Mistral ``tokenizer.json``) -> ``llama`` via ``gguf.LlamaHfVocab``;
   byte-level BPE -> ``gpt2`` with merges and a ``tokenizer.ggml.pre`` from llama.cpp's own table
   of pre-tokenizer hashes (``backend/gguf_pretokenizers.py``). Special-token ids, add-BOS
   flags and the chat template come from ``gguf.SpecialVocab``, as in the converter.
3. ``write_gguf`` maps each tensor name with ``gguf.get_tensor_name_map``, un-permutes q/k for
   llama and mistral, adds 1 to Gemma 3's norms, keeps norms and 1-D tensors in F32 and writes the
   rest as F16, BF16 or F32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import gguf
import numpy as np

from macfinetune.core.problems import Problem, ProblemError

DTYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
          "f32": gguf.LlamaFileType.ALL_F32}
_QTYPES = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
           "f32": gguf.GGMLQuantizationType.F32}


@dataclass(frozen=True)
class Arch:
    """How convert_hf_to_gguf.py treats one Hugging Face model type."""

    gguf_arch: gguf.MODEL_ARCH
    permute_qk: bool = False  # LlamaModel.undo_permute: HF's rotate-half layout -> llama.cpp's
    norm_shift: float = 0.0  # Gemma3RMSNorm multiplies by (1 + w); llama.cpp by w
    llama_hf_vocab: bool = False  # tries gguf.LlamaHfVocab before byte-level BPE (LlamaModel.set_vocab)
    no_space_prefix_spm: bool = False  # Gemma3: add_space_prefix False with a SentencePiece vocab


ARCHITECTURES: dict[str, Arch] = {
    "llama": Arch(gguf.MODEL_ARCH.LLAMA, permute_qk=True, llama_hf_vocab=True),
    "mistral": Arch(gguf.MODEL_ARCH.LLAMA, permute_qk=True, llama_hf_vocab=True),
    "qwen2": Arch(gguf.MODEL_ARCH.QWEN2),
    "qwen3": Arch(gguf.MODEL_ARCH.QWEN3),
    "gemma3_text": Arch(gguf.MODEL_ARCH.GEMMA3, norm_shift=1.0, no_space_prefix_spm=True),
    "gemma3": Arch(gguf.MODEL_ARCH.GEMMA3, norm_shift=1.0, no_space_prefix_spm=True),
}
_ROPE_TYPES = (None, "default", "linear", "yarn", "llama3")
_SKIPPED = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
_NOT_TEXT = ("vision_tower.", "multi_modal_projector.", "audio_tower.")


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: llama (SentencePiece) or gpt2 (byte-level BPE)
    pre: str
    tokens: list
    types: list[int]
    scores: list[float] | None
    special: gguf.SpecialVocab
    add_space_prefix: bool | None = None


@dataclass
class GGUFPlan:
    """Everything about the file that can be known without the weights (step 1)."""

    model_type: str
    arch: Arch
    hparams: dict
    vocab: Vocab
    dtype: str
    name: str
    extra_tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch.gguf_arch]


def default_dtype(config: dict) -> str:
    """llama.cpp's --outtype auto: bf16 for a bf16 model, else f16."""
    text = {**config, **config.get("text_config", {})}
    return "bf16" if str(text.get("torch_dtype") or text.get("dtype")) == "bfloat16" else "f16"


def plan_gguf(base: Path, config: dict, dtype: str | None = None, name: str = "") -> GGUFPlan:
    """1. Check architecture, RoPE and tokenizer and build the vocabulary; ProblemError if unsupported."""
    base = Path(base)
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ProblemError(Problem(
            f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {model_type!r}",
            file=str(base / "config.json"), field="model_type", value=model_type))
    dtype = dtype or default_dtype(config)
    if dtype not in DTYPES:
        raise ProblemError(Problem(f"GGUF type must be one of {', '.join(DTYPES)}, got {dtype!r}",
                                   field="dtype", value=dtype))
    hparams = {**config, **config.get("text_config", {})}
    hparams.pop("quantization", None)
    hparams.pop("quantization_config", None)
    _check_rope(hparams, base)
    arch = ARCHITECTURES[model_type]
    if arch.gguf_arch == gguf.MODEL_ARCH.GEMMA3:
        _check_gemma3_layers(hparams, base)
    plan = GGUFPlan(model_type, arch, hparams, _vocab(base, hparams, arch), dtype, name or base.name)
    if _rope(hparams).get("rope_type") == "llama3":
        plan.extra_tensors["rope_freqs.weight"] = _llama3_rope_factors(hparams)
    return plan


# --- step 2: the vocabulary ----------------------------------------------------------------------


def _vocab(base: Path, hp: dict, arch: Arch) -> Vocab:
    if (base / "tokenizer.model").is_file():
        vocab = _sentencepiece_vocab(base, hp)
        if arch.no_space_prefix_spm:
            vocab.add_space_prefix = False
        return vocab
    tokenizer_json = _read_json(base / "tokenizer.json")
    if not tokenizer_json:
        raise ProblemError(Problem("no tokenizer.model or tokenizer.json: the GGUF needs the tokenizer",
                                   file=str(base)))
    kind = tokenizer_json.get("model", {}).get("type")
    if kind != "BPE":
        raise ProblemError(Problem(
            f"the tokenizer is a {kind} model without tokenizer.model; GGUF export supports SentencePiece "
            "(tokenizer.model) and BPE tokenizers", file=str(base / "tokenizer.json"), field="model.type",
            value=kind))
    if arch.llama_hf_vocab:
        try:
            return _llama_hf_vocab(base)
        except (FileNotFoundError, TypeError):
            pass  # Llama 3 style byte-level BPE
    return _gpt2_vocab(base, hp, tokenizer_json)


def _sentencepiece_vocab(base: Path, hp: dict) -> Vocab:
    """convert_hf_to_gguf's _create_vocab_sentencepiece: pieces, scores, types, then added tokens."""
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(base / "tokenizer.model"))
    size = hp.get("vocab_size") or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(size)]
    scores, types = [-10000.0] * size, [int(gguf.TokenType.UNUSED)] * size
    for i in range(min(sp.vocab_size(), size)):
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), int(_sp_type(sp, i))
    for text, i in (_read_json(base / "added_tokens.json") or {}).items():
        if i < size:
            tokens[i], scores[i], types[i] = text.encode(), -1000.0, int(gguf.TokenType.USER_DEFINED)
    decoder = (_read_json(base / "tokenizer_config.json") or {}).get("added_tokens_decoder", {})
    for key, data in decoder.items():
        i, text = int(key), data["content"]
        if i >= size:
            continue
        if data.get("special") or _looks_special(text):
            types[i] = int(gguf.TokenType.CONTROL)
        else:
            text, types[i] = text.replace("\u2581", " "), int(gguf.TokenType.USER_DEFINED)
        tokens[i], scores[i] = text.encode(), -1000.0
    special = gguf.SpecialVocab(base, n_vocab=len(tokens))
    return Vocab("llama", "default", tokens, types, scores, special, _space_prefix(base))


def _sp_type(sp, i: int) -> gguf.TokenType:
    for check, kind in ((sp.IsUnknown, gguf.TokenType.UNKNOWN), (sp.IsControl, gguf.TokenType.CONTROL),
                        (sp.IsUnused, gguf.TokenType.UNUSED), (sp.IsByte, gguf.TokenType.BYTE)):
        if check(i):
            return kind
    return gguf.TokenType.NORMAL


def _llama_hf_vocab(base: Path) -> Vocab:
    hf = gguf.LlamaHfVocab(base)
    tokens, scores, types = [], [], []
    for text, score, kind in hf.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(int(kind))
    special = gguf.SpecialVocab(base, n_vocab=len(tokens))
    return Vocab("llama", "default", tokens, types, scores, special, _space_prefix(base))


def _gpt2_vocab(base: Path, hp: dict, tokenizer_json: dict) -> Vocab:
    """convert_hf_to_gguf's get_vocab_base + _set_vocab_gpt2."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    vocab = tokenizer.get_vocab()
    size = hp.get("vocab_size") or len(vocab)
    if max(vocab.values()) >= size:
        raise ProblemError(Problem(f"the tokenizer has ids up to {max(vocab.values())}, more than vocab_size={size}",
                                   file=str(base / "config.json"), field="vocab_size", value=size))
    pre = _pre_tokenizer(tokenizer, tokenizer_json, base)
    reverse = {i: t for t, i in vocab.items()}
    added, decoder = tokenizer.get_added_vocab(), tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
            continue
        token = reverse[i]
        if token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = decoder[i].special or _looks_special(token)
            token = token if special else token.replace("\u2581", " ")
            types.append(int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED))
        else:
            types.append(int(gguf.TokenType.NORMAL))
        tokens.append(token)
    special = gguf.SpecialVocab(base, load_merges=True)
    if not special.merges:
        raise ProblemError(Problem("the byte-level BPE tokenizer has no merges", file=str(base / "tokenizer.json")))
    return Vocab("gpt2", pre, tokens, types, None, special)


def _pre_tokenizer(tokenizer, tokenizer_json: dict, base: Path) -> str:
    """llama.cpp's name for the pre-tokenizer: by its hash of a check text (the converter's table),
    else the plain GPT-2 byte-level pre-tokenizer recognised from tokenizer.json."""
    from macfinetune.backend.gguf_pretokenizers import CHECK_TEXT, PRE_TOKENIZERS

    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[digest]
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return "gpt-2"
    raise ProblemError(Problem(
        f"llama.cpp does not know this tokenizer's pre-tokenizer (hash {digest[:12]}..., "
        f"pre_tokenizer {pre.get('type')!r}); it would split text differently than the model was trained on",
        file=str(base / "tokenizer.json"), field="pre_tokenizer"))


def _looks_special(token: str) -> bool:
    """convert_hf_to_gguf's does_token_look_special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _space_prefix(base: Path) -> bool | None:
    return (_read_json(base / "tokenizer_config.json") or {}).get("add_prefix_space")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- RoPE ----------------------------------------------------------------------------------------


def _rope(hp: dict) -> dict:
    params = hp.get("rope_parameters") or hp.get("rope_scaling") or {}
    params = params.get("full_attention", params)
    kind = params.get("rope_type", params.get("type"))
    return {**params, "rope_type": kind}


def _check_rope(hp: dict, base: Path) -> None:
    kind = _rope(hp).get("rope_type")
    if kind not in _ROPE_TYPES:
        raise ProblemError(Problem(f"RoPE scaling {kind!r} is not supported by the GGUF export "
                                   f"(supported: linear, yarn, llama3)", file=str(base / "config.json"),
                                   field="rope_scaling", value=kind))


def _check_gemma3_layers(hp: dict, base: Path) -> None:
    """llama.cpp's gemma3 fixes every 6th layer global, the others sliding with RoPE base 10000."""
    pattern = hp.get("sliding_window_pattern", 6)
    types = hp.get("layer_types")
    if types is not None:
        expected = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(len(types))]
        pattern = 6 if list(types) == expected else "per-layer types"
    local = hp.get("rope_local_base_freq", 10_000.0)
    if pattern != 6 or float(local) != 10_000.0:
        raise ProblemError(Problem(
            f"llama.cpp's gemma3 assumes every 6th layer is global and the others sliding with RoPE base 10000; "
            f"this model has sliding_window_pattern {pattern}, rope_local_base_freq {local}",
            file=str(base / "config.json"), field="sliding_window_pattern", value=pattern))


def _rope_theta(hp: dict, default: float | None = None) -> float | None:
    return _rope(hp).get("rope_theta", hp.get("rope_theta", default))


def _llama3_rope_factors(hp: dict) -> np.ndarray:
    """LlamaModel.generate_extra_tensors: the rope_freqs tensor for Llama 3.1+ scaling."""
    rope = _rope(hp)
    base = _rope_theta(hp, 10000.0)
    dim = hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old / low, old / high
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


# --- step 3: metadata and tensors ----------------------------------------------------------------


def _write_metadata(w: gguf.GGUFWriter, plan: GGUFPlan) -> None:
    hp, gemma = plan.hparams, plan.arch.gguf_arch == gguf.MODEL_ARCH.GEMMA3
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(plan.name)
    w.add_block_count(hp["num_hidden_layers"])
    w.add_context_length(hp.get("max_position_embeddings", 131072 if gemma else 4096))
    w.add_embedding_length(hp["hidden_size"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(hp.get("num_attention_heads", 8))
    w.add_head_count_kv(hp.get("num_key_value_heads", 4 if gemma else hp.get("num_attention_heads", 8)))
    _write_rope(w, hp, gemma)
    w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
    head_dim = hp.get("head_dim", 256 if gemma else None)
    if head_dim is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if plan.arch.gguf_arch == gguf.MODEL_ARCH.LLAMA:
        w.add_vocab_size(hp["vocab_size"])
        w.add_rope_dimension_count(head_dim or hp["hidden_size"] // hp["num_attention_heads"])
    if gemma:
        if hp.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(hp["final_logit_softcapping"])
        if hp.get("sliding_window_pattern") != 1 and hp.get("sliding_window"):
            w.add_sliding_window(hp["sliding_window"])
    w.add_file_type(DTYPES[plan.dtype])
    _write_vocab(w, plan.vocab)


def _write_rope(w: gguf.GGUFWriter, hp: dict, gemma: bool) -> None:
    rope = _rope(hp)
    kind, factor = rope.get("rope_type"), rope.get("factor")
    if kind == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    elif kind == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    theta = _rope_theta(hp, 1_000_000.0 if gemma else None)
    if theta is not None:
        w.add_rope_freq_base(theta)
    local = hp.get("rope_local_base_freq")
    sliding = (hp.get("rope_parameters") or {}).get("sliding_attention", {}).get("rope_theta", local)
    if sliding is not None:
        w.add_rope_freq_base_swa(sliding)


def _write_vocab(w: gguf.GGUFWriter, vocab: Vocab) -> None:
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)  # a list of Python ints: written as an INT32 array, as llama.cpp requires
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(vocab.add_space_prefix)
    vocab.special.add_to_gguf(w, quiet=True)


def gguf_tensors(plan: GGUFPlan, weights: dict) -> list[tuple[str, str, object]]:
    """(GGUF name, HF name, array) for each tensor to write; ProblemError names any it cannot map."""
    hp = plan.hparams
    names = gguf.get_tensor_name_map(plan.arch.gguf_arch, hp["num_hidden_layers"])
    out, unknown = [], []
    for hf_name, array in weights.items():
        name = hf_name.removeprefix("language_model.")
        if name.endswith(_SKIPPED) or name.startswith(_NOT_TEXT):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            unknown.append(hf_name)
        else:
            out.append((new, name, array))
    if unknown:
        raise ProblemError(Problem(f"llama.cpp's {plan.arch_name} has no tensor for {', '.join(unknown[:5])}",
                                   field="tensors", value=unknown[:5]))
    return out


def _prepared(plan: GGUFPlan, new: str, name: str, data: np.ndarray) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    hp = plan.hparams
    if plan.arch.permute_qk and name.endswith(("q_proj.weight", "q_proj.bias")):
        data = _permute(data, hp["num_attention_heads"], hp["num_attention_heads"])
    elif plan.arch.permute_qk and name.endswith(("k_proj.weight", "k_proj.bias")):
        data = _permute(data, hp["num_attention_heads"], hp.get("num_key_value_heads"))
    if plan.arch.norm_shift and name.endswith("norm.weight"):
        data = data + plan.arch.norm_shift
    if new == "token_embd.weight" and data.shape[0] > len(plan.vocab.tokens):
        data = data[: len(plan.vocab.tokens)]  # Gemma 3: rows past the real vocabulary
    qtype = _QTYPES[plan.dtype]
    if data.ndim <= 1 or new.endswith("_norm.weight") or not new.endswith(".weight"):
        qtype = gguf.GGMLQuantizationType.F32
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype), qtype


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(plan: GGUFPlan, weights: dict, path: Path, to_numpy: Callable[[object], np.ndarray],
               check: Callable[[], None] = lambda: None) -> dict:
    """3. Write the file at ``path``; ``to_numpy`` turns one weight into a float32 array, ``check``
    runs between tensors (raise to stop). Returns {gguf name: shape} of the written tensors."""
    tensors = gguf_tensors(plan, weights)
    rows = next((a.shape[0] for n, _, a in tensors if n == "token_embd.weight"), None)
    if rows is not None and rows < len(plan.vocab.tokens):
        raise ProblemError(Problem(f"the embedding has {rows} rows but the tokenizer {len(plan.vocab.tokens)} "
                                   "tokens", field="vocab_size", value=len(plan.vocab.tokens)))
    writer = gguf.GGUFWriter(path=None, arch=plan.arch_name)
    _write_metadata(writer, plan)
    written = {}
    for new, array in plan.extra_tensors.items():
        writer.add_tensor(new, array, raw_dtype=gguf.GGMLQuantizationType.F32)
        written[new] = tuple(array.shape)
    for new, name, array in tensors:
        check()
        data, qtype = _prepared(plan, new, name, to_numpy(array))
        writer.add_tensor(new, data, raw_dtype=qtype)
        written[new] = tuple(gguf.quant_shape_from_byte_shape(data.shape, qtype) if data.dtype == np.uint8
                             else data.shape)
    check()
    writer.write_header_to_file(path=Path(path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return written
