"""A tiny llama built offline in about a second: for tests and the demo.

The folder holds what ``mlx_lm.load`` needs and nothing from the network: ``config.json``,
a byte-level BPE tokenizer trained on the given texts with a ChatML chat template, and
weights drawn from ``mx.random`` and written with ``mlx_lm.utils.save_model``. Same inputs,
same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx_lm.models import llama
from mlx_lm.utils import save_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from macfinetune.core.paths import shipped

UNK, BOS, EOS, IM_START, IM_END = "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [UNK, BOS, EOS, IM_START, IM_END]
ROLES = ["system", "user", "assistant"]

# ChatML. Every turn ends with "<|im_end|>\n", so the rendering of messages[:-1] plus the
# generation prompt is a token prefix of the full rendering (prompt masking needs that).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(
    out_dir: Path,
    texts: list[str],
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 1024,
    max_position_embeddings: int = 1024,
) -> Path:
    """Build a random-weight llama with a tokenizer trained on ``texts`` into ``out_dir``.

    ``out_dir`` is created; it must not exist or be empty. Seeds ``mx.random`` with ``seed``
    on the calling thread. Returns ``out_dir``.
    """
    shape = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
    }
    _check_shape(shape)
    out_dir = Path(out_dir)
    _prepare_empty_dir(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size)
    save_tokenizer(tokenizer, out_dir)
    config = make_config(tokenizer, shape)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_model(out_dir, init_model(config, seed))
    return out_dir


def build_demo_model(out_dir: Path, seed: int = 0) -> Path:
    """The tiny model with a tokenizer trained on the shipped sample data (train + valid)."""
    folder = shipped("resources", "sample_data", "train.jsonl").parent
    texts = [text for name in ("train.jsonl", "valid.jsonl") for text in _contents(folder / name)]
    return build_tiny_model(out_dir, texts, seed=seed)


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE (GPT-2 style) trained on ``texts`` plus the chat role names."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*texts, *ROLES], trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> None:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=IM_END,
        pad_token=EOS,
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(str(out_dir))


def make_config(tokenizer: Tokenizer, shape: dict) -> dict:
    """A llama ``config.json`` as a dict; ``shape`` holds the sizes under their HF names."""
    if tokenizer.get_vocab_size() > shape["vocab_size"]:
        raise ValueError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens, "
            f"more than vocab_size={shape['vocab_size']}"
        )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **shape,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.token_to_id(BOS),
        "eos_token_id": tokenizer.token_to_id(IM_END),
        "torch_dtype": "float32",
    }


def init_model(config: dict, seed: int) -> llama.Model:
    """A llama with mlx's default initialisation, drawn after ``mx.random.seed(seed)``."""
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    return model


def _check_shape(shape: dict) -> None:
    hidden, heads, kv_heads = (
        shape["hidden_size"],
        shape["num_attention_heads"],
        shape["num_key_value_heads"],
    )
    if hidden % heads or heads % kv_heads:
        raise ValueError(
            f"hidden_size={hidden} must be a multiple of num_heads={heads}, "
            f"and num_heads a multiple of num_kv_heads={kv_heads}"
        )


def _prepare_empty_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} already exists and is not an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)


def _contents(path: Path) -> list[str]:
    """Every message content in a chat-format jsonl file."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [message["content"] for row in rows for message in row["messages"]]


# --- the same tiny model in other architectures (GGUF export checks) -------------------------------

VARIANTS = {  # model_type -> config keys that differ from the tiny llama
    "llama": {},
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": None},
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rope_theta": 1_000_000.0},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 16,
              "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6},
    "gemma3_text": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "head_dim": 16,
                    "query_pre_attn_scalar": 16, "sliding_window": 64, "sliding_window_pattern": 6, "num_hidden_layers": 6,
                    "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "rms_norm_eps": 1e-6,
                    "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": None},
}


def build_tiny_variant(tiny: Path, out_dir: Path, model_type: str, seed: int = 0) -> Path:
    """The tiny model's tokenizer and sizes in another architecture (random weights from mlx-lm's
    own model class for ``model_type``): one of ``VARIANTS``."""
    from mlx_lm.utils import _get_classes

    if model_type not in VARIANTS:
        raise ValueError(f"no tiny variant for {model_type!r}; known: {', '.join(VARIANTS)}")
    out_dir = Path(out_dir)
    _prepare_empty_dir(out_dir)
    config = {**json.loads((Path(tiny) / "config.json").read_text()), **VARIANTS[model_type]}
    config = {k: v for k, v in config.items() if v is not None}
    for name in Path(tiny).iterdir():
        if name.name not in ("config.json",) and not name.name.startswith("model"):
            (out_dir / name.name).write_bytes(name.read_bytes())
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    mx.eval(model.parameters())
    save_model(out_dir, model)
    return out_dir


def build_tiny_sentencepiece_model(out_dir: Path, chat_template: str, seed: int = 0, vocab_size: int = 600) -> Path:
    """The tiny llama with a SentencePiece BPE tokenizer (byte fallback, like Llama 2 and Mistral),
    trained on the shipped sample data: ``tokenizer.model`` beside the Hugging Face files."""
    import tempfile

    import sentencepiece as spm
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    _prepare_empty_dir(out_dir)
    folder = shipped("resources", "sample_data", "train.jsonl").parent
    texts = [text for name in ("train.jsonl", "valid.jsonl") for text in _contents(folder / name)]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(texts), encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(Path(tmp) / "tok"), vocab_size=vocab_size,
                                       model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                       character_coverage=1.0, minloglevel=2, num_threads=1)
        (out_dir / "tokenizer.model").write_bytes((Path(tmp) / "tok.model").read_bytes())
    settings = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                "add_bos_token": True, "add_eos_token": False, "legacy": False}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(settings))
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(out_dir))
    shape = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": vocab_size, "max_position_embeddings": 1024}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **shape, "hidden_act": "silu",
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1,
              "eos_token_id": 2, "torch_dtype": "float32"}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_model(out_dir, init_model(config, seed))
    return out_dir
