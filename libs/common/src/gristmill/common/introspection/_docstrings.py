"""Read a summary and per-parameter descriptions out of a docstring.

Three common styles are understood, and may be mixed:

* Google: an ``Args:`` (or ``Arguments:``, ``Parameters:``, ``Attributes:``...)
  header, then ``name: text`` or ``name (type): text`` entries, continuation lines
  indented deeper;
* reST fields: ``:param name: text`` or ``:param type name: text``;
* NumPy: a ``Parameters`` header underlined with dashes, then ``name : type`` lines
  with the text indented below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Docstring", "parse_docstring"]

_GOOGLE_HEADER: Final = re.compile(
    r"^(?P<indent>\s*)(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments"
    r"|Other Parameters|Attributes|Fields):\s*$"
)
_GOOGLE_ENTRY: Final = re.compile(
    r"^\*{0,2}(?P<name>[A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:\s*(?P<text>.*)$"
)
_REST_FIELD: Final = re.compile(
    r"^(?P<indent>\s*):(?:param|parameter|arg|argument|key|keyword)\s+"
    r"(?:[^:]*?\s+)?\*{0,2}(?P<name>[A-Za-z_]\w*)\s*:\s*(?P<text>.*)$"
)
_NUMPY_HEADERS: Final = frozenset({"Parameters", "Other Parameters", "Attributes"})
_NUMPY_RULE: Final = re.compile(r"^\s*-{3,}\s*$")
_NUMPY_ENTRY: Final = re.compile(r"^\*{0,2}(?P<name>[A-Za-z_]\w*)\s*(?::.*)?$")
# A line that starts any section ends the summary paragraph.
_SECTION_START: Final = re.compile(r"^\s*(?:[A-Z][A-Za-z ]*:\s*$|:\w+)")


@dataclass(frozen=True)
class Docstring:
    summary: str | None
    params: dict[str, str] = field(default_factory=dict)


def parse_docstring(text: str | None) -> Docstring:
    """Split a cleaned (dedented) docstring into its summary and parameter texts."""
    if not text:
        return Docstring(summary=None)
    lines = text.splitlines()
    params: dict[str, str] = {}
    _google(lines, params)
    _numpy(lines, params)
    _rest(lines, params)
    return Docstring(summary=_summary(lines), params=params)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(parts: list[str]) -> str:
    return " ".join(part.strip() for part in parts if part.strip())


def _summary(lines: list[str]) -> str | None:
    paragraph: list[str] = []
    for index, line in enumerate(lines):
        if not line.strip():
            if paragraph:
                break
            continue
        next_line = lines[index + 1] if index + 1 < len(lines) else ""
        if _SECTION_START.match(line) or _NUMPY_RULE.match(next_line):
            break
        paragraph.append(line)
    return _join(paragraph) or None


def _add(params: dict[str, str], name: str, parts: list[str]) -> None:
    text = _join(parts)
    if text and name not in params:
        params[name] = text


def _google(lines: list[str], params: dict[str, str]) -> None:
    index = 0
    while index < len(lines):
        header = _GOOGLE_HEADER.match(lines[index])
        index += 1
        if header is None:
            continue
        header_indent = len(header.group("indent"))
        entry_indent: int | None = None
        name: str | None = None
        parts: list[str] = []
        while index < len(lines):
            line = lines[index]
            if line.strip() and _indent(line) <= header_indent:
                break
            index += 1
            if not line.strip():
                continue
            if entry_indent is None:
                entry_indent = _indent(line)
            entry = _GOOGLE_ENTRY.match(line.strip()) if _indent(line) == entry_indent else None
            if entry is not None:
                if name is not None:
                    _add(params, name, parts)
                name, parts = entry.group("name"), [entry.group("text")]
            elif name is not None:
                parts.append(line)
        if name is not None:
            _add(params, name, parts)


def _numpy(lines: list[str], params: dict[str, str]) -> None:
    def starts_section(at: int) -> bool:
        return at + 1 < len(lines) and bool(_NUMPY_RULE.match(lines[at + 1]))

    index = 0
    while index < len(lines):
        if not (lines[index].strip() in _NUMPY_HEADERS and starts_section(index)):
            index += 1
            continue
        base = _indent(lines[index])
        index += 2
        name: str | None = None
        parts: list[str] = []
        while index < len(lines) and not starts_section(index):
            line = lines[index]
            index += 1
            if not line.strip():
                continue
            entry = _NUMPY_ENTRY.match(line.strip()) if _indent(line) == base else None
            if entry is not None:
                if name is not None:
                    _add(params, name, parts)
                name, parts = entry.group("name"), []
            elif _indent(line) > base and name is not None:
                parts.append(line)
        if name is not None:
            _add(params, name, parts)


def _rest(lines: list[str], params: dict[str, str]) -> None:
    index = 0
    while index < len(lines):
        found = _REST_FIELD.match(lines[index])
        index += 1
        if found is None:
            continue
        base = len(found.group("indent"))
        parts = [found.group("text")]
        while index < len(lines):
            line = lines[index]
            if not line.strip() or _indent(line) <= base:
                break
            parts.append(line)
            index += 1
        _add(params, found.group("name"), parts)
