"""Read a PostgreSQL script's inputs into a JSON Schema (Windmill's convention).

A PostgreSQL script is SQL whose arguments are numbered placeholders with a cast
(``$1::text``, ``$2::int``), named by comments at the top of the script::

    -- database f/data/warehouse
    -- $1 name
    -- $2 limit = 10
    SELECT * FROM users WHERE name = $1::text LIMIT $2::int;

* ``-- database <resource path>`` fixes the connection (a ``postgresql`` resource).
  Without it, the script takes a first input ``database``:
  ``{"type": "object", "format": "resource-postgresql"}``.
* ``-- $N name = default``: input ``$N`` is ``name``; a default (a number,
  ``true``/``false``, a quoted or bare string) makes it optional. A placeholder
  without such a comment is named ``argN``.
* The type comes from the placeholder's first cast: integer types → ``integer``,
  ``real``/``double precision``/``numeric`` → ``number``, ``bool`` → ``boolean``,
  ``date``/``timestamp``/``timestamptz`` → a ``date``/``date-time`` string,
  ``json``/``jsonb`` → ``object``, ``T[]`` → ``array``, anything else → ``string``.

Also the statement splitter the worker uses: ``;`` outside quotes, dollar quotes and
comments ends a statement.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from gristmill.common.introspection.signature import ScriptSignature, object_schema

__all__ = [
    "argument_names",
    "database_annotation",
    "parse_postgresql",
    "placeholders",
    "split_statements",
]

Schema = dict[str, Any]

_DATABASE: Final = re.compile(r"^[ \t]*--[ \t]*database[ \t]+(\S+)[ \t]*$", re.MULTILINE)
_NAME: Final = re.compile(
    r"^[ \t]*--[ \t]*\$(\d+)[ \t]+([A-Za-z_]\w*)(?:[ \t]*=[ \t]*(.*?))?[ \t]*$", re.MULTILINE
)
_PLACEHOLDER: Final = re.compile(
    r"\$(\d+)(?:\s*::\s*((?:[A-Za-z_][\w]*)(?:\s+(?:precision|varying|with(?:out)?\s+time\s+zone))?(?:\s*\[\s*\])?))?"
)
_DOLLAR_TAG: Final = re.compile(r"\$([A-Za-z_]\w*)?\$")
_INTEGER_TYPES: Final = frozenset(
    {"int", "int2", "int4", "int8", "integer", "bigint", "smallint", "serial", "bigserial"}
)
_NUMBER_TYPES: Final = frozenset(
    {"real", "float", "float4", "float8", "double precision", "numeric", "decimal"}
)


def _code_spans(code: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` spans of ``code`` outside literals and comments."""
    spans: list[tuple[int, int]] = []
    start = i = 0
    n = len(code)
    while i < n:
        c = code[i]
        end = -1
        if c == "-" and code.startswith("--", i):
            end = code.find("\n", i)
            end = n if end < 0 else end
        elif c == "/" and code.startswith("/*", i):
            end = code.find("*/", i + 2)
            end = n if end < 0 else end + 2
        elif c in "'\"":
            j = i + 1
            while j < n:
                if code[j] == c:
                    if j + 1 < n and code[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
        elif c == "$":
            tag = _DOLLAR_TAG.match(code, i)
            if tag is not None:
                close = code.find(tag.group(0), tag.end())
                end = n if close < 0 else close + len(tag.group(0))
        if end >= 0:
            spans.append((start, i))
            start = i = end
        else:
            i += 1
    spans.append((start, n))
    return [(a, b) for a, b in spans if b > a]


def split_statements(code: str) -> list[tuple[int, str]]:
    """The statements of ``code`` with their offsets: split at ``;`` outside literals
    and comments; statements that are only whitespace and comments are dropped."""
    spans = _code_spans(code)
    cuts = [i for a, b in spans for i in range(a, b) if code[i] == ";"]
    statements: list[tuple[int, str]] = []
    previous = 0
    for cut in [*cuts, len(code)]:
        text = code[previous:cut]
        meaningful = any(
            code[max(a, previous) : min(b, cut)].strip()
            for a, b in spans
            if b > previous and a < cut
        )
        if meaningful:
            statements.append((previous, text))
        previous = cut + 1
    return statements


def placeholders(code: str) -> list[tuple[int, str | None, int, int]]:
    """Every ``$N`` outside literals and comments: ``(N, cast or None, start, end)``."""
    found: list[tuple[int, str | None, int, int]] = []
    for a, b in _code_spans(code):
        for match in _PLACEHOLDER.finditer(code, a, b):
            cast = match.group(2)
            found.append(
                (
                    int(match.group(1)),
                    " ".join(cast.lower().split()) if cast else None,
                    *match.span(1),
                )
            )
    return found


def database_annotation(code: str) -> str | None:
    """The resource path of a ``-- database <path>`` line, if there is one."""
    match = _DATABASE.search(code)
    return match.group(1) if match else None


def _type_schema(cast: str | None) -> Schema:
    if cast is None:
        return {"type": "string"}
    if cast.endswith("]"):
        return {"type": "array", "items": _type_schema(cast.rstrip("[] "))}
    base = cast.split("(")[0].strip()
    if base in _INTEGER_TYPES:
        return {"type": "integer"}
    if base in _NUMBER_TYPES:
        return {"type": "number"}
    if base in ("bool", "boolean"):
        return {"type": "boolean"}
    if base == "date":
        return {"type": "string", "format": "date"}
    if base.startswith("timestamp"):
        return {"type": "string", "format": "date-time"}
    if base in ("json", "jsonb"):
        return {"type": "object"}
    return {"type": "string"}


def _default(text: str, schema: Schema) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    kind = schema.get("type")
    try:
        if kind in ("integer", "number", "boolean", "object", "array"):
            return json.loads(text)
    except ValueError:
        pass
    return text


def argument_names(code: str) -> dict[int, tuple[str, str | None]]:
    """``N`` → ``(name, default text or None)`` from the ``-- $N name = default`` lines."""
    return {
        int(m.group(1)): (m.group(2), m.group(3) if m.group(3) else None)
        for m in _NAME.finditer(code)
    }


def parse_postgresql(code: str) -> ScriptSignature:
    """The inputs of a PostgreSQL script (see the module's docstring). Never raises:
    the server reports what does not parse."""
    properties: dict[str, Schema] = {}
    required: list[str] = []
    if database_annotation(code) is None:
        properties["database"] = {"type": "object", "format": "resource-postgresql"}
        required.append("database")
    names = argument_names(code)
    casts: dict[int, str | None] = {}
    for number, cast, _, _ in placeholders(code):
        if casts.get(number) is None:
            casts[number] = cast
    for number in sorted(set(casts) | set(names)):
        name, default = names.get(number, (f"arg{number}", None))
        schema = _type_schema(casts.get(number))
        if default is not None:
            schema["default"] = _default(default, schema)
        else:
            required.append(name)
        properties[name] = schema
    return ScriptSignature(
        language="postgresql", schema=object_schema(properties, required, top_level=True)
    )
