"""uv's failure reports, turned into :class:`DependencyError` with the culprit named."""

from __future__ import annotations

import re
from collections.abc import Iterable

from gristmill.common.pydeps import DependencyError, normalize_name

__all__ = ["uv_failure"]

#: Where uv names the requirement it could not satisfy, most specific first.
_CULPRIT = (
    re.compile(r"Because (?P<spec>\S+) was not found in the package registry"),
    re.compile(r"Because there is no version of (?P<spec>\S+)"),
    re.compile(r"Because (?:only )?(?P<spec>[A-Za-z0-9][\w.\-]*)\S* (?:is|are) (?:not )?available"),
    re.compile(r"Failed to (?:download|build|fetch)(?: and build)? `(?P<spec>[^`]+)`"),
    re.compile(r"you require (?P<spec>[^\s,]+)"),
)
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
#: Failures that a later attempt may not meet: the network, the index, the disk.
_TRANSIENT = re.compile(
    r"error sending request|dns error|tcp connect error|timed out|Connection (?:refused|reset)"
    r"|HTTP status server error|Network connectivity is disabled|No space left on device"
    r"|Too many open files",
    re.I,
)
_PREFIX = re.compile(r"^\s*(?:error|cause|hint|warning):\s*", re.I)


def uv_failure(action: str, stderr: str, requested: Iterable[str]) -> DependencyError:
    """The error for a failed ``uv`` run that was ``action`` (``"resolving"``, ...).

    ``requested`` are the requirements given to uv; the culprit is reported as the
    script wrote it when uv names one of them.
    """
    report = _report(stderr)
    requirement = _culprit(stderr, requested)
    return DependencyError(
        f"{action} the script's dependencies failed: {report}",
        requirement=requirement,
        stderr=stderr,
        transient=_TRANSIENT.search(stderr) is not None,
    )


def _report(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lower().startswith("error")), 0)
    sentences = [_PREFIX.sub("", line).strip() for line in lines[start:]]
    report = ": ".join(s.rstrip(".:") for s in sentences if s)
    return report or "uv gave no reason"


def _culprit(stderr: str, requested: Iterable[str]) -> str | None:
    for pattern in _CULPRIT:
        found = pattern.search(stderr)
        if found is None:
            continue
        spec = found.group("spec").strip("`'\".,")
        name = _NAME.match(spec)
        if name is None:
            continue
        wanted = normalize_name(name.group())
        for requirement in requested:
            head = _NAME.match(requirement.strip())
            if head is not None and normalize_name(head.group()) == wanted:
                return requirement
        return spec
    return None
