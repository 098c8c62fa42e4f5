"""``infer_requirements``: what a script needs installed, read from its source.

The script is parsed with :mod:`ast` and its comments with :mod:`tokenize`; it is
never imported or run. In order of precedence:

1. A PEP 723 block (``# /// script`` ... ``dependencies = [...]`` ... ``# ///``) or a
   ``# requirements:`` block (one requirement per comment line, up to the first line
   that is not a comment, or a bare ``#``) is the whole answer: inference is off.
   Having both is an error.
2. Otherwise every absolute import (nested ones too, not those under
   ``if TYPE_CHECKING:``) that is not in the standard library names a distribution
   (:func:`~gristmill.common.pydeps.mapping.distribution_for`). A ``# pin: spec``
   comment on an import statement replaces what that statement inferred (only the
   distribution of the same name when there is one, so ``import a, b  # pin: a==1``
   keeps ``b``, and all of them otherwise, so ``import cv2  # pin:
   opencv-python-headless`` swaps the package). A pin elsewhere adds a requirement;
   ``# repin: spec`` also overrides every other requirement of that name, including
   those inferred from imported workspace scripts. ``# extra_requirements:`` blocks
   add requirements.

Imports of workspace scripts (``from f.folder.script import x``,
``import u.user.script``, ``from f.folder import script``, and with the script's own
path known, ``from .script import x``) are not distributions: they are listed in
``relative_imports``. Given a resolver, their code is read in turn (each path once,
so cycles end) and, when the root script's dependencies are inferred, their
dependencies are added. A module path with three components or more is taken as the
script itself (``from f.folder.sub import x`` means the script ``f/folder/sub``).

Of several requirements for one distribution, a bare name gives way to any with a
version or URL; those are all kept, and the resolver must satisfy them together.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Literal

import msgspec

from gristmill.common.pydeps._comments import Pin, read_declarations
from gristmill.common.pydeps._imports import ImportStatement, read_imports
from gristmill.common.pydeps.errors import DependencyError
from gristmill.common.pydeps.requirement import normalize_name, requirement_name

__all__ = [
    "AsyncResolver",
    "Requirements",
    "Resolver",
    "infer_requirements",
    "infer_requirements_async",
]

#: Workspace path → that script's code, or ``None`` when there is no such script.
Resolver = Callable[[str], str | None]
AsyncResolver = Callable[[str], Awaitable[str | None]]

#: Imported scripts followed at most, so a generated import graph cannot run away.
MAX_SCRIPTS = 1000
_BARE = re.compile(r"\s*[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\s*")


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """A script's Python dependencies, before resolution."""

    #: PEP 508 requirement strings, sorted by normalized name.
    distributions: tuple[str, ...] = ()
    #: Workspace scripts imported, directly or not (``f/folder/script``), sorted.
    relative_imports: tuple[str, ...] = ()
    #: Where ``distributions`` came from.
    source: Literal["inferred", "pep723", "requirements"] = "inferred"
    #: ``requires-python`` of a PEP 723 block, unchecked.
    requires_python: str | None = None

    def to_text(self) -> str:
        """The distributions as a requirements file (one per line), for a resolver."""
        return "".join(f"{requirement}\n" for requirement in self.distributions)


def infer_requirements(
    code: str, *, path: str | None = None, resolve: Resolver | None = None
) -> Requirements:
    """The requirements of the script ``code``, whose workspace path is ``path``.

    ``resolve`` supplies the code of imported workspace scripts so that their imports
    are followed; without it they are only listed.

    Raises:
        DependencyError: the code does not parse, or declares requirements that are
            malformed or not allowed (``location`` names the script and the line).
    """
    walk = _walk(code, path)
    try:
        wanted = next(walk)
        while True:
            wanted = walk.send(resolve(wanted) if resolve is not None else None)
    except StopIteration as done:
        result: Requirements = done.value
        return result


async def infer_requirements_async(
    code: str, *, path: str | None = None, resolve: AsyncResolver | None = None
) -> Requirements:
    """:func:`infer_requirements` with a resolver that awaits (a database, a service)."""
    walk = _walk(code, path)
    try:
        wanted = next(walk)
        while True:
            wanted = walk.send(await resolve(wanted) if resolve is not None else None)
    except StopIteration as done:
        result: Requirements = done.value
        return result


@dataclass(frozen=True, slots=True)
class _Requirement:
    text: str
    repin: bool = False


@dataclass(frozen=True, slots=True)
class _Script:
    explicit: tuple[str, ...] | None
    source: Literal["inferred", "pep723", "requirements"]
    requires_python: str | None
    requirements: tuple[_Requirement, ...]
    scripts: tuple[str, ...]


def _walk(code: str, path: str | None) -> Generator[str, str | None, Requirements]:
    """Scan the root, then ask for each imported script's code (yield its path)."""
    root = _scan(code, path)
    seen: set[str] = {path} if path else set()
    queue = deque(root.scripts)
    imported: list[_Script] = []
    while queue:
        wanted = queue.popleft()
        if wanted in seen:
            continue
        seen.add(wanted)
        if len(seen) > MAX_SCRIPTS:
            raise DependencyError(f"the script imports more than {MAX_SCRIPTS} workspace scripts")
        other = yield wanted
        if other is None:
            continue
        script = _scan(other, wanted)
        imported.append(script)
        queue.extend(script.scripts)
    if path:
        seen.discard(path)
    if root.explicit is not None:
        distributions = _merge([_Requirement(text) for text in root.explicit])
    else:
        distributions = _merge(
            [*root.requirements, *(r for script in imported for r in _contribution(script))]
        )
    return Requirements(
        distributions=distributions,
        relative_imports=tuple(sorted(seen)),
        source=root.source,
        requires_python=root.requires_python,
    )


def _contribution(script: _Script) -> Iterable[_Requirement]:
    if script.explicit is not None:
        return [_Requirement(text) for text in script.explicit]
    return script.requirements


def _scan(code: str, path: str | None) -> _Script:
    try:
        module = _parse(code)
        declared = read_declarations(code)
    except DependencyError as exc:
        if path and exc.location:
            exc.location = f"{path}: {exc.location}"
        elif path:
            exc.location = path
        raise
    statements = read_imports(module, path)
    scripts = [script for statement in statements for script in statement.scripts]
    if declared.explicit is not None:
        return _Script(
            explicit=declared.explicit,
            source="pep723" if declared.explicit_source == "pep723" else "requirements",
            requires_python=declared.requires_python,
            requirements=(),
            scripts=tuple(scripts),
        )
    requirements: list[_Requirement] = []
    pinned_lines: set[int] = set()
    for statement in statements:
        pins = [pin for pin in declared.pins if statement.line <= pin.line <= statement.end_line]
        pinned_lines.update(pin.line for pin in pins)
        requirements.extend(_pinned(statement, pins))
    requirements.extend(
        _Requirement(pin.requirement, pin.repin)
        for pin in declared.pins
        if pin.line not in pinned_lines
    )
    requirements.extend(_Requirement(text) for text in declared.extra)
    return _Script(
        explicit=None,
        source="inferred",
        requires_python=None,
        requirements=tuple(requirements),
        scripts=tuple(scripts),
    )


def _pinned(statement: ImportStatement, pins: list[Pin]) -> list[_Requirement]:
    inferred = [_Requirement(text) for text in statement.distributions]
    if not pins:
        return inferred
    pinned = {requirement_name(pin.requirement) for pin in pins}
    kept = [r for r in inferred if normalize_name(r.text) not in pinned]
    if len(kept) == len(inferred):  # no pin names an inferred package: pins replace all
        kept = []
    return [*kept, *(_Requirement(pin.requirement, pin.repin) for pin in pins)]


def _merge(requirements: list[_Requirement]) -> tuple[str, ...]:
    by_name: dict[str, list[_Requirement]] = {}
    for requirement in requirements:
        by_name.setdefault(requirement_name(requirement.text), []).append(requirement)
    merged: list[str] = []
    for name in sorted(by_name):
        group = by_name[name]
        repins = [r for r in group if r.repin]
        specified = [r for r in group if not _BARE.fullmatch(r.text)]
        chosen = repins or specified or group[:1]
        merged.extend(dict.fromkeys(r.text for r in chosen))
    return tuple(merged)


def _parse(code: str) -> ast.Module:
    try:
        # The compiler warns about legal code (``"\d"``); under ``-W error`` that would
        # turn into a SyntaxError about the user's style, not their dependencies.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code, filename="<script>")
    except SyntaxError as error:
        raise DependencyError(
            f"the script is not valid Python: {error.msg}",
            location=f"line {error.lineno or 1}, column {error.offset or 1}",
        ) from None
    except ValueError as error:  # a NUL byte in the source
        raise DependencyError(f"the script is not valid Python: {error}") from None
    except (RecursionError, MemoryError):
        raise DependencyError("the script is nested too deeply to be read") from None
