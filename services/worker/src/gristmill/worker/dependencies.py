"""Before a Python job runs: find its third-party packages, resolve them, install them.

:class:`PythonDependencies` turns a claimed ``python3`` job into the directories its
interpreter imports packages from (``ExecutionRequest.python_path``):

* a job that carries a ``lock`` (pinned lines) gets exactly that, installed with
  :func:`~gristmill.worker.pyenv.ensure_env`: no inference, no resolution;
* otherwise its requirements are inferred from its code
  (:func:`~gristmill.common.pydeps.infer_requirements`). None (standard library only)
  means nothing to do and no process started. Else they are resolved with
  :func:`~gristmill.worker.pyenv.lock` once: the lockfile is kept on disk under the
  hash of the requirements text (and the interpreter's tag), so the next job with
  the same requirements, in this worker process or a later one, starts no resolver;
  then the lockfile is installed like a carried one.

What happened is written to the job's log (``[gristmill] resolved 1 package in 412
ms``, ``[gristmill] environment ready (cached)``) so the user sees where the time
went. A failure becomes the job's error (``DependencyError``, with uv's report); it
is retryable (by the job's retry policy) only when uv says trying later may help
(network, timeout), never for a package that does not exist.

Layout of ``cache_dir``: ``uv/`` and ``envs/`` belong to ``pyenv``;
``locks/<interpreter tag>/<sha256 of the requirements>.txt`` are the cached lockfiles.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import structlog

from gristmill.common.contracts.jobs import ExitReason, JobError
from gristmill.common.pydeps import (
    DependencyError,
    Requirements,
    infer_requirements,
    infer_requirements_async,
    requirement_name,
)
from gristmill.common.queue import ClaimedJob
from gristmill.common.scripts import Executor, set_lock
from gristmill.worker.execution import ExecutionOutcome, OnLog
from gristmill.worker.execution.cancellation import unless_canceled
from gristmill.worker.pyenv import (
    Interpreter,
    ensure_env,
    env_dir,
    lock,
    normalize_lockfile,
    probe_interpreter,
)
from gristmill.worker.sandbox import Sandbox

__all__ = [
    "Prepared",
    "PythonDependencies",
    "ScriptSource",
    "dependency_job_error",
    "write_modules",
]

_log = structlog.get_logger(__name__)

#: Modules the worker itself puts on a job's path (the in-job client library): an
#: import of one is no reason to ask the package index for a distribution of that name.
_PROVIDED = frozenset({"gristmill"})
#: Scripts longer than this are read in a thread, so the worker's loop keeps beating.
_INLINE_INFERENCE_CHARS = 64 * 1024
_LOG_PREFIX = "[gristmill] "


class Prepared(msgspec.Struct, frozen=True, kw_only=True):
    """A job's environment, ready or failed."""

    #: Directories to import packages from (``ExecutionRequest.python_path``).
    python_path: tuple[str, ...] = ()
    #: Why the job cannot run; ``None`` when it can (or was canceled meanwhile).
    error: JobError | None = None
    #: Whether the job's retry policy applies to ``error``.
    retryable: bool = False
    #: Time spent preparing, apart from the job's own run time.
    elapsed_ms: int = 0
    #: Workspace scripts the job imports (``f/folder/helper`` → its code), to be laid
    #: out as modules (``f/folder/helper.py``) on the job's import path.
    modules: dict[str, str] = msgspec.field(default_factory=dict)

    def failed_outcome(self) -> ExecutionOutcome:
        """How the job ended when ``error`` kept it from starting."""
        error = self.error or JobError(name="DependencyError", message="no environment")
        return ExecutionOutcome(
            success=False,
            result=None,
            error=error,
            exit_code=None,
            duration_ms=0,
            exit_reason=error.exit_reason,
        )


class PythonDependencies:
    """Prepares Python jobs' packages with the interpreter ``python`` (the one jobs
    run with), caching lockfiles and environments under ``cache_dir``."""

    def __init__(
        self,
        *,
        python: str,
        cache_dir: Path,
        lock_timeout_s: float = 120.0,
        install_timeout_s: float = 600.0,
        uv_bin: str | None = None,
        scripts: ScriptSource | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.python = python
        #: Where uv runs (resolving and installing may run a package's build code): the
        #: jobs' sandbox; ``None`` only on a worker that runs jobs unsandboxed.
        self.sandbox = sandbox
        self._scripts = scripts
        self.cache_dir = cache_dir
        self._lock_timeout_s = lock_timeout_s
        self._install_timeout_s = install_timeout_s
        self._uv_bin = uv_bin

    async def prepare(self, job: ClaimedJob, *, on_log: OnLog, cancel: asyncio.Event) -> Prepared:
        """The environment of ``job``; nothing for jobs in other languages.

        Setting ``cancel`` stops the preparation (and kills uv): the result then has
        neither paths nor error, and the executor reports the cancellation.
        """
        if job.language != "python3":
            return Prepared()
        started = time.perf_counter()
        try:
            env = await unless_canceled(cancel, self._environment(job, on_log))
        except DependencyError as exc:
            error = dependency_job_error(exc)
            detail = f"\n{exc.stderr.rstrip()}" if exc.stderr else ""
            await on_log(f"{_LOG_PREFIX}{error.name}: {error.message}{detail}\n")
            return Prepared(error=error, retryable=exc.transient, elapsed_ms=_since(started))
        python_path = () if env is None else (str(env),)
        modules = await self.workspace_modules(job)
        return Prepared(python_path=python_path, elapsed_ms=_since(started), modules=modules)

    async def workspace_modules(self, job: ClaimedJob) -> dict[str, str]:
        """The code of every workspace script ``job`` imports, directly or not."""
        if self._scripts is None or not _imports_workspace(job.code or ""):
            return {}
        found: dict[str, str] = {}

        async def resolve(path: str) -> str | None:
            assert self._scripts is not None
            code = await self._scripts(job.workspace, path)
            if code is not None:
                found[path] = code
            return code

        try:
            await infer_requirements_async(job.code or "", path=job.runnable_path, resolve=resolve)
        except DependencyError:
            return found  # the job reports its own problem when it runs
        return found

    async def _environment(self, job: ClaimedJob, on_log: OnLog) -> Path | None:
        if job.lock is not None:
            lockfile = normalize_lockfile(job.lock)
            if not lockfile:
                return None
            await on_log(f"{_LOG_PREFIX}using the job's lockfile ({_packages(lockfile)})\n")
            return await self._install(lockfile, on_log)
        lockfile = await self._lockfile(job, on_log)
        if not lockfile:
            return None
        return await self._install(lockfile, on_log)

    async def _lockfile(self, job: ClaimedJob, on_log: OnLog) -> str:
        """The pinned lockfile of the job's code (``""``: standard library only).

        Resolved once per set of requirements: later jobs read it from the cache."""
        wanted = await self._requirements(job)
        if not wanted:
            return ""
        await on_log(f"{_LOG_PREFIX}requirements: {', '.join(wanted)}\n")
        interpreter = await probe_interpreter(self.python)
        cached = self._lock_path(interpreter, wanted)
        lockfile = _read_text(cached) or ""
        if not lockfile:
            started = time.perf_counter()
            resolved = await lock(
                wanted,
                python=self.python,
                cache_dir=self.cache_dir,
                timeout_s=self._lock_timeout_s,
                uv_bin=self._uv_bin,
                sandbox=self.sandbox,
            )
            lockfile = resolved.lockfile
            try:
                _write_text_atomically(cached, lockfile)
            except OSError as exc:  # the job can still run; the next one resolves again
                _log.warning("could not cache a lockfile", path=str(cached), error=str(exc))
            await on_log(f"{_LOG_PREFIX}resolved {_packages(lockfile)} in {_since(started)} ms\n")
        else:
            await on_log(f"{_LOG_PREFIX}lockfile cached ({_packages(lockfile)})\n")
        return lockfile

    async def run_dependency_job(
        self, job: ClaimedJob, pool: Executor, *, on_log: OnLog, cancel: asyncio.Event
    ) -> ExecutionOutcome:
        """A script version's dependency job: resolve its imports into its lockfile.

        The lockfile (``""`` for standard library only) is stored on the version, which
        its runs then install as is; a failure is stored there too (uv's report), for
        the script's page to show.
        """
        started = time.perf_counter()
        try:
            lockfile = await unless_canceled(cancel, self._lockfile(job, on_log))
        except DependencyError as exc:
            error = dependency_job_error(exc)
            detail = f"\n{exc.stderr.rstrip()}" if exc.stderr else ""
            await on_log(f"{_LOG_PREFIX}{error.name}: {error.message}{detail}\n")
            if job.runnable_hash is not None:
                await set_lock(
                    pool, job.workspace, job.runnable_hash, lock=None, error=error.message + detail
                )
            return Prepared(error=error, retryable=exc.transient).failed_outcome()
        if lockfile is None:  # canceled
            return Prepared(
                error=JobError(name="Canceled", message="canceled", exit_reason=ExitReason.CANCELED)
            ).failed_outcome()
        if job.runnable_hash is not None:
            await set_lock(pool, job.workspace, job.runnable_hash, lock=lockfile, error=None)
        return ExecutionOutcome(
            success=True,
            result={"lock": lockfile, "path": job.runnable_path, "hash": job.runnable_hash},
            error=None,
            exit_code=0,
            duration_ms=_since(started),
            exit_reason=ExitReason.OK,
        )

    async def _requirements(self, job: ClaimedJob) -> tuple[str, ...]:
        """What the job's code needs from the package index, as requirement strings."""
        code = job.code or ""
        try:
            if self._scripts is not None and _imports_workspace(code):
                scripts = self._scripts

                async def resolve(path: str) -> str | None:
                    return await scripts(job.workspace, path)

                found = await infer_requirements_async(
                    code, path=job.runnable_path, resolve=resolve
                )
            elif len(code) > _INLINE_INFERENCE_CHARS:
                found = await asyncio.to_thread(infer_requirements, code, path=job.runnable_path)
            else:
                found = infer_requirements(code, path=job.runnable_path)
        except DependencyError:
            if not _parses(code):
                # Not valid Python: let the job fail with its SyntaxError, which the
                # runner reports with the line and a caret.
                return ()
            raise
        return _wanted(found)

    def _lock_path(self, interpreter: Interpreter, wanted: tuple[str, ...]) -> Path:
        text = "".join(f"{requirement}\n" for requirement in wanted)
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.cache_dir / "locks" / interpreter.tag / f"{digest}.txt"

    async def _install(self, lockfile: str, on_log: OnLog) -> Path | None:
        interpreter = await probe_interpreter(self.python)
        present = env_dir(self.cache_dir, interpreter, lockfile).is_dir()
        started = time.perf_counter()
        env = await ensure_env(
            lockfile,
            python=self.python,
            cache_dir=self.cache_dir,
            timeout_s=self._install_timeout_s,
            uv_bin=self._uv_bin,
            sandbox=self.sandbox,
        )
        if present:
            await on_log(f"{_LOG_PREFIX}environment ready (cached)\n")
        else:
            await on_log(f"{_LOG_PREFIX}environment ready in {_since(started)} ms\n")
        return env


def dependency_job_error(exc: DependencyError) -> JobError:
    """The job's error for ``exc``: its message (uv's report, and the requirement at
    fault), uv's full output as the stack, and the script line when known."""
    message = exc.message
    if exc.requirement is not None and exc.requirement not in message:
        message = f"{message} (requirement: {exc.requirement})"
    return JobError(
        name="DependencyError",
        message=message,
        stack=exc.stderr or None,
        location=exc.location,
    )


#: ``(workspace, path)`` → the code of the latest runnable script there, or ``None``.
ScriptSource = Callable[[str, str], Awaitable[str | None]]
_WORKSPACE_IMPORT = re.compile(r"^\s*(?:from|import)\s+[uf]\.|^\s*from\s+\.", re.MULTILINE)


def _imports_workspace(code: str) -> bool:
    """Cheap pre-check: could the code import a workspace script (``f.x.y``/``u.x.y``)?"""
    return _WORKSPACE_IMPORT.search(code) is not None


def write_modules(root: Path, modules: dict[str, str]) -> None:
    """Lay out workspace scripts as importable modules under ``root``."""
    for path, code in modules.items():
        target = root.joinpath(*path.split("/")).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")


def _wanted(requirements: Requirements) -> tuple[str, ...]:
    if requirements.source != "inferred":  # declared by the script: taken as written
        return requirements.distributions
    return tuple(
        requirement
        for requirement in requirements.distributions
        if requirement_name(requirement) not in _PROVIDED
    )


def _parses(code: str) -> bool:
    try:
        with warnings.catch_warnings():  # legal but dubious code warns; not our concern
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _packages(lockfile: str) -> str:
    count = len(lockfile.splitlines())
    return f"{count} package" + ("" if count == 1 else "s")


def _since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:  # resolve again rather than fail the job
        _log.warning("could not read a cached lockfile", path=str(path), error=str(exc))
        return None


def _write_text_atomically(path: Path, text: str) -> None:
    """Write ``path`` so that readers see the old file, no file, or all of ``text``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise
