"""Read a Go script's ``main`` signature into a JSON Schema, without compiling it.

A Go script is ``package inner`` with a function ``main`` returning
``(interface{}, error)``; its parameters are the script's inputs::

    package inner

    type Options struct { Loud bool `json:"loud"` }

    func main(name string, count int, tags []string, options Options) (interface{}, error) {
        ...
    }

How types map: ``int``/``int64``/``uint``... → ``integer``; ``float32``/``float64`` →
``number``; ``string``; ``bool`` → ``boolean``; ``time.Time`` → a ``date-time``
string; ``[]T`` → ``array`` (with ``items``); ``map[string]T``, ``struct {...}`` and a
struct type declared in the file → ``object``; ``interface{}``/``any`` → any value; a
pointer ``*T`` is ``T``, optional and ``nullable``. Every other parameter is required
(Go has no default values). A small scanner, not a compiler: comments and string
literals are skipped and brackets balanced; nothing is evaluated.

Raises ``InvalidRequest`` when there is no top-level ``func main(...)`` or its
parameter list is unbalanced (with ``location`` ``"line L, column C"``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection.signature import ScriptSignature, object_schema

__all__ = ["GoParameter", "go_main_parameters", "parse_go"]

Schema = dict[str, Any]

#: One parameter of ``main``: its name and its type as written (comments removed).
GoParameter = tuple[str, str]

_INTEGERS: Final = frozenset(
    {"int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64"}
    | {"uintptr", "byte", "rune"}
)
_NUMBERS: Final = frozenset({"float32", "float64"})
_MAIN: Final = re.compile(r"^func[ \t]+main[ \t]*\(", re.MULTILINE)
_STRUCT_DECL: Final = re.compile(r"^type[ \t]+([A-Za-z_]\w*)[ \t]+struct\b", re.MULTILINE)
_IDENT: Final = re.compile(r"[A-Za-z_]\w*")
_OPEN: Final = "([{"
_CLOSE: Final = ")]}"


def _blank_comments(code: str) -> str:
    """``code`` with comments replaced by spaces (newlines kept, so offsets still hold);
    string, raw-string and rune literals are left as they are."""
    out = list(code)
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if c == "/" and code.startswith("//", i):
            end = code.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
        elif c == "/" and code.startswith("/*", i):
            end = code.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out[i:end] = [ch if ch == "\n" else " " for ch in code[i:end]]
            i = end
        elif c == "`":
            end = code.find("`", i + 1)
            i = n if end < 0 else end + 1
        elif c in "\"'":
            j = i + 1
            while j < n and code[j] != c and code[j] != "\n":
                j += 2 if code[j] == "\\" else 1
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _where(code: str, offset: int) -> str:
    line = code.count("\n", 0, offset) + 1
    column = offset - (code.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _split_top_level(text: str, start: int, code: str) -> list[str]:
    """``text`` split at commas outside brackets and literals."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "`\"'":
            close = text.find(c, i + 1) if c == "`" else _literal_end(text, i)
            if close < 0:
                raise InvalidRequest("unterminated literal", location=_where(code, start + i))
            current.append(text[i : close + 1])
            i = close + 1
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _literal_end(text: str, i: int) -> int:
    quote = text[i]
    j = i + 1
    while j < len(text) and text[j] != quote:
        j += 2 if text[j] == "\\" else 1
    return j if j < len(text) else -1


def _main_parameter_text(code: str) -> tuple[str, int]:
    """The text between ``main``'s parentheses, and its offset in ``code``."""
    match = _MAIN.search(code)
    if match is None:
        raise InvalidRequest(
            "a Go script needs a top-level `func main(...) (interface{}, error)`",
            location="main",
        )
    start = match.end()
    depth = 1
    i = start
    while i < len(code):
        c = code[i]
        if c in "`\"'":
            close = code.find("`", i + 1) if c == "`" else _literal_end(code, i)
            if close < 0:
                raise InvalidRequest("unterminated literal", location=_where(code, i))
            i = close + 1
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return code[start:i], start
        i += 1
    raise InvalidRequest(
        "main's parameter list is not closed", location=_where(code, match.start())
    )


def go_main_parameters(code: str) -> list[GoParameter]:
    """``main``'s parameters in order, as ``(name, type text)``; ``a, b int`` gives
    both names the type ``int``.

    Raises ``InvalidRequest`` (see the module's docstring).
    """
    clean = _blank_comments(code)
    text, start = _main_parameter_text(clean)
    parameters: list[GoParameter] = []
    pending: list[str] = []
    for part in _split_top_level(text, start, clean):
        words = part.split(None, 1)
        if len(words) == 1:
            if not _IDENT.fullmatch(words[0]):
                raise InvalidRequest(
                    f"main's parameters must be named (found {part!r})",
                    location=_where(clean, start),
                )
            pending.append(words[0])
            continue
        name, type_text = words[0], " ".join(words[1].split())
        if not _IDENT.fullmatch(name) or type_text.startswith("..."):
            raise InvalidRequest(
                f"unsupported parameter {part!r} in main", location=_where(clean, start)
            )
        parameters.extend((grouped, type_text) for grouped in pending)
        pending = []
        parameters.append((name, type_text))
    if pending:
        raise InvalidRequest(
            f"main's parameters {', '.join(pending)} have no type", location=_where(clean, start)
        )
    return parameters


def _type_schema(type_text: str, structs: frozenset[str]) -> Schema:
    t = type_text.strip()
    if t in _INTEGERS:
        return {"type": "integer"}
    if t in _NUMBERS:
        return {"type": "number"}
    if t == "string":
        return {"type": "string"}
    if t == "bool":
        return {"type": "boolean"}
    if t == "time.Time":
        return {"type": "string", "format": "date-time"}
    if t in ("interface{}", "interface {}", "any"):
        return {}
    if t.startswith("[]"):
        items = _type_schema(t[2:], structs)
        return {"type": "array", "items": items} if items else {"type": "array"}
    if t.startswith("map[") or t.startswith("struct") or t in structs:
        return {"type": "object"}
    return {}


def parse_go(code: str) -> ScriptSignature:
    """The inputs of a Go script's ``main`` (see the module's docstring).

    Raises ``InvalidRequest`` when there is no ``main`` or its parameters do not parse.
    """
    clean = _blank_comments(code)
    structs = frozenset(_STRUCT_DECL.findall(clean))
    properties: dict[str, Schema] = {}
    required: list[str] = []
    notes: list[str] = []
    for name, type_text in go_main_parameters(code):
        pointer = type_text.startswith("*")
        schema = _type_schema(type_text.lstrip("*"), structs)
        if not schema and type_text.lstrip("*") not in ("interface{}", "interface {}", "any"):
            notes.append(f"parameter {name}: type {type_text} is accepted as any JSON value")
        if pointer:
            schema["nullable"] = True
        else:
            required.append(name)
        properties[name] = schema
    return ScriptSignature(
        language="go",
        schema=object_schema(properties, required, top_level=True),
        notes=tuple(notes),
    )
