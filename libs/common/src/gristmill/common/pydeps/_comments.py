"""What a script declares in comments: PEP 723 metadata, requirement blocks, pins."""

from __future__ import annotations

import io
import re
import tokenize
import tomllib
from dataclasses import dataclass, field

from gristmill.common.pydeps.errors import DependencyError
from gristmill.common.pydeps.requirement import check_requirement

__all__ = ["Declarations", "Pin", "read_declarations"]

#: The reference regular expression of PEP 723 (inline script metadata).
_PEP723 = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
_BLOCK_HEADER = re.compile(r"#\s*(?P<kind>requirements|extra_requirements)\s*:(?P<rest>.*)$", re.I)
_PIN = re.compile(r"#\s*(?P<kind>pin|repin)\s*:(?P<spec>.*)$", re.I)


@dataclass(frozen=True, slots=True)
class Pin:
    """``# pin: spec`` (or ``# repin:``) on ``line``."""

    requirement: str
    line: int
    repin: bool


@dataclass(slots=True)
class Declarations:
    """Everything a script says about its dependencies outside its import statements."""

    #: From PEP 723 or ``# requirements:``; when set, inference is off.
    explicit: tuple[str, ...] | None = None
    #: ``"pep723"`` or ``"requirements"`` when ``explicit`` is set.
    explicit_source: str | None = None
    requires_python: str | None = None
    #: ``# extra_requirements:``: added to what inference finds.
    extra: list[str] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)


def read_declarations(code: str) -> Declarations:
    """Read the comments of ``code`` (which has already been parsed successfully)."""
    found = Declarations()
    _read_pep723(code, found)
    comments = _comments(code)
    _read_blocks(comments, found)
    for line, (text, _) in comments.items():
        pin = _PIN.match(text)
        if pin is not None:
            location = f"line {line}"
            requirement = check_requirement(pin.group("spec"), location=location)
            found.pins.append(
                Pin(requirement=requirement, line=line, repin=pin.group("kind").lower() == "repin")
            )
    return found


def _read_pep723(code: str, found: Declarations) -> None:
    blocks = [m for m in _PEP723.finditer(code) if m.group("type") == "script"]
    if not blocks:
        return
    line = code.count("\n", 0, blocks[0].start()) + 1
    if len(blocks) > 1:
        second = code.count("\n", 0, blocks[1].start()) + 1
        raise DependencyError(
            "the script has more than one `# /// script` metadata block",
            location=f"line {second}",
        )
    content = "".join(
        row[2:] if row.startswith("# ") else row[1:]
        for row in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        metadata = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise DependencyError(
            f"the `# /// script` metadata is not valid TOML: {exc}", location=f"line {line}"
        ) from None
    dependencies = metadata.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise DependencyError(
            "`dependencies` in the `# /// script` metadata must be a list of strings",
            location=f"line {line}",
        )
    requires_python = metadata.get("requires-python")
    if requires_python is not None and not isinstance(requires_python, str):
        raise DependencyError(
            "`requires-python` in the `# /// script` metadata must be a string",
            location=f"line {line}",
        )
    found.explicit = tuple(check_requirement(d, location=f"line {line}") for d in dependencies)
    found.explicit_source = "pep723"
    found.requires_python = requires_python


def _comments(code: str) -> dict[int, tuple[str, bool]]:
    """Line → (comment text, whether the comment is the whole line)."""
    comments: dict[int, tuple[str, bool]] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.COMMENT:
                row, column = token.start
                comments[row] = (token.string, not token.line[:column].strip())
    except (tokenize.TokenError, SyntaxError):  # pragma: no cover - the code parsed already
        pass
    return comments


def _read_blocks(comments: dict[int, tuple[str, bool]], found: Declarations) -> None:
    for line, (text, whole_line) in comments.items():
        header = _BLOCK_HEADER.match(text) if whole_line else None
        if header is None:
            continue
        kind = header.group("kind").lower()
        # The block runs over the whole-line comments that follow, up to a bare `#`.
        items = [(line, header.group("rest"))] if header.group("rest").strip() else []
        row = line + 1
        while row in comments and comments[row][1] and comments[row][0][1:].strip():
            items.append((row, comments[row][0][1:]))
            row += 1
        requirements = [check_requirement(item, location=f"line {at}") for at, item in items]
        if kind == "extra_requirements":
            found.extra.extend(requirements)
            continue
        if found.explicit is not None:
            raise DependencyError(
                "the script declares its requirements twice "
                f"({found.explicit_source} and `# requirements:`); keep one",
                location=f"line {line}",
            )
        found.explicit = tuple(requirements)
        found.explicit_source = "requirements"
