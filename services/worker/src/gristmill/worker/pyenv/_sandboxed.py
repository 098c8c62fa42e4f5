"""uv in the job sandbox: resolving and installing run third-party build code.

Building a source distribution runs the package's own ``setup.py`` or build backend,
so uv gets the sandbox jobs get (``gristmill.worker.sandbox``), adjusted to its work:

* the host network, whatever the jobs' policy (it must reach the package index);
* read-write: its working directory (the staging directory of the environment being
  installed, or a scratch directory to resolve in), bound at its host path so that
  the paths on uv's command line mean the same inside, and uv's cache;
* read-only: the system, uv itself and the job interpreter; nothing else of the
  worker: not its data directory, its environment, its processes, other jobs'
  directories or the environments already installed;
* one host uid for every installation (``job_uid_base - 1`` where jobs get their
  own uids), which owns uv's cache; limits sized for compilers (``TOOL_LIMITS``).

What remains shared between installations is uv's cache: a hostile build can write
there, and so reach later installations (never the worker or a job's secrets).
Operators who cannot accept that give each worker group its own cache directory.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec

from gristmill.worker.sandbox import Limits, Sandbox
from gristmill.worker.sandbox.job import JobSandbox

__all__ = ["TOOL_LIMITS", "installer_uid", "tool_sandbox"]

#: Limits of one uv run: compilers want memory, processes and a roomy /tmp; the
#: installation's own timeout bounds its time.
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
    """The host uid uv runs as: just below the jobs' uids; ``None``: the worker's."""
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
    """The sandbox of one uv run in ``workdir`` (see the module docstring)."""
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
    """Give ``path`` (uv's cache) to ``uid``, once per process (a walk when needed)."""
    key = (str(path), uid)
    if key in _owned:
        return
    path.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # one local mkdir
    if path.stat().st_uid != uid:  # noqa: ASYNC240  # one stat
        await asyncio.to_thread(_chown_tree, path, uid)
    _owned.add(key)


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid, follow_symlinks=False)
    for directory, subdirs, names in os.walk(root):
        for name in (*subdirs, *names):
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)
