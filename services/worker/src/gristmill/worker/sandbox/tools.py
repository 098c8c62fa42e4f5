"""The worker's own tools on users' input, in the job sandbox.

Installing a Python package may build a source distribution, which runs that
package's own build code; compiling a Go script reads the user's code. Such tools
(uv, the Go compiler) get the sandbox jobs get, adjusted to their work:

* the host network, whatever the jobs' policy (uv must reach the package index);
* read-write: the working directory (a staging or scratch directory), bound at its
  host path so that the paths on the tool's command line mean the same inside, and
  the tool's cache (``writable``);
* read-only: the system, the tool and what it reads (``readonly``); nothing else of
  the worker: not its data directory, its environment, its processes, other jobs'
  directories or what earlier runs produced;
* one host uid for every tool run (``job_uid_base - 1`` where jobs get their own
  uids), which owns the tools' caches; limits sized for compilers (``TOOL_LIMITS``).

What remains shared between runs is the tool's cache: a hostile build can write
there, and so reach later builds (never the worker or a job's secrets). Operators
who cannot accept that give each worker group its own cache directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from gristmill.worker.sandbox.job import JobSandbox, chown_tree
from gristmill.worker.sandbox.limits import Limits
from gristmill.worker.sandbox.policy import Sandbox

__all__ = [
    "TOOL_LIMITS",
    "Completed",
    "ToolUnavailable",
    "installer_uid",
    "run_tool",
    "tool_sandbox",
]

#: Limits of one tool run: compilers want memory, processes and a roomy /tmp; the
#: run's own timeout bounds its time.
TOOL_LIMITS = Limits(
    memory_mb=4096,
    address_space_mb=None,
    cpu_s=None,
    processes=1024,
    open_files=8192,
    file_size_mb=4096,
    tmp_mb=2048,
)

_owned: set[tuple[str, int]] = set()


def installer_uid(sandbox: Sandbox) -> int | None:
    """The host uid tools run as: just below the jobs' uids; ``None``: the worker's."""
    base = sandbox.policy.job_uid_base
    if not sandbox.job_uids or base is None or base <= 1000:
        return None
    return base - 1


async def tool_sandbox(
    sandbox: Sandbox,
    *,
    workdir: Path,
    readonly: Sequence[str],
    writable: Sequence[Path],
) -> JobSandbox:
    """The sandbox of one tool run in ``workdir`` (see the module docstring)."""
    uid = installer_uid(sandbox)
    if uid is not None:
        for path in writable:
            await _own(path, uid)
    policy = msgspec.structs.replace(
        sandbox.policy, network="host", workdir=str(workdir), limits=TOOL_LIMITS
    )
    return JobSandbox(
        msgspec.structs.replace(sandbox, policy=policy),
        job_id=uuid.uuid4(),
        workdir=workdir,
        readonly_paths=readonly,
        limits=TOOL_LIMITS,
        writable_paths=[str(path) for path in writable],
        user=uid,
    )


async def _own(path: Path, uid: int) -> None:
    """Give ``path`` (a tool's cache) to ``uid``, once per process (a walk when needed)."""
    key = (str(path), uid)
    if key in _owned:
        return
    path.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # one local mkdir
    if path.stat().st_uid != uid:  # noqa: ASYNC240  # one stat
        await asyncio.to_thread(chown_tree, path, uid)
    _owned.add(key)


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class ToolUnavailable(OSError):
    """The tool could not be started (or sandboxed); the message says why."""


async def run_tool(
    argv: Sequence[str],
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

    With ``sandbox``, it runs in the sandbox described in the module docstring, with
    ``cwd`` and ``writable`` read-write and ``readonly`` (besides ``argv[0]``)
    read-only; ``HOME`` is ``cwd`` and ``TMPDIR`` the sandbox's own ``/tmp``.

    Raises:
        ToolUnavailable: ``argv[0]`` could not be started or sandboxed.
    """
    box: JobSandbox | None = None
    command = list(argv)
    if sandbox is not None:
        try:
            box = await tool_sandbox(
                sandbox, workdir=cwd, readonly=[argv[0], *readonly], writable=writable
            )
        except OSError as exc:
            raise ToolUnavailable(f"could not sandbox {argv[0]}: {exc}") from None
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
        raise ToolUnavailable(f"could not start {argv[0]}: {exc}") from None
    try:
        if box is not None:
            box.started()
            if box.handshake_fd is not None:
                try:
                    await asyncio.to_thread(box.complete_handshake)
                except (OSError, TimeoutError) as exc:
                    raise ToolUnavailable(f"could not sandbox {argv[0]}: {exc}") from None
        try:
            async with asyncio.timeout(timeout_s):
                out, err = await process.communicate(stdin.encode() if stdin is not None else None)
        except TimeoutError:
            return None
        return Completed(
            returncode=process.returncode if process.returncode is not None else -1,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        )
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
        if box is not None:
            box.finish()
