"""The warm interpreters of a dedicated worker, by script version.

``WarmPool.execute`` runs a claimed job of a script the worker is dedicated to in an
idle warm interpreter of that script version (its code, packages and workspace
modules), starting one when none is idle. Afterwards the interpreter goes back to
the idle ones unless it must be replaced: after ``max_jobs`` jobs, once its resident
memory passed ``max_rss_mb``, when a job's process crashed or ended without a
result, or when the interpreter itself died or stopped answering. A new version of a
script retires the idle interpreters of the older ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections import Counter
from pathlib import Path

import msgspec
import structlog

from gristmill.common.contracts.jobs import JobError
from gristmill.common.queue import ClaimedJob
from gristmill.worker.dedicated.interpreter import InterpreterFailed, Spec, WarmInterpreter
from gristmill.worker.dependencies import Prepared
from gristmill.worker.execution import (
    ExecutionOutcome,
    ExecutionRequest,
    ExecutorSettings,
    OnLog,
    failures,
)

__all__ = ["DedicatedSettings", "WarmPool", "parse_dedicated"]

_log = structlog.get_logger(__name__)

#: Languages that run warm; others run as ordinary jobs even on a dedicated worker.
WARM_LANGUAGES = frozenset({"python3"})


class DedicatedSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: The tags (``<workspace>:<script path>``) of the scripts the worker is dedicated to.
    scripts: tuple[str, ...] = ()
    #: Jobs an interpreter runs before it is replaced.
    max_jobs: int = 10_000
    #: Resident memory of an interpreter (after a job) beyond which it is replaced.
    max_rss_mb: int = 512
    #: Longest an interpreter may take to start and import what the script imports.
    start_timeout_s: float = 60.0
    #: Idle interpreters kept (the least recently used go first).
    max_idle: int = 8

    def __post_init__(self) -> None:
        if self.max_jobs < 1 or self.max_rss_mb < 1 or self.max_idle < 1:
            raise ValueError("max_jobs, max_rss_mb and max_idle must be at least 1")


def parse_dedicated(value: str) -> tuple[str, str]:
    """``(workspace, path)`` from ``<workspace>:<script path>``. Raises ``ValueError``."""
    workspace, sep, path = value.strip().partition(":")
    path = path.strip("/")
    if not sep or not workspace or not path:
        raise ValueError(f"a dedicated script is <workspace>:<script path>, not {value!r}")
    return workspace, path


class WarmPool:
    """Warm interpreters by script version; see the module docstring."""

    def __init__(
        self, settings: DedicatedSettings, executor: ExecutorSettings, base_dir: Path
    ) -> None:
        self.settings = settings
        self._executor = executor
        self._base_dir = base_dir
        _remove_left_by_dead_workers(base_dir)
        self._tags = frozenset(settings.scripts)
        self._idle: dict[str, list[WarmInterpreter]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        #: Interpreters started so far, and why interpreters were retired (the reasons
        #: of ``WarmInterpreter.retired``, and ``abandoned``: the job's task was
        #: cancelled; ``stopped``; ``idle_limit``; ``new_version``).
        self.started = 0
        self.retired: Counter[str] = Counter()

    def handles(self, job: ClaimedJob) -> bool:
        """Whether ``job`` runs warm here: claimed for a dedicated script, in Python."""
        return job.tag in self._tags and job.language in WARM_LANGUAGES

    @property
    def idle(self) -> list[WarmInterpreter]:
        return [interpreter for idle in self._idle.values() for interpreter in idle]

    async def execute(
        self,
        job: ClaimedJob,
        request: ExecutionRequest,
        prepared: Prepared,
        *,
        on_log: OnLog,
        cancel: asyncio.Event,
    ) -> ExecutionOutcome:
        spec = Spec(
            workspace=job.workspace,
            path=job.runnable_path or "",
            code=request.code,
            python_path=prepared.python_path,
            modules=prepared.modules,
            sandbox=getattr(request, "sandbox", None),
        )
        for attempt in range(2):
            starting = asyncio.ensure_future(self._interpreter(spec))
            canceled = asyncio.ensure_future(cancel.wait())
            try:
                await asyncio.wait({starting, canceled}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                canceled.cancel()
            if not starting.done():  # canceled while warming up: the start is abandoned
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, InterpreterFailed):
                    await starting
                return _failed(failures.canceled())
            try:
                interpreter = starting.result()
            except InterpreterFailed as exc:
                return _failed(JobError(name="LaunchError", message=str(exc)))
            try:
                outcome = await interpreter.run(request, on_log=on_log, cancel=cancel)
                break
            except InterpreterFailed:  # found dead before the job started: once more
                self._retire(interpreter, "died")
                if attempt:
                    raise
            except BaseException:
                self._retire(interpreter, "abandoned")
                raise
        interpreter.note_done(
            max_jobs=self.settings.max_jobs, max_rss_kb=self.settings.max_rss_mb * 1024
        )
        if interpreter.retired is not None:
            self._retire(interpreter, interpreter.retired)
        else:
            self._give_back(interpreter)
        return outcome

    async def _interpreter(self, spec: Spec) -> WarmInterpreter:
        """An idle, live interpreter for ``spec``, or a new one. Raises ``InterpreterFailed``."""
        while (interpreter := self._take(spec.key)) is not None:
            if interpreter.alive:
                return interpreter
            self._retire(interpreter, "died")
        self._retire_other_versions(spec)
        interpreter = await WarmInterpreter.start(
            spec,
            settings=self._executor,
            base_dir=self._base_dir,
            timeout_s=self.settings.start_timeout_s,
        )
        self.started += 1
        _log.info(
            "dedicated interpreter started",
            workspace=spec.workspace,
            script_path=spec.path,
            host_pid=interpreter.host_pid,
            warmup_errors=interpreter.ready.warmup_errors if interpreter.ready else None,
        )
        return interpreter

    async def close(self) -> None:
        """Stop every interpreter (the worker is stopping)."""
        for interpreters in self._idle.values():
            for interpreter in interpreters:
                self._retire(interpreter, "stopped")
        self._idle.clear()
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _take(self, key: str) -> WarmInterpreter | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        interpreter = idle.pop()
        if not idle:
            del self._idle[key]
        return interpreter

    def _give_back(self, interpreter: WarmInterpreter) -> None:
        self._idle.setdefault(interpreter.key, []).append(interpreter)
        # Dicts keep insertion order: re-inserting marks the key most recently used.
        self._idle[interpreter.key] = self._idle.pop(interpreter.key)
        while sum(len(idle) for idle in self._idle.values()) > self.settings.max_idle:
            oldest = next(iter(self._idle))
            victim = self._take(oldest)
            if victim is not None:
                self._retire(victim, "idle_limit")

    def _retire_other_versions(self, spec: Spec) -> None:
        for key in list(self._idle):
            idle = self._idle[key]
            if idle and (idle[0].spec.workspace, idle[0].spec.path) == (spec.workspace, spec.path):
                for interpreter in self._idle.pop(key):
                    self._retire(interpreter, "new_version")

    def _retire(self, interpreter: WarmInterpreter, reason: str) -> None:
        self.retired[reason] += 1
        _log.info(
            "dedicated interpreter retired",
            workspace=interpreter.spec.workspace,
            script_path=interpreter.spec.path,
            reason=reason,
            jobs=interpreter.jobs,
            rss_kb=interpreter.rss_kb,
        )
        task = asyncio.get_running_loop().create_task(interpreter.close())
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("closing a dedicated interpreter failed", error=repr(task.exception()))


def _remove_left_by_dead_workers(base_dir: Path) -> None:
    """Remove the interpreter directories of worker processes that are gone (a worker
    killed with its interpreters leaves their files; their processes died with it)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(base_dir):
            pid = entry.name.partition("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(entry.path, ignore_errors=True)


def _failed(error: JobError) -> ExecutionOutcome:
    return ExecutionOutcome(
        success=False,
        result=None,
        error=error,
        exit_code=None,
        duration_ms=0,
        exit_reason=error.exit_reason,
    )
