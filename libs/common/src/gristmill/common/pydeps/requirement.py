"""Checking one requirement string before it reaches a resolver.

Requirements come from users (PEP 723 blocks, ``# requirements:`` comments, pin
comments) and end up as lines of a requirements file that uv reads on the worker. A
requirements file is more than a list of packages: ``-r other.txt``, ``--index-url``,
``-e ./path`` and ``pkg @ file:///`` would let a script read worker files or pick
another index. Only PEP 508 requirements are let through: a name, optional extras,
then a version specifier, a direct ``https``/``http``/``git+https`` URL, or nothing,
and an optional environment marker.
"""

from __future__ import annotations

import re

from gristmill.common.pydeps.errors import DependencyError

__all__ = ["check_requirement", "normalize_name", "requirement_name"]

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_EXTRAS = re.compile(r"\s*\[\s*[A-Za-z0-9._\-,\s]*\]")
_CLAUSE = r"\s*(?:~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*"
_SPECIFIER = rf"(?:{_CLAUSE}(?:,{_CLAUSE})*|\(\s*{_CLAUSE}(?:,{_CLAUSE})*\)\s*)"
#: What may follow the name and extras: a specifier or a URL, then a marker.
_REST = re.compile(rf"\s*(?:{_SPECIFIER}|@\s*(?P<url>\S+)\s*)?(?:;(?P<marker>.*))?")
_ALLOWED_SCHEMES = ("https://", "http://", "git+https://")
_SEPARATORS = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """The PEP 503 form of a distribution name: ``PyYAML`` and ``pyyaml`` are one."""
    return _SEPARATORS.sub("-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalized distribution name at the start of a checked requirement."""
    match = _NAME.match(requirement.strip())
    if match is None:
        raise DependencyError(f"not a requirement: {requirement!r}", requirement=requirement)
    return normalize_name(match.group())


def check_requirement(text: str, *, location: str | None = None) -> str:
    """``text`` stripped of blanks and of a trailing ``#`` comment, if it is a plain
    PEP 508 requirement.

    Raises:
        DependencyError: ``text`` is an option (``-r``, ``--index-url``, ...), a path,
            a URL with another scheme, or not a requirement at all.
    """
    requirement = text.split(" #", 1)[0].strip()
    if not requirement:
        raise DependencyError("empty requirement", location=location)
    if any(c in requirement for c in "\r\n\0"):
        raise DependencyError(
            f"a requirement must fit on one line: {requirement!r}", location=location
        )
    if requirement.startswith("-"):
        raise DependencyError(
            f"options are not allowed in requirements: {requirement!r}; "
            "write one package requirement per line (`name`, `name==1.2`, `name>=1,<2`)",
            requirement=requirement,
            location=location,
        )
    name = _NAME.match(requirement)
    rest_at = name.end() if name else 0
    extras = _EXTRAS.match(requirement, rest_at)
    if extras is not None:
        rest_at = extras.end()
    rest = _REST.fullmatch(requirement, rest_at)
    if name is None or rest is None:
        raise DependencyError(
            f"not a valid requirement: {requirement!r}; expected a package name, "
            "optionally with a version (`name==1.2`) or a URL (`name @ https://...`)",
            requirement=requirement,
            location=location,
        )
    marker = rest.group("marker") or ""
    if " -" in marker or "\t-" in marker:
        raise DependencyError(
            f"options are not allowed in requirements: {requirement!r}",
            requirement=requirement,
            location=location,
        )
    url = rest.group("url")
    if url is not None and not url.startswith(_ALLOWED_SCHEMES):
        raise DependencyError(
            f"only https, http and git+https URLs are allowed in requirements: {requirement!r}",
            requirement=requirement,
            location=location,
        )
    return requirement
