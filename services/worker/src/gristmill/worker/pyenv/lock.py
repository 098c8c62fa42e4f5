"""``lock``: requirements → a lockfile of exact pins, resolved by ``uv pip compile``.

The lockfile is the resolver's output for one Python version on this platform: one
``name==version`` line per distribution (``name @ url`` for direct references),
sorted, without comments. Locks are meant to be made once per script version and
stored; installing one (:func:`~gristmill.worker.pyenv.ensure_env`) needs no
resolution.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import msgspec

from gristmill.common.pydeps import (
    DependencyError,
    Requirements,
    check_requirement,
    requirement_name,
)
from gristmill.worker.pyenv._diagnostics import uv_failure
from gristmill.worker.pyenv._process import find_uv, run_tool, uv_environment
from gristmill.worker.pyenv.interpreter import probe_interpreter
from gristmill.worker.sandbox import Sandbox

__all__ = ["LockResult", "lock", "lockfile_digest", "normalize_lockfile"]

#: Resolution usually takes well under a second (cached) to a few seconds (cold).
DEFAULT_LOCK_TIMEOUT_S = 120.0
_VERSION = re.compile(r"\d+\.\d+")


class LockResult(msgspec.Struct, frozen=True, kw_only=True):
    """A resolved set of requirements."""

    #: ``name==version`` lines, sorted, each ending in a newline; ``""`` for nothing.
    lockfile: str
    #: The Python version it was resolved for (``"3.11"``).
    python_version: str
    #: :func:`lockfile_digest` of ``lockfile``.
    digest: str

    @property
    def packages(self) -> tuple[str, ...]:
        """The lockfile's lines."""
        return tuple(self.lockfile.splitlines())


def normalize_lockfile(text: str) -> str:
    """``text`` without comments, blank lines, duplicates or stray spaces, sorted by
    distribution name: two lockfiles that pin the same things are equal strings.

    Raises:
        DependencyError: a line is not a plain requirement (an option, a path, ...).
    """
    lines: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.add(check_requirement(line, location=f"lockfile line {number}"))
    ordered = sorted(lines, key=lambda line: (requirement_name(line), line))
    return "".join(f"{line}\n" for line in ordered)


def lockfile_digest(lockfile: str) -> str:
    """SHA-256 (hex) of the normalized ``lockfile``: equal for equivalent lockfiles."""
    return hashlib.sha256(normalize_lockfile(lockfile).encode()).hexdigest()


async def lock(
    requirements: Requirements | Iterable[str],
    *,
    python: str,
    cache_dir: Path,
    timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    uv_bin: str | None = None,
    sandbox: Sandbox | None = None,
) -> LockResult:
    """Resolve ``requirements`` for the job interpreter ``python`` (a path, or a version
    such as ``"3.11"``) with ``uv pip compile``.

    ``cache_dir`` is the worker's Python cache; uv's own cache is ``cache_dir/uv``.
    With ``sandbox`` (the jobs' sandbox), uv runs inside it: resolving may build a
    source distribution, which runs that package's code.
    No requirements make an empty lockfile and start no process.

    Raises:
        DependencyError: a requirement is malformed, or uv failed (``stderr`` is uv's
            report; ``requirement`` the one it could not satisfy, when it says), or
            resolution outlived ``timeout_s`` seconds (``transient``).
    """
    wanted = requirements.distributions if isinstance(requirements, Requirements) else requirements
    checked = [check_requirement(text) for text in wanted]
    if _VERSION.fullmatch(python):
        version, interpreter_args = python, []
    else:
        interpreter = await probe_interpreter(python)
        version, interpreter_args = interpreter.version, ["--python", interpreter.path]
    if not checked:
        return LockResult(lockfile="", python_version=version, digest=lockfile_digest(""))
    cache_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # one local mkdir; a thread hop costs more
    argv = [
        find_uv(uv_bin),
        "pip",
        "compile",
        "-",
        *interpreter_args,
        "--python-version",
        version,
        "--no-header",
        "--no-annotate",
        "--quiet",
        "--color",
        "never",
    ]
    scratch = cache_dir / "tmp"
    scratch.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lock.", dir=scratch))
    try:
        done = await run_tool(
            argv,
            stdin="".join(f"{text}\n" for text in checked),
            env=uv_environment(cache_dir / "uv"),
            cwd=workdir,
            timeout_s=timeout_s,
            sandbox=sandbox,
            readonly=interpreter_args[1:],
            writable=[cache_dir / "uv"],
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if done is None:
        raise DependencyError(
            f"resolving the script's dependencies took longer than {timeout_s:g} s",
            transient=True,
        )
    if done.returncode != 0:
        raise uv_failure("resolving", done.stderr, checked)
    lockfile = normalize_lockfile(done.stdout)
    return LockResult(lockfile=lockfile, python_version=version, digest=lockfile_digest(lockfile))
