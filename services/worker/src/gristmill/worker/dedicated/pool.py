"""The warm interpreters of a dedicated worker, by script version.

``WarmPool.execute`` runs a claimed job of a script the worker is dedicated to in an
idle warm interpreter of that script version (its code, packages and workspace
modules), starting one when none is idle. Afterwards the interpreter goes back to
the idle ones unless it must be replaced: after ``max_jobs`` jobs, once its resident
memory passed ``max_rss_mb``, when a job's process crashed or ended without a
result, or when the interpreter itself died or stopped answering. A new version of a
script retires the idle interpreters of the older ones.

A worker dedicated to a flow runs every step job of it (they carry the flow's tag);
those in a warm language run in interpreters keyed by the step's code, packages and
sandbox (steps with the same code share them), grouped under the flow. ``start``
pre-warms one interpreter per such step of the flow's current version, and a watcher
re-reads the flow every ``watch_interval_s`` (and at once when a step comes whose
interpreter is not among the warmed ones): a new version retires the idle
interpreters of steps it no longer has and warms its new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog

from gristmill.common.contracts.jobs import JobError
from gristmill.common.flows.store import flow_version
from gristmill.common.queue import ClaimedJob
from gristmill.worker.dedicated.interpreter import InterpreterFailed, Spec, WarmInterpreter
from gristmill.worker.dedicated.targets import FlowSteps, Target, check_target, flow_steps
from gristmill.worker.dependencies import Prepared, PythonDependencies
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
WARM_LANGUAGES = frozenset({"python3", "bun"})
#: What a watcher pass may meet besides a bug: the database away.
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class DedicatedSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: The tags (``<workspace>:<script path>``) of the scripts the worker is dedicated to.
    scripts: tuple[str, ...] = ()
    #: The tags (``<workspace>:flow/<flow path>``) of the flows it is dedicated to.
    flows: tuple[str, ...] = ()
    #: Jobs an interpreter runs before it is replaced.
    max_jobs: int = 10_000
    #: Resident memory of an interpreter (after a job) beyond which it is replaced.
    max_rss_mb: int = 512
    #: Longest an interpreter may take to start and import what the script imports.
    start_timeout_s: float = 60.0
    #: Idle interpreters kept (the least recently used go first), besides one per step
    #: of the flows' current versions.
    max_idle: int = 8
    #: How often the flows are checked for a new version (seconds).
    watch_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_jobs < 1 or self.max_rss_mb < 1 or self.max_idle < 1:
            raise ValueError("max_jobs, max_rss_mb and max_idle must be at least 1")
        if self.watch_interval_s <= 0:
            raise ValueError("watch_interval_s must be positive")

    @property
    def tags(self) -> tuple[str, ...]:
        """Every tag the worker claims: its scripts' and its flows'."""
        return (*self.scripts, *self.flows)


def parse_dedicated(value: str) -> tuple[str, str]:
    """``(workspace, path)`` from ``<workspace>:<script path>`` or
    ``<workspace>:flow/<flow path>`` (``path`` keeps ``flow/``). Raises ``ValueError``."""
    workspace, sep, path = value.strip().partition(":")
    path = path.strip("/")
    if not sep or not workspace or not path:
        raise ValueError(
            "a dedicated script is <workspace>:<script path> (a flow: "
            f"<workspace>:flow/<flow path>), not {value!r}"
        )
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
        self._tags = frozenset(settings.tags)
        self._flows = {tag: Target.of(tag) for tag in settings.flows}
        self._idle: dict[str, list[WarmInterpreter]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        #: Keys of the interpreters running a job, of those starting, and of those being
        #: started ahead of their jobs (a job for such a key waits for it).
        self._busy: Counter[str] = Counter()
        self._starting: Counter[str] = Counter()
        self._warming: dict[str, asyncio.Future[None]] = {}
        #: Per flow (by tag): the version seen, the keys of its steps' interpreters,
        #: the keys that already asked for a re-read (``_unknown_step``).
        self._versions: dict[str, int | None] = {}
        self._wanted: dict[str, frozenset[str]] = {}
        self._asked: dict[str, set[str]] = {}
        self._reread: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._db: asyncpg.Pool | None = None
        self._dependencies: PythonDependencies | None = None
        #: Interpreters started so far, and why interpreters were retired (the reasons
        #: of ``WarmInterpreter.retired``, and ``abandoned``: the job's task was
        #: cancelled; ``stopped``; ``idle_limit``; ``new_version``).
        self.started = 0
        self.retired: Counter[str] = Counter()

    def handles(self, job: ClaimedJob) -> bool:
        """Whether ``job`` runs warm here: claimed for a dedicated script or flow, in a
        warm language."""
        return job.tag in self._tags and job.language in WARM_LANGUAGES

    @property
    def idle(self) -> list[WarmInterpreter]:
        return [interpreter for idle in self._idle.values() for interpreter in idle]

    async def start(self, db: asyncpg.Pool, dependencies: PythonDependencies) -> None:
        """Check the scripts and flows served (logging what is missing), and start the
        watcher that warms the flows' steps (in the background, until ``close``)."""
        self._db, self._dependencies = db, dependencies
        first: dict[str, FlowSteps | None] = {}
        for tag in self.settings.scripts:
            await check_target(db, Target.of(tag))
        for tag, target in self._flows.items():
            await check_target(db, target)
            steps = first[tag] = await flow_steps(db, target)
            self._versions[tag] = None if steps is None else steps.version
        if self._flows:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(first))

    async def execute(
        self,
        job: ClaimedJob,
        request: ExecutionRequest,
        prepared: Prepared,
        *,
        on_log: OnLog,
        cancel: asyncio.Event,
    ) -> ExecutionOutcome:
        spec = self._spec(job, prepared, getattr(request, "sandbox", None))
        flow = job.tag if job.tag in self._flows else None
        for attempt in range(2):
            starting = asyncio.ensure_future(self._interpreter(spec, flow))
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
            try:  # marked busy by _interpreter
                outcome = await interpreter.run(request, on_log=on_log, cancel=cancel)
                break
            except InterpreterFailed:  # found dead before the job started: once more
                self._retire(interpreter, "died")
                if attempt:
                    raise
            except BaseException:
                self._retire(interpreter, "abandoned")
                raise
            finally:
                self._busy[interpreter.key] -= 1
        interpreter.note_done(
            max_jobs=self.settings.max_jobs, max_rss_kb=self.settings.max_rss_mb * 1024
        )
        if interpreter.retired is not None:
            self._retire(interpreter, interpreter.retired)
        else:
            self._give_back(interpreter)
        return outcome

    def _spec(self, job: ClaimedJob, prepared: Prepared, sandbox: Any) -> Spec:
        """What an interpreter for ``job`` is (the same for a pre-warmed flow step)."""
        flow = self._flows.get(job.tag)
        return Spec(
            workspace=job.workspace,
            # A flow's steps are grouped under the flow; a script's jobs under its path.
            path=flow.group if flow is not None else job.runnable_path or "",
            code=job.code or "",
            language=job.language or "python3",
            python_path=prepared.python_path,
            modules=prepared.modules,
            sandbox=sandbox,
        )

    async def _interpreter(self, spec: Spec, flow: str | None) -> WarmInterpreter:
        """An idle, live interpreter for ``spec`` (of the flow tagged ``flow``, if any),
        or a new one, marked busy. Raises ``InterpreterFailed``."""
        while True:
            while (interpreter := self._take(spec.key)) is not None:
                if interpreter.alive:
                    self._busy[spec.key] += 1
                    return interpreter
                self._retire(interpreter, "died")
            warming = self._warming.get(spec.key)
            if warming is None:
                break
            await asyncio.shield(warming)  # being pre-warmed: take it once ready
        if flow is None:
            self._retire_other_versions(spec)
        elif spec.key not in self._wanted.get(flow, frozenset()):
            self._unknown_step(flow, spec.key)
        interpreter = await self._start(spec)
        self._busy[spec.key] += 1
        return interpreter

    async def _start(self, spec: Spec) -> WarmInterpreter:
        self._starting[spec.key] += 1
        try:
            interpreter = await WarmInterpreter.start(
                spec,
                settings=self._executor,
                base_dir=self._base_dir,
                timeout_s=self.settings.start_timeout_s,
            )
        finally:
            self._starting[spec.key] -= 1
        self.started += 1
        _log.info(
            "dedicated interpreter started",
            workspace=spec.workspace,
            script_path=spec.path,
            host_pid=interpreter.host_pid,
            warmup_errors=interpreter.ready.warmup_errors if interpreter.ready else None,
        )
        return interpreter

    # -- flows ---------------------------------------------------------------------------

    def _unknown_step(self, flow: str, key: str) -> None:
        """A step of ``flow`` came whose interpreter was not warmed: a new version of the
        flow or of a script it calls, or a run of an older version. Re-read the flow
        now (once per such key)."""
        asked = self._asked.setdefault(flow, set())
        if key not in asked:
            asked.add(key)
            self._reread.add(flow)
            self._wake.set()

    async def _watch(self, first: dict[str, FlowSteps | None]) -> None:
        """Warm the flows' steps; then re-read the flows every ``watch_interval_s`` (or
        when woken) and re-warm those that changed."""
        changed = first
        while True:
            for flow, steps in changed.items():
                try:
                    await self._rewarm(flow, steps)
                except Exception:  # a bug must not stop the watcher; the next pass retries
                    _log.exception("warming a dedicated flow's steps failed", dedicated=flow)
                    self._versions.pop(flow, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.watch_interval_s)
            self._wake.clear()
            reread, self._reread = self._reread, set()
            changed = {}
            for flow, target in self._flows.items():
                try:
                    fresh, steps = await self._observe(flow, target, force=flow in reread)
                except _DB_ERRORS as exc:
                    _log.warning("reading a dedicated flow failed", dedicated=flow, error=str(exc))
                    continue
                if fresh:
                    changed[flow] = steps

    async def _observe(
        self, flow: str, target: Target, *, force: bool
    ) -> tuple[bool, FlowSteps | None]:
        """``(True, steps)`` if the flow changed since last seen (or ``force``: read it
        again anyway), ``steps`` ``None`` when it is gone; ``(False, None)`` otherwise."""
        assert self._db is not None
        version = await flow_version(self._db, target.workspace, target.path)
        if not force and flow in self._versions and version == self._versions[flow]:
            return False, None
        steps = None if version is None else await flow_steps(self._db, target)
        seen = self._versions.get(flow)
        now = None if steps is None else steps.version
        if now != seen:
            self._asked.pop(flow, None)
            if steps is None:
                await check_target(self._db, target)  # says it is gone
            else:
                _log.info("dedicated flow changed", dedicated=flow, version=now)
                if not steps.dedicated:
                    await check_target(self._db, target)  # says it is not dedicated
        self._versions[flow] = now
        return True, steps

    async def _rewarm(self, flow: str, steps: FlowSteps | None) -> None:
        """Make the interpreters of ``steps`` the flow's: retire the idle ones of other
        steps, start those missing."""
        assert self._dependencies is not None
        target = self._flows[flow]
        specs: dict[str, Spec] = {}
        # A flow saved without dedicated_worker sends its steps elsewhere: none to warm.
        for step in steps.steps if steps is not None and steps.dedicated else ():
            if step.job.language not in WARM_LANGUAGES:
                continue  # runs cold on this worker
            prepared = await self._dependencies.prepare(
                step.job, on_log=_ignore, cancel=self._stopping
            )
            if self._stopping.is_set():
                return
            if prepared.error is not None:  # its jobs will report it
                _log.warning(
                    "a dedicated flow's step cannot be warmed",
                    dedicated=flow,
                    step=step.step_id,
                    error=prepared.error.message,
                )
                continue
            spec = self._spec(step.job, prepared, step.sandbox)
            specs.setdefault(spec.key, spec)
        self._wanted[flow] = frozenset(specs)
        for key in list(self._idle):
            idle = self._idle[key]
            if key not in specs and idle and _in_group(idle[0], target):
                for interpreter in self._idle.pop(key):
                    self._retire(interpreter, "new_version")
        for spec in specs.values():
            await self._prewarm(flow, spec)

    async def _prewarm(self, flow: str, spec: Spec) -> None:
        """Start an interpreter for ``spec`` unless one is idle, busy or starting."""
        if self._idle.get(spec.key) or self._busy[spec.key] or self._starting[spec.key]:
            return
        done = self._warming[spec.key] = asyncio.get_running_loop().create_future()
        try:
            interpreter = await self._start(spec)
        except InterpreterFailed as exc:
            _log.warning("a dedicated flow's step could not be warmed", error=str(exc))
            return
        finally:
            del self._warming[spec.key]
            done.set_result(None)
        if spec.key in self._wanted.get(flow, frozenset()):
            self._give_back(interpreter)
        else:  # the flow changed meanwhile
            self._retire(interpreter, "new_version")

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every interpreter (the worker is stopping)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
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
        # One idle interpreter per step of a flow's current version is kept beyond the
        # limit; of the others, the least recently used go first.
        kept: set[str] = set().union(*self._wanted.values())
        while sum(len(idle) - (key in kept) for key, idle in self._idle.items()) > (
            self.settings.max_idle
        ):
            oldest = next(key for key, idle in self._idle.items() if len(idle) > (key in kept))
            victim = self._take(oldest)
            if victim is not None:
                self._retire(victim, "idle_limit")

    def _retire_other_versions(self, spec: Spec) -> None:
        """A script's new version: the idle interpreters of its others go."""
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


def _in_group(interpreter: WarmInterpreter, target: Target) -> bool:
    return (interpreter.spec.workspace, interpreter.spec.path) == (target.workspace, target.group)


async def _ignore(chunk: str) -> None:
    """Where the output of preparing a step ahead of its jobs goes: nowhere (each job
    prepares again and logs what it does)."""


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
