"""A small renderer for the part of Go's text/template that Ollama chat templates use.

Enough to check a translated TEMPLATE against the model's Jinja chat template without Go:
text with ``{{- ... -}}`` trim markers; ``.Field``, ``$.Field``, ``$var``, ``$var.Field``;
string and integer literals; ``if`` / ``else if`` / ``else`` / ``end``; ``range`` with and without
``$i, $x :=``; ``$x := ...`` and ``$x = ...``; the functions ``eq ne and or not len slice`` and
parentheses. Anything else raises ``TemplateError`` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)|:=|=|,|[^\s()=,]+)')


class TemplateError(ValueError):
    """The template uses something this renderer does not know, or is malformed."""


@dataclass
class _Node:
    kind: str  # text, out, if, range, set, declare
    arg: object = None
    body: list = field(default_factory=list)
    orelse: list = field(default_factory=list)
    names: tuple = ()


def render(template: str, data: dict) -> str:
    """``template`` rendered with ``data`` as dot (and ``$``)."""
    nodes, rest = _parse(_lex(template), 0, top=True)
    out: list[str] = []
    _run(nodes, data, [{"$": data}], out)
    return "".join(out)


# --- lexing and parsing -----------------------------------------------------------------------------


def _lex(template: str) -> list[tuple[str, str]]:
    parts, pos = [], 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", m.group(2).strip()))
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    parts.append(("text", template[pos:]))
    return [p for p in parts if p != ("text", "")]


def _parse(parts, i: int, top: bool = False):
    nodes = []
    while i < len(parts):
        kind, value = parts[i]
        if kind == "text":
            nodes.append(_Node("text", value))
            i += 1
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"unexpected {{{{ {value} }}}}")
            return nodes, i
        if word == "if":
            node, i = _parse_if(parts, i, value[2:].strip())
        elif word == "range":
            node, i = _parse_range(parts, i, value[5:].strip())
        elif word.startswith("/*"):
            node, i = _Node("text", ""), i + 1
        else:
            node, i = _simple(value), i + 1
        nodes.append(node)
    if not top:
        raise TemplateError("missing {{ end }}")
    return nodes, i


def _parse_if(parts, i: int, condition: str):
    node = _Node("if", _expr(condition))
    node.body, i = _parse(parts, i + 1)
    closing = parts[i][1]
    if closing.startswith("else if "):
        sub, i = _parse_if(parts, i, closing[len("else if "):].strip())
        node.orelse = [sub]
        return node, i
    if closing == "else":
        node.orelse, i = _parse(parts, i + 1)
        closing = parts[i][1]
    if closing != "end":
        raise TemplateError(f"expected {{{{ end }}}}, got {{{{ {closing} }}}}")
    return node, i + 1


def _parse_range(parts, i: int, spec: str):
    names: tuple = ()
    if ":=" in spec:
        left, spec = spec.split(":=", 1)
        names = tuple(n.strip() for n in left.split(","))
    node = _Node("range", _expr(spec.strip()), names=names)
    node.body, i = _parse(parts, i + 1)
    if parts[i][1] == "else":
        node.orelse, i = _parse(parts, i + 1)
    if parts[i][1] != "end":
        raise TemplateError(f"expected {{{{ end }}}} after range, got {{{{ {parts[i][1]} }}}}")
    return node, i + 1


def _simple(value: str) -> _Node:
    m = re.match(r"(\$\w+)\s*(:=|=)\s*(.+)$", value, re.S)
    if m:
        return _Node("declare" if m.group(2) == ":=" else "set", _expr(m.group(3)), names=(m.group(1),))
    return _Node("out", _expr(value))


def _expr(text: str):
    tokens = [t for t in _TOKEN.findall(text) if t]
    expr, pos = _pipeline(tokens, 0)
    if pos != len(tokens):
        raise TemplateError(f"cannot read {text!r}")
    return expr


def _pipeline(tokens, pos):
    items = []
    while pos < len(tokens) and tokens[pos] != ")":
        if tokens[pos] == "(":
            sub, pos = _pipeline(tokens, pos + 1)
            if pos >= len(tokens) or tokens[pos] != ")":
                raise TemplateError("unbalanced parentheses")
            items.append(sub)
            pos += 1
        else:
            items.append(("atom", tokens[pos]))
            pos += 1
    if len(items) == 1:
        return items[0], pos
    return ("call", items), pos


# --- evaluation ---------------------------------------------------------------------------------------


def _run(nodes, dot, scopes, out) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.arg)
        elif node.kind == "out":
            out.append(_str(_eval(node.arg, dot, scopes)))
        elif node.kind == "declare":
            scopes[-1][node.names[0]] = _eval(node.arg, dot, scopes)
        elif node.kind == "set":
            _assign(scopes, node.names[0], _eval(node.arg, dot, scopes))
        elif node.kind == "if":
            branch = node.body if _truth(_eval(node.arg, dot, scopes)) else node.orelse
            _run(branch, dot, [*scopes, {}], out)
        elif node.kind == "range":
            _range(node, dot, scopes, out)


def _range(node, dot, scopes, out) -> None:
    items = _eval(node.arg, dot, scopes) or []
    if not items:
        _run(node.orelse, dot, [*scopes, {}], out)
    for index, item in enumerate(items):
        scope = {}
        if len(node.names) == 2:
            scope = {node.names[0]: index, node.names[1]: item}
        elif len(node.names) == 1:
            scope = {node.names[0]: item}
        _run(node.body, item, [*scopes, scope], out)


def _assign(scopes, name, value) -> None:
    for scope in reversed(scopes):
        if name in scope:
            scope[name] = value
            return
    raise TemplateError(f"undefined variable {name}")


_FUNCS = {
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a),
    "slice": lambda a, *i: a[i[0]:i[1]] if len(i) > 1 else a[i[0]:] if i else a,
}


def _eval(expr, dot, scopes):
    if expr[0] == "call":
        head, args = expr[1][0], expr[1][1:]
        name = head[1] if head[0] == "atom" else None
        if name in ("and", "or"):
            return _and_or(name, args, dot, scopes)
        if name not in _FUNCS:
            raise TemplateError(f"unknown function {name!r}")
        return _FUNCS[name](*(_eval(a, dot, scopes) for a in args))
    return _atom(expr[1], dot, scopes)


def _and_or(name, args, dot, scopes):
    value = None
    for arg in args:
        value = _eval(arg, dot, scopes)
        if _truth(value) != (name == "and"):
            return value
    return value


def _atom(token: str, dot, scopes):
    if token.startswith('"'):
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token in ("true", "false"):
        return token == "true"
    if token == ".":
        return dot
    if token.startswith("."):
        return _fields(dot, token[1:].split("."))
    if token.startswith("$"):
        name, _, rest = token.partition(".")
        value = _lookup(scopes, name)
        return _fields(value, rest.split(".")) if rest else value
    raise TemplateError(f"unknown word {token!r}")


def _lookup(scopes, name: str):
    for scope in reversed(scopes):
        if name in scope:
            return scope[name]
    raise TemplateError(f"undefined variable {name}")


def _fields(value, names):
    for name in names:
        if not isinstance(value, dict) or name not in value:
            raise TemplateError(f"no field {name!r}")
        value = value[name]
    return value


def _truth(value) -> bool:
    return bool(value)


def _str(value) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
