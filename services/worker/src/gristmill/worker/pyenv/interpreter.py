"""What the job interpreter is: its version and the tag its installed packages need.

Probed by running it once (``-I -S``, a few milliseconds), then remembered for this
process while the interpreter's file is unchanged, so that a cache hit in
:func:`~gristmill.worker.pyenv.ensure_env` starts no process at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from gristmill.common.pydeps import DependencyError
from gristmill.worker.pyenv._process import run_tool

__all__ = ["Interpreter", "probe_interpreter"]

#: Python 3.9 compatible, standard library only, one line of output.
_PROBE = (
    "import sys, sysconfig;"
    "print('%d.%d' % sys.version_info[:2], sys.implementation.cache_tag,"
    " sysconfig.get_platform(), getattr(sys, 'abiflags', '') or '-')"
)
_PROBE_FIELDS = 4
_VERSION = re.compile(r"\d+\.\d+")
_PROBE_TIMEOUT_S = 30.0


class Interpreter(msgspec.Struct, frozen=True, kw_only=True):
    """A Python interpreter as far as installed packages care."""

    path: str
    #: ``"3.11"``.
    version: str
    #: Packages installed for one tag work for every interpreter with it, e.g.
    #: ``"cpython-311-linux-x86_64"`` (free-threaded builds add their ABI flags).
    tag: str


_known: dict[tuple[str, str, int, int], Interpreter] = {}


def _identity(python: str) -> tuple[str, str, int, int]:
    real = os.path.realpath(python)
    try:
        stat = os.stat(real)
    except OSError as exc:
        raise DependencyError(f"the job interpreter {python!r} cannot be used: {exc}") from None
    return (python, real, stat.st_mtime_ns, stat.st_size)


async def probe_interpreter(python: str) -> Interpreter:
    """``python``'s version and tag, from memory when its file has not changed.

    Raises:
        DependencyError: ``python`` does not exist or does not run.
    """
    identity = _identity(python)
    known = _known.get(identity)
    if known is not None:
        return known
    done = await run_tool(
        [python, "-I", "-S", "-c", _PROBE], env={}, cwd=Path("/"), timeout_s=_PROBE_TIMEOUT_S
    )
    fields = done.stdout.split() if done is not None and done.returncode == 0 else []
    if len(fields) != _PROBE_FIELDS or not _VERSION.fullmatch(fields[0]):
        detail = done.stderr.strip() if done is not None else "it did not answer in time"
        raise DependencyError(f"the job interpreter {python!r} does not run: {detail}")
    version, cache_tag, platform, abiflags = fields
    tag = f"{cache_tag}-{platform}" + ("" if abiflags == "-" else f"-{abiflags}")
    interpreter = Interpreter(path=python, version=version, tag=_safe(tag))
    _known[identity] = interpreter
    return interpreter


def _safe(tag: str) -> str:
    """A tag usable as one directory name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", tag)
