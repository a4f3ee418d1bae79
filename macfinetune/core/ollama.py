"""An Ollama ``Modelfile`` for an exported GGUF: the chat template in Ollama's Go-template syntax.

Translation works by recognition, and every answer is checked: the model's Jinja chat template
renders a few sample conversations; each known family's Go template (``FAMILIES``) renders the same
conversations with ``core.gotemplate``; the first family whose every rendering is identical (the
leading BOS aside: llama.cpp adds it) is the TEMPLATE. A family can take one value from the Jinja
output (a default system prompt, Llama 3.1's date preamble). No family matches: no TEMPLATE line,
and the reason says so (Ollama then guesses from the GGUF's own chat template).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from macfinetune.core import gotemplate

SAMPLES: tuple[tuple[dict, ...], ...] = (
    ({"role": "user", "content": "Hello there"},),
    ({"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there"}),
    ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke"}),
    ({"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hey"}, {"role": "user", "content": "Bye"}),
)

_CHATML = (
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n'
)
_CHATML_DEFAULT_SYSTEM = (
    '{{- $sys := false }}{{- range .Messages }}{{ if eq .Role "system" }}{{ $sys = true }}{{ end }}{{ end }}'
    "{{- if not $sys }}<|im_start|>system\n@VALUE@<|im_end|>\n{{ end }}" + _CHATML
)
_LLAMA3 = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_LLAMA31 = (
    "<|start_header_id|>system<|end_header_id|>\n\n@VALUE@"
    '{{ range .Messages }}{{ if eq .Role "system" }}{{ .Content }}{{ end }}{{ end }}<|eot_id|>'
    '{{- range .Messages }}{{ if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
    "{{ .Content }}<|eot_id|>{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_MISTRAL_V3 = (
    '{{- $sys := "" }}{{- range .Messages }}{{ if eq .Role "system" }}{{ $sys = .Content }}{{ end }}{{ end }}'
    '{{- range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}'
    '{{- if eq .Role "user" }}[INST] {{ if and $last $sys }}{{ $sys }}\n\n{{ end }}{{ .Content }}[/INST]'
    '{{- else if eq .Role "assistant" }} {{ .Content }}</s>{{ end }}{{ end }}'
)
_MISTRAL_V1 = (
    '{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
    '{{- else if eq .Role "assistant" }}{{ .Content }}</s>{{ end }}{{ end }}'
)
_MISTRAL_TEKKEN = (
    '{{- $sys := "" }}{{- range .Messages }}{{ if eq .Role "system" }}{{ $sys = .Content }}{{ end }}{{ end }}'
    '{{- range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}'
    '{{- if eq .Role "user" }}[INST]{{ if and $last $sys }}{{ $sys }}\n\n{{ end }}{{ .Content }}[/INST]'
    '{{- else if eq .Role "assistant" }}{{ .Content }}</s>{{ end }}{{ end }}'
)
_GEMMA = (
    '{{- $sys := "" }}{{- $first := true }}{{- range .Messages }}'
    '{{- if eq .Role "system" }}{{ $sys = .Content }}'
    '{{- else }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n'
    "{{ if $first }}{{ if $sys }}{{ $sys }}\n\n{{ end }}{{ $first = false }}{{ end }}"
    "{{ .Content }}<end_of_turn>\n{{ end }}{{ end }}<start_of_turn>model\n"
)


def _no_value(first: str) -> str | None:
    return ""


def _chatml_system(first: str) -> str | None:
    m = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n", first, re.S)
    return m.group(1) if m else None


def _llama31_preamble(first: str) -> str | None:
    m = re.match(r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", first, re.S)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Family:
    name: str
    template: str  # Go template; @VALUE@ is filled from the Jinja rendering of the first sample
    stops: tuple[str, ...]
    value: Callable[[str], str | None] = _no_value


FAMILIES: tuple[Family, ...] = (
    Family("chatml", _CHATML, ("<|im_start|>", "<|im_end|>")),
    Family("chatml (default system prompt)", _CHATML_DEFAULT_SYSTEM, ("<|im_start|>", "<|im_end|>"),
           _chatml_system),
    Family("llama3", _LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    Family("llama3.1", _LLAMA31, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), _llama31_preamble),
    Family("mistral", _MISTRAL_V3, ("[INST]", "[/INST]", "</s>")),
    Family("mistral (v0.1)", _MISTRAL_V1, ("[INST]", "[/INST]", "</s>")),
    Family("mistral (tekken)", _MISTRAL_TEKKEN, ("[INST]", "[/INST]", "</s>")),
    Family("gemma", _GEMMA, ("<start_of_turn>", "<end_of_turn>")),
)


@dataclass(frozen=True)
class Translation:
    """The TEMPLATE (None when no family matched), its family, stop strings, and why."""

    template: str | None
    family: str | None
    stops: tuple[str, ...]
    reason: str


def render_jinja(chat_template: str, messages, bos_token: str = "", eos_token: str = "") -> str:
    """The chat template rendered as transformers does (sandboxed, trim_blocks, lstrip_blocks)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template).render(messages=list(messages), add_generation_prompt=True,
                                                 bos_token=bos_token, eos_token=eos_token)


def render_go(template: str, messages) -> str:
    """An Ollama TEMPLATE rendered as Ollama would for ``messages`` (the system prompt included)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages], "System": system}
    return gotemplate.render(template, data)


def translate(chat_template: str | None, bos_token: str = "", eos_token: str = "") -> Translation:
    """The Ollama TEMPLATE for a Jinja chat template, checked on ``SAMPLES`` (see the module doc)."""
    if not chat_template:
        return Translation(None, None, _eos(eos_token), "the model has no chat template")
    expected = _jinja_samples(chat_template, bos_token, eos_token)
    if expected is None:
        return Translation(None, None, _eos(eos_token), "the chat template fails on a plain user message")
    for family in FAMILIES:
        value = family.value(expected[0][1])
        if value is None or "{{" in value:
            continue
        template = family.template.replace("@VALUE@", value)
        if all(_go_or_none(template, messages) == text for messages, text in expected):
            stops = tuple(dict.fromkeys((*family.stops, *_eos(eos_token))))
            return Translation(template, family.name, stops, f"the chat template is {family.name}")
    names = ", ".join(f.name for f in FAMILIES)
    return Translation(None, None, _eos(eos_token),
                       f"the chat template is none of the known families ({names}); no TEMPLATE was written, "
                       "so Ollama picks one from the GGUF's chat template itself")


def _jinja_samples(chat_template: str, bos: str, eos: str) -> list[tuple[tuple, str]] | None:
    out = []
    for messages in SAMPLES:
        try:
            text = render_jinja(chat_template, messages, bos, eos)
        except Exception:  # a template may refuse a system message; that conversation is skipped
            if messages is SAMPLES[0]:
                return None
            continue
        out.append((messages, text[len(bos):] if bos and text.startswith(bos) else text))
    return out


def _go_or_none(template: str, messages) -> str | None:
    try:
        return render_go(template, messages)
    except gotemplate.TemplateError:
        return None


def _eos(eos_token: str) -> tuple[str, ...]:
    return (eos_token,) if eos_token else ()


def modelfile(gguf_name: str, translation: Translation, system: str | None = None) -> str:
    """The Modelfile text: FROM, TEMPLATE, one PARAMETER stop per stop string, SYSTEM."""
    lines = [f"# Made by macfinetune: {translation.reason}.", f"FROM ./{gguf_name}"]
    if translation.template is not None:
        lines.append(f'TEMPLATE """{translation.template}"""')
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in translation.stops]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def create_command(name: str, folder: str) -> str:
    return f'cd "{folder}" && ollama create {name} -f Modelfile'
