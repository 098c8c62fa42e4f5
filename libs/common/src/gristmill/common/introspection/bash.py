"""Read a Bash script's positional arguments into a JSON Schema, without running it.

An input is a variable assigned from a positional parameter, one per line::

    name="$1"                 # required string
    greeting="${2:-hello}"    # optional string, default "hello"
    local count=$3            # ``local``/``declare``/``readonly``/``export`` are allowed

Properties follow the position (``$1`` first), which is also the order the
arguments are passed in. Every input is a string. Only the first assignment from a
given position counts. A default that expands something (``${1:-$HOME}``) makes the
input optional without showing a default. Positions must have no gaps: naming ``$3``
without ``$2`` is an error, since the arguments are passed by position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection.signature import ScriptSignature, object_schema

__all__ = ["parse_bash"]

_ASSIGNMENT: Final = re.compile(
    r"""
    ^\s*
    (?:(?:local|declare|typeset|readonly|export)(?:\s+-[A-Za-z]+)*\s+)?
    (?P<name>[A-Za-z_][A-Za-z0-9_]*)=
    (?P<quote>"?)
    (?P<dollar>\$)
    (?:
        (?P<bare>[1-9])
      | \{(?P<position>[1-9][0-9]*)
          (?:(?P<operator>:?-)(?P<default>(?:"[^"]*"|'[^']*'|\\.|[^}"'\\])*))?
        \}
    )
    (?P=quote)
    (?=\s|;|&|\||$)
    """,
    re.VERBOSE,
)
_EXPANSION: Final = re.compile(r"[$`]")


@dataclass(frozen=True)
class _Input:
    name: str
    position: int
    line: int
    column: int
    has_default: bool
    default: str | None


def parse_bash(code: str) -> ScriptSignature:
    """The input schema of a Bash script, from its ``name="$N"`` assignments.

    Raises:
        InvalidRequest: a position is skipped (``location`` names the line and column
            of the first input after the gap).
    """
    notes: list[str] = []
    inputs: dict[int, _Input] = {}
    names: set[str] = set()
    for number, line in enumerate(code.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            continue
        found = _input(match, number, notes)
        if found.position in inputs:
            notes.append(
                f"line {number}: `{found.name}` reads ${found.position} again; "
                f"the input is `{inputs[found.position].name}`"
            )
        elif found.name in names:
            notes.append(f"line {number}: `{found.name}` is assigned from a second position")
        else:
            inputs[found.position] = found
            names.add(found.name)
    ordered = [inputs[position] for position in sorted(inputs)]
    for expected, item in enumerate(ordered, start=1):
        if item.position != expected:
            raise InvalidRequest(
                f"`{item.name}` reads ${item.position} but no variable reads ${expected}; "
                "arguments are passed by position, so name every one up to the last",
                location=f"line {item.line}, column {item.column}",
            )
    properties: dict[str, dict[str, Any]] = {}
    required: list[str] = []
    for item in ordered:
        schema: dict[str, Any] = {"type": "string"}
        if item.default is not None:
            schema["default"] = item.default
        if not item.has_default:
            required.append(item.name)
        properties[item.name] = schema
    return ScriptSignature(
        language="bash",
        schema=object_schema(properties, required, top_level=True),
        summary=_summary(code),
        notes=tuple(notes),
    )


def _input(match: re.Match[str], line: int, notes: list[str]) -> _Input:
    position = int(match.group("bare") or match.group("position"))
    raw_default = match.group("default")
    default: str | None = None
    if raw_default is not None:
        if _EXPANSION.search(_strip_single_quoted(raw_default)):
            notes.append(
                f"line {line}: the default of `{match.group('name')}` is computed by the "
                "script; it is not shown in the form"
            )
        else:
            default = _unquote(raw_default, in_double_quotes=match.group("quote") == '"')
    return _Input(
        name=match.group("name"),
        position=position,
        line=line,
        column=match.start("dollar") + 1,
        has_default=match.group("operator") is not None,
        default=default,
    )


def _strip_single_quoted(word: str) -> str:
    return re.sub(r"'[^']*'", "", word)


def _unquote(word: str, *, in_double_quotes: bool) -> str:
    """The value Bash gives ``word`` (a default with no expansions in it)."""
    out: list[str] = []
    index = 0
    while index < len(word):
        char = word[index]
        if char == "\\" and index + 1 < len(word):
            out.append(word[index + 1])
            index += 2
        elif char == '"' or (char == "'" and not in_double_quotes):
            end = word.find(char, index + 1)
            end = len(word) if end == -1 else end
            out.append(word[index + 1 : end])
            index = end + 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _summary(code: str) -> str | None:
    """The first paragraph of the comment block at the top (after any shebang)."""
    paragraph: list[str] = []
    for line in code.splitlines():
        stripped = line.strip()
        if stripped.startswith("#!") and not paragraph:
            continue
        if not stripped.startswith("#"):
            if stripped or paragraph:
                break
            continue
        text = stripped.lstrip("#").strip()
        if text.startswith("shellcheck "):
            continue
        if not text:
            if paragraph:
                break
            continue
        paragraph.append(text)
    return " ".join(paragraph) or None
