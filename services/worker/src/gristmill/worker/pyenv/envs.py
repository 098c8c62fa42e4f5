"""``ensure_env``: a lockfile → an installed directory of packages, cached by its hash.

Layout under the worker's ``cache_dir``::

    uv/                                    uv's cache (wheels, index metadata)
    envs/<interpreter tag>/<digest>/       one installed lockfile (``--target`` layout)
    envs/<interpreter tag>/<digest>.lock   the file lock of its installation

An environment is a plain directory of packages (``uv pip install --target``), not a
virtualenv: jobs keep the system interpreter and its ``-I -S`` start-up, and find the
packages through ``sys.path`` (:func:`sys_path_code`). It is installed into a staging
directory beside it and renamed into place, so a directory that exists is complete:
a cache hit is one ``stat`` and starts no process. Installers of the same environment
queue on a file lock (``flock``, so it works across tasks, processes and, on a shared
local disk, workers); the winner installs, the others find the directory when they get
the lock. Installation tries ``--offline`` first (uv's cache; no network round trip)
and goes online only if that fails.

Packages are copied out of uv's cache rather than hard-linked (``link_mode``): a job
that writes into its environment must not be able to alter uv's cache, and through it
every environment installed later. Bytecode is compiled at install time because jobs
run with ``-B`` and would otherwise compile every imported module at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Literal

from gristmill.common.pydeps import DependencyError
from gristmill.worker.pyenv._diagnostics import uv_failure
from gristmill.worker.pyenv._process import Completed, find_uv, run_tool, uv_environment
from gristmill.worker.pyenv.interpreter import Interpreter, probe_interpreter
from gristmill.worker.pyenv.lock import lockfile_digest, normalize_lockfile
from gristmill.worker.sandbox import Sandbox

__all__ = ["ENV_LOCKFILE", "ensure_env", "env_dir", "sys_path_code"]

#: Installing can take minutes for big wheels on a slow link.
DEFAULT_INSTALL_TIMEOUT_S = 600.0
#: The lockfile an environment was installed from, kept inside it.
ENV_LOCKFILE = ".gristmill-lock.txt"
_DIGEST_CHARS = 32
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.25


def env_dir(cache_dir: Path, interpreter: Interpreter, lockfile: str) -> Path:
    """Where the environment of ``lockfile`` for ``interpreter`` lives (or would)."""
    return cache_dir / "envs" / interpreter.tag / lockfile_digest(lockfile)[:_DIGEST_CHARS]


async def ensure_env(
    lockfile: str,
    *,
    python: str,
    cache_dir: Path,
    timeout_s: float = DEFAULT_INSTALL_TIMEOUT_S,
    uv_bin: str | None = None,
    link_mode: Literal["copy", "hardlink"] = "copy",
    sandbox: Sandbox | None = None,
) -> Path | None:
    """The directory holding ``lockfile``'s packages for the interpreter ``python``,
    installed if need be; ``None`` for a lockfile that pins nothing.

    With ``sandbox`` (the jobs' sandbox), uv runs inside it, in the staging directory:
    installing may build a source distribution, which runs that package's code.

    Raises:
        DependencyError: the lockfile is malformed, uv failed to install it (``stderr``
            is uv's report), or the installation (or waiting for another one) took
            longer than ``timeout_s`` seconds (``transient``).
    """
    normalized = normalize_lockfile(lockfile)
    if not normalized:
        return None
    interpreter = await probe_interpreter(python)
    final = env_dir(cache_dir, interpreter, normalized)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    async with _exclusive(final.with_name(f"{final.name}.lock"), deadline=deadline):
        if final.is_dir():  # installed while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.*"):  # left by a crashed installer
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            requirements = stage / "lock.txt"
            requirements.write_text(normalized, encoding="utf-8")
            target = stage / "env"
            await _install(
                [
                    find_uv(uv_bin),
                    "pip",
                    "install",
                    "--target",
                    str(target),
                    "--python",
                    interpreter.path,
                    "-r",
                    str(requirements),
                    "--compile-bytecode",
                    "--link-mode",
                    link_mode,
                    "--quiet",
                    "--color",
                    "never",
                ],
                target=target,
                cache_dir=cache_dir,
                deadline=deadline,
                requested=normalized.splitlines(),
                sandbox=sandbox,
                stage=stage,
                interpreter=interpreter,
            )
            (target / ENV_LOCKFILE).write_text(normalized, encoding="utf-8")
            target.rename(final)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return final


def sys_path_code(env: Path | None) -> str:
    """Python statements that make ``env``'s packages importable in a job interpreter
    started with ``-I -S`` (where ``PYTHONPATH`` and ``.pth`` files are ignored).

    The directory goes at the end of ``sys.path``, where site-packages would be, so
    a package cannot shadow the standard library. If the environment has ``.pth``
    files (namespace packages of old setuptools, a few others), ``site.addsitedir``
    processes them; otherwise a plain append, which costs nothing.
    """
    if env is None:
        return ""
    if any(name.endswith(".pth") for name in os.listdir(env)):
        return f"import site;site.addsitedir({str(env)!r});"
    return f"import sys;sys.path.append({str(env)!r});"


async def _install(
    argv: list[str],
    *,
    target: Path,
    cache_dir: Path,
    deadline: float,
    requested: Iterable[str],
    sandbox: Sandbox | None,
    stage: Path,
    interpreter: Interpreter,
) -> None:
    env = uv_environment(cache_dir / "uv")

    async def attempt(command: list[str]) -> Completed | None:
        return await run_tool(
            command,
            env=env,
            cwd=stage,
            timeout_s=_remaining(deadline),
            sandbox=sandbox,
            readonly=[interpreter.path],
            writable=[cache_dir / "uv"],
        )

    offline = await attempt([*argv, "--offline"])
    if offline is not None and offline.returncode == 0:
        return
    shutil.rmtree(target, ignore_errors=True)
    online = await attempt(argv)
    if online is None:
        raise DependencyError("installing the script's dependencies took too long", transient=True)
    if online.returncode != 0:
        raise uv_failure("installing", online.stderr, requested)


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


@contextlib.asynccontextmanager
async def _exclusive(path: Path, *, deadline: float) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``path``, polling so that waiting can be
    cancelled and never blocks the event loop."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        delay = _POLL_FIRST_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() + delay > deadline:
                    raise DependencyError(
                        "another installation of the same environment is taking too long",
                        transient=True,
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX_S)
        yield
    finally:
        os.close(fd)
