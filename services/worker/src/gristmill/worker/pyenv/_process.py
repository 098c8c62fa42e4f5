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

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import uv

from gristmill.common.pydeps import DependencyError
from gristmill.worker.pyenv._sandboxed import tool_sandbox
from gristmill.worker.sandbox import Sandbox
from gristmill.worker.sandbox.job import JobSandbox

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


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


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
    """Run ``argv`` to completion; ``None`` if it outlived ``timeout_s`` seconds (then it
    and its children are killed). Cancellation kills them too.

    With ``sandbox``, it runs in the job sandbox (``_sandboxed.py``) with ``cwd``,
    ``writable`` read-write and ``readonly`` (besides ``argv[0]``) read-only.

    Raises:
        DependencyError: ``argv[0]`` could not be started.
    """
    started = time.perf_counter()
    box: JobSandbox | None = None
    command = argv
    if sandbox is not None:
        try:
            box = await tool_sandbox(
                sandbox, workdir=cwd, readonly=[argv[0], *readonly], writable=writable
            )
        except OSError as exc:
            raise DependencyError(f"could not sandbox {argv[0]}: {exc}") from None
        command = box.wrap(argv)
        env = {**env, "HOME": str(cwd), "TMPDIR": "/tmp"}  # noqa: S108  # the sandbox's own tmpfs
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            # Under a uid of its own, bubblewrap binds cwd from a descriptor.
            cwd=cwd if box is None else "/",
            start_new_session=True,
            pass_fds=() if box is None else box.pass_fds,
        )
    except OSError as exc:
        if box is not None:
            box.finish()
        raise DependencyError(f"could not start {argv[0]}: {exc}") from None
    outcome: Completed | None = None
    try:
        if box is not None:
            box.started()
            if box.handshake_fd is not None:
                try:
                    await asyncio.to_thread(box.complete_handshake)
                except (OSError, TimeoutError) as exc:
                    raise DependencyError(f"could not sandbox {argv[0]}: {exc}") from None
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate(stdin.encode() if stdin is not None else None)
        outcome = Completed(
            returncode=process.returncode if process.returncode is not None else -1,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        )
    except TimeoutError:
        pass
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
        if box is not None:
            box.finish()
        call = ToolCall(
            argv=tuple(argv),
            returncode=None if outcome is None else outcome.returncode,
            seconds=time.perf_counter() - started,
        )
        for calls in _recorders.get():
            calls.append(call)
    return outcome
