"""Running uv (and the job interpreter, to probe it): one subprocess, bounded in time.

Every process this package starts goes through :func:`run_tool`, which reports it to
the recorders opened with :func:`record_tool_calls`: that is how tests prove that a
cache hit starts nothing, without mocking anything.

uv never gets the worker's environment: building an sdist runs the package's own
build code, which must not see database credentials. It gets ``PATH``, ``HOME``,
locale, proxy and certificate settings, the operator's ``UV_*`` settings (an index
URL, for example) and its cache directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import uv

from gristmill.common.pydeps import DependencyError
from gristmill.worker.sandbox import Sandbox, tools
from gristmill.worker.sandbox.tools import Completed

__all__ = ["Completed", "ToolCall", "find_uv", "record_tool_calls", "run_tool", "uv_environment"]

_PASSED_THROUGH = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    }
)
#: Chosen by this package, whatever the operator set.
_OWN = frozenset({"UV_CACHE_DIR", "UV_NO_PROGRESS", "UV_PYTHON", "UV_SYSTEM_PYTHON"})


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One process started: its argv, how it ended (``None``: killed) and how long it took."""

    argv: tuple[str, ...]
    returncode: int | None
    seconds: float


_recorders: ContextVar[tuple[list[ToolCall], ...]] = ContextVar("pyenv_recorders", default=())


@contextlib.contextmanager
def record_tool_calls() -> Iterator[list[ToolCall]]:
    """Collect every process this package starts in the current context (and in tasks
    created from it) into the list yielded, until the block ends."""
    calls: list[ToolCall] = []
    token = _recorders.set((*_recorders.get(), calls))
    try:
        yield calls
    finally:
        _recorders.reset(token)


def find_uv(uv_bin: str | None = None) -> str:
    """``uv_bin``, else the binary of the ``uv`` package installed with the worker, else
    ``uv`` on ``PATH``."""
    if uv_bin:
        return uv_bin
    try:
        return uv.find_uv_bin()
    except FileNotFoundError:
        found = shutil.which("uv")
        if found is None:
            raise FileNotFoundError(
                "uv was not found: install the `uv` package or put uv on PATH"
            ) from None
        return found


def uv_environment(cache_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment uv runs with (see the module's docstring)."""
    source = os.environ if base is None else base
    env = {
        key: value
        for key, value in source.items()
        if (key in _PASSED_THROUGH or key.startswith("UV_")) and key not in _OWN
    }
    env["UV_CACHE_DIR"] = str(cache_dir)
    env["UV_NO_PROGRESS"] = "1"
    env["NO_COLOR"] = "1"
    return env


async def run_tool(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout_s: float,
    stdin: str | None = None,
    sandbox: Sandbox | None = None,
    readonly: Sequence[str] = (),
    writable: Sequence[Path] = (),
) -> Completed | None:
    """:func:`gristmill.worker.sandbox.tools.run_tool`, recorded (see the module's
    docstring). With ``sandbox``, uv runs in it: it may build a package's code.

    Raises:
        DependencyError: ``argv[0]`` could not be started.
    """
    started = time.perf_counter()
    outcome: Completed | None = None
    try:
        outcome = await tools.run_tool(
            argv,
            env=env,
            cwd=cwd,
            timeout_s=timeout_s,
            stdin=stdin,
            sandbox=sandbox,
            readonly=readonly,
            writable=writable,
        )
    except tools.ToolUnavailable as exc:
        raise DependencyError(str(exc)) from None
    finally:
        call = ToolCall(
            argv=tuple(argv),
            returncode=None if outcome is None else outcome.returncode,
            seconds=time.perf_counter() - started,
        )
        for calls in _recorders.get():
            calls.append(call)
    return outcome
