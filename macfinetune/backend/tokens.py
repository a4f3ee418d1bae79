"""Token counts for the dataset doctor, with the model's tokenizer and chat template.

Rows are templated exactly as mlx-lm's datasets do it (``mlx_lm.tuner.datasets``): chat and
completions rows through the tokenizer wrapper's ``apply_chat_template`` (the prompt is the
conversation without its last message, with the generation prompt when that message is the
assistant's), text rows with ``encode`` plus an EOS when missing. For speed the templates are
rendered to text and encoded in batches by the fast (Rust) tokenizer; the numbers are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from macfinetune.core import modelinfo
from macfinetune.core.doctor import TokenCount
from macfinetune.core.problems import fail

_BATCH = 4096


def load_tokenizer(folder: Path):
    """mlx-lm's TokenizerWrapper for a local model folder, without loading weights."""
    from mlx_lm.utils import load_config
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    folder = Path(folder)
    try:
        config = load_config(folder)
        return mlx_load_tokenizer(folder, eos_token_ids=config.get("eos_token_id"))
    except Exception as e:  # transformers raises many types for a broken tokenizer
        raise fail(f"cannot load the tokenizer: {type(e).__name__}: {e}", file=str(folder)) from None


def token_counter(model: str | Path, emit: Callable[[object], None] | None = None):
    """``count_tokens(rows) -> [TokenCount]`` for a model folder or hub repo (tokenizer files only)."""
    tokenizer = load_tokenizer(_tokenizer_folder(model, emit))
    return lambda rows: count_tokens(rows, tokenizer)


def document_encoder(model: str | Path, emit: Callable[[object], None] | None = None) -> Callable[[str], list]:
    """``encode(text) -> ids`` as mlx-lm encodes a text row, loading the tokenizer on the first call only."""
    loaded = []

    def encode(text: str) -> list:
        if not loaded:
            loaded.append(load_tokenizer(_tokenizer_folder(model, emit)))
        return loaded[0].encode(text)

    return encode


def _tokenizer_folder(model: str | Path, emit) -> Path:
    from macfinetune.backend import hub

    folder = Path(model).expanduser()
    if not folder.exists() and not modelinfo.looks_like_repo_id(str(model)):
        raise fail("model folder not found (and not a Hugging Face repo id like org/name)", file=str(model),
                   field="model", value=str(model))
    return folder if folder.exists() else hub.download_model(str(model), emit=emit, patterns=hub.TOKENIZER_PATTERNS)


def count_tokens(rows: Sequence[dict], tokenizer, batch_size: int = _BATCH) -> list[TokenCount]:
    """(total, prompt, eos, error) per mlx-lm row, as mlx-lm would tokenize it.

    A preference pair counts as its prompt with the longer of its two answers."""
    from macfinetune.core.formats import pairs

    if rows and pairs.is_pair(rows[0]):
        rows = [pairs.pair_as_chat(r, max(pairs.PAIR_KEYS, key=lambda k: len(r[k]))) for r in rows]
    encoder = _Encoder(tokenizer)
    counts: list[TokenCount] = []
    for start in range(0, len(rows), batch_size):
        counts += _encode_batch(_render_batch(rows[start : start + batch_size], tokenizer), tokenizer, encoder)
    return counts


def template_refusals(rows: Sequence[dict], tokenizer) -> list[tuple[int, str]]:
    """(index, the template's error) of each chat, completions or preference row the chat template refuses."""
    from macfinetune.core.formats import pairs

    if not rows or _is_text(rows[0]):
        return []
    refused = []
    for i, row in enumerate(rows):
        for chat in [pairs.pair_as_chat(row, k) for k in pairs.PAIR_KEYS] if pairs.is_pair(row) else [row]:
            try:
                tokenizer.apply_chat_template(_messages(chat)[0], tools=chat.get("tools"), tokenize=False)
            except Exception as e:  # jinja templates raise what they like (raise_exception, TypeError, ...)
                refused.append((i, f"{type(e).__name__}: {e}"))
                break
    return refused


def _render_batch(rows: Sequence[dict], tokenizer) -> tuple[str, list]:
    """("text", texts) or ("chat", [(full, prompt) or the template's error message])."""
    if rows and _is_text(rows[0]):
        return "text", [row["text"] for row in rows]
    return "chat", [_render(row, tokenizer) for row in rows]


def _encode_batch(rendered: tuple[str, list], tokenizer, encoder: _Encoder) -> list[TokenCount]:
    kind, items = rendered
    if kind == "text":
        return _count_text(items, tokenizer, encoder)
    good = [i for i, p in enumerate(items) if isinstance(p, tuple)]
    full, prompt_lengths = encoder.full_and_prompt([items[i][0] for i in good], [items[i][1] for i in good])
    eos = set(tokenizer.eos_token_ids)
    counts: list = list(items)
    for i, ids, n_prompt in zip(good, full, prompt_lengths, strict=True):
        counts[i] = TokenCount(len(ids), n_prompt, not eos.isdisjoint(ids[n_prompt:]))
    return [c if isinstance(c, TokenCount) else TokenCount(0, 0, False, c) for c in counts]


def _is_text(row: dict) -> bool:
    return "text" in row and "messages" not in row and not ("prompt" in row and "completion" in row)


def _count_text(texts: list[str], tokenizer, encoder: _Encoder) -> list[TokenCount]:
    """TextDataset: ``encode(text)`` with special tokens, then an EOS when the last token is not one."""
    eos_id = tokenizer.eos_token_id
    counts = []
    for ids in encoder.ids(texts, special=True):
        missing = not ids or ids[-1] != eos_id
        counts.append(TokenCount(len(ids) + missing, 0, True))
    return counts


def _render(row: dict, tokenizer) -> tuple[str, str] | str:
    """(full text, prompt text) of a chat or completions row, or the template's error message."""
    messages, with_generation_prompt = _messages(row)
    tools = row.get("tools")
    try:
        full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:-1], tools=tools, tokenize=False,
                                               add_generation_prompt=with_generation_prompt)
    except Exception as e:  # jinja templates raise what they like (raise_exception, TypeError, ...)
        return f"{type(e).__name__}: {e}"
    return _as_text(full), _as_text(prompt)


def _messages(row: dict) -> tuple[list, bool]:
    """The messages mlx-lm templates and whether the prompt gets the generation prompt."""
    if "prompt" in row and "completion" in row:
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}], True
    messages = row["messages"]
    return messages, messages[-1].get("role") == "assistant"


def _as_text(rendered) -> str:
    return rendered if isinstance(rendered, str) else json.dumps(rendered)


class _Encoder:
    """Batch encoding with the Rust tokenizer, and prompt lengths without encoding each prompt.

    mlx-lm encodes the prompt on its own. When the prompt is the full text up to a special
    token plus a short tail (ChatML's "<|im_start|>assistant\n"), the prompt's tokens are the
    full text's tokens up to that special token plus the tail's tokens: the tokenizer splits at
    special tokens first and encodes the pieces independently. That holds unless a piece's
    encoding depends on its position (Metaspace with prepend_scheme "first"); the first rows
    of every batch are checked against a real encoding, and any doubt encodes the prompt.
    """

    _CHECKED_ROWS = 8

    def __init__(self, tokenizer):
        self.hf = getattr(tokenizer, "_tokenizer", tokenizer)
        self.backend = getattr(self.hf, "backend_tokenizer", None)
        self.specials = _boundary_tokens(self.backend) if self.backend is not None else {}

    def ids(self, texts: list[str], *, special: bool = False) -> list[list[int]]:
        if not texts:
            return []
        if self.backend is not None:
            return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=special)]
        return [list(ids) for ids in self.hf(texts, add_special_tokens=special)["input_ids"]]

    def full_and_prompt(self, fulls: list[str], prompts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids of each full text and the token count of each prompt."""
        if not self.specials:
            return self.ids(fulls), [len(ids) for ids in self.ids(prompts)]
        encodings = self.backend.encode_batch(fulls, add_special_tokens=False)
        lengths = self._prompt_lengths(prompts, fulls, encodings)
        checked = [len(ids) for ids in self.ids(prompts[: self._CHECKED_ROWS])]
        if checked != lengths[: len(checked)]:
            self.specials = {}
            lengths = [len(ids) for ids in self.ids(prompts)]
        return [e.ids for e in encodings], lengths

    def _prompt_lengths(self, prompts: list[str], fulls: list[str], encodings) -> list[int]:
        cuts = [self._cut(p, f, e) for p, f, e in zip(prompts, fulls, encodings, strict=True)]
        tails = self.ids([p[cut[1]:] for p, cut in zip(prompts, cuts, strict=True) if cut])
        whole = iter(self.ids([p for p, cut in zip(prompts, cuts, strict=True) if not cut]))
        tail_lengths = iter(len(ids) for ids in tails)
        return [cut[0] + next(tail_lengths) if cut else len(next(whole)) for cut in cuts]

    def _cut(self, prompt: str, full: str, encoding) -> tuple[int, int] | None:
        """(tokens up to and with the prompt's last special token, its end in characters)."""
        end, token_id = max(((prompt.rfind(s) + len(s), i) for s, i in self.specials.items() if s in prompt),
                            default=(0, None))
        if not end or not full.startswith(prompt[:end]):
            return None
        index = encoding.char_to_token(end - 1)
        if index is None or encoding.ids[index] != token_id or encoding.token_to_chars(index)[1] != end:
            return None
        return index + 1, end


def _boundary_tokens(backend) -> dict[str, int]:
    """Special tokens at which encoding restarts: content -> id ({} when pieces depend on position)."""
    if _position_dependent(json.loads(backend.to_str()).get("pre_tokenizer")):
        return {}
    return {t.content: i for i, t in backend.get_added_tokens_decoder().items() if t.special and not t.rstrip}


def _position_dependent(pre_tokenizer) -> bool:
    """A Metaspace pre-tokenizer that marks only the first piece of the input."""
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "Metaspace" and pre_tokenizer.get("prepend_scheme") == "first":
        return True
    return any(_position_dependent(p) for p in pre_tokenizer.get("pretokenizers") or [])
