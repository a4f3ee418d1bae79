"""Preference pairs (a prompt, a chosen answer, a rejected answer) in the shapes people have them.

Every shape becomes one canonical row, ``{"prompt": [messages], "chosen": text, "rejected": text}``:
the conversation before the answer and the two assistant answers to it. Accepted records:

- plain: ``{"prompt": "...", "chosen": "...", "rejected": "..."}`` (an optional ``system`` text);
- chat: ``prompt`` (or ``messages``) as a list of messages, ``chosen``/``rejected`` as text or as
  one assistant message ``{"role": "assistant", "content": ...}``;
- Hugging Face (UltraFeedback-binarized, Anthropic HH in message form): ``chosen`` and ``rejected``
  each a whole conversation (message lists) that share every message before the last assistant
  answer; a ``prompt`` key beside them is ignored when the lists carry the conversation;
- Anthropic HH as raw text: ``chosen``/``rejected`` transcripts ``"\\n\\nHuman: ... \\n\\nAssistant: ..."``
  that share everything before the last ``Assistant:`` turn.
"""

from __future__ import annotations

from macfinetune.core.formats.rows import _Bad, json_type
from macfinetune.core.problems import Problem

PAIR_KEYS = ("chosen", "rejected")
_HH_TURNS = {"\n\nHuman:": "user", "\n\nAssistant:": "assistant"}


def is_pair(row) -> bool:
    """A record or run row that holds a preference pair."""
    return isinstance(row, dict) and "chosen" in row and "rejected" in row


def convert_pair(record: dict) -> dict:
    """One record in any accepted shape -> the canonical pair row; raise _Bad naming the field."""
    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(chosen, list) or isinstance(rejected, list):
        prompt, chosen_text, rejected_text = _from_conversations(record, chosen, rejected)
    elif isinstance(chosen, str) and isinstance(rejected, str) and not _has_prompt(record) and _is_hh(chosen):
        prompt, chosen_text, rejected_text = _from_hh_text(chosen, rejected)
    else:
        prompt = _prompt(record)
        chosen_text, rejected_text = _answer(chosen, "chosen"), _answer(rejected, "rejected")
    return {"prompt": prompt, "chosen": chosen_text, "rejected": rejected_text}


def _has_prompt(record: dict) -> bool:
    return "prompt" in record or "messages" in record


def _prompt(record: dict) -> list[dict]:
    """The conversation before the answers, from 'prompt' (text or messages) or 'messages'."""
    key = "prompt" if "prompt" in record else "messages" if "messages" in record else None
    if key is None:
        raise _Bad("no prompt: give 'prompt' (text or a list of messages) or 'messages' beside 'chosen' and "
                   "'rejected'", field="prompt")
    value = record[key]
    system = record.get("system")
    if isinstance(value, str):
        head = [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
        return [*head, {"role": "user", "content": value}]
    return _messages(value, key)


def _messages(value, key: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _Bad(f"'{key}' must be text or a non-empty list of {{role, content}} messages", field=key, value=value)
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _Bad(f"{key}[{i}] must be a message {{role, content}} with text content", field=f"{key}[{i}]",
                       value=m)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _answer(value, key: str) -> str:
    """An answer as text, or as one assistant message."""
    if isinstance(value, dict):
        if value.get("role", "assistant") != "assistant":
            raise _Bad(f"'{key}' must be an assistant message, got role {value.get('role')!r}", field=key, value=value)
        value = value.get("content")
    if not isinstance(value, str):
        raise _Bad(f"'{key}' must be text or an assistant message, got {json_type(value)}", field=key,
                   value=value)
    return value


def _from_conversations(record: dict, chosen, rejected) -> tuple[list[dict], str, str]:
    """Two whole conversations that differ only in the last assistant answer."""
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise _Bad("'chosen' and 'rejected' must both be conversations (lists of messages) or both answers",
                   field="rejected", value=rejected)
    chosen, rejected = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    for key, conversation in (("chosen", chosen), ("rejected", rejected)):
        if conversation[-1]["role"] != "assistant":
            raise _Bad(f"'{key}' must end with the assistant's answer, not a {conversation[-1]['role']} message",
                       field=f"{key}[{len(conversation) - 1}]", value=conversation[-1])
    if chosen[:-1] != rejected[:-1]:
        raise _Bad("'chosen' and 'rejected' must share every message before the last answer (the prompt)",
                   field="rejected", value=rejected)
    prompt = chosen[:-1] or _prompt(record)
    return prompt, chosen[-1]["content"], rejected[-1]["content"]


def _is_hh(text: str) -> bool:
    return "\n\nHuman:" in text and "\n\nAssistant:" in text


def _from_hh_text(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """Anthropic HH transcripts: the shared part up to the last 'Assistant:' is the prompt."""
    marker = "\n\nAssistant:"
    cut = chosen.rfind(marker)
    if cut < 0 or rejected[: cut + len(marker)] != chosen[: cut + len(marker)]:
        raise _Bad("'chosen' and 'rejected' transcripts must share everything before the last 'Assistant:' turn",
                   field="rejected", value=rejected)
    start = cut + len(marker)
    return _hh_messages(chosen[:cut]), chosen[start:].strip(), rejected[start:].strip()


def _hh_messages(text: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b ...' -> messages."""
    marks = sorted((i, role, tag) for tag, role in _HH_TURNS.items() for i in _find_all(text, tag))
    if not marks:
        raise _Bad("the transcript has no 'Human:' turn before the answer", field="chosen", value=text)
    out = []
    for n, (i, role, tag) in enumerate(marks):
        end = marks[n + 1][0] if n + 1 < len(marks) else len(text)
        out.append({"role": role, "content": text[i + len(tag) : end].strip()})
    return out


def _find_all(text: str, tag: str) -> list[int]:
    found, i = [], text.find(tag)
    while i >= 0:
        found.append(i)
        i = text.find(tag, i + 1)
    return found


# --- what the dataset doctor checks on pairs -------------------------------------------------------


def empty_answer(row: dict) -> str | None:
    """Which answer of a canonical pair row is empty; None when both have text."""
    return next((f"the {key} answer is empty" for key in PAIR_KEYS if not str(row[key]).strip()), None)


def identical_pair(row: dict) -> str | None:
    """The chosen and rejected answers are the same (ignoring spacing): the pair teaches nothing."""
    same = " ".join(row["chosen"].split()) == " ".join(row["rejected"].split())
    return "the chosen and rejected answers are the same" if same and row["chosen"].strip() else None


def prompt_key(row: dict) -> str:
    """A pair's prompt, for leakage between splits: its text with case and spacing ignored."""
    return " ".join(" ".join(m["content"] for m in row["prompt"]).split()).casefold()


def pair_as_chat(row: dict, answer: str = "chosen") -> dict:
    """A canonical pair row as an mlx-lm chat row ending with one of its answers."""
    return {"messages": [*row["prompt"], {"role": "assistant", "content": row[answer]}]}


def row_problem(row: dict) -> str | None:
    """What is wrong with a run's own pair row (``core.dataset`` reads it back on resume)."""
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt or not all(isinstance(m, dict) and "role" in m for m in prompt):
        return "'prompt' must be a non-empty list of messages"
    bad = [k for k in PAIR_KEYS if not isinstance(row.get(k), str)]
    return f"{bad[0]!r} must be text" if bad else None


def objective_problem(objective: str, mlx_format: str, source: str) -> Problem | None:
    """Preference objectives need pairs, and pairs need a preference objective."""
    if objective != "sft" and mlx_format != "preference":
        return Problem(f"training.objective: {objective} needs preference pairs (prompt, chosen, rejected); this "
                       f"data is {mlx_format}", file=source, field="training.objective", value=objective)
    if objective == "sft" and mlx_format == "preference":
        return Problem("the data holds preference pairs (chosen, rejected); set training.objective: dpo or orpo",
                       file=source, field="training.objective", value=objective)
    return None
