"""The flow engine: advance a flow in the transaction that ended its step.

A flow is a job (kind ``flow`` / ``flowpreview``, tag ``flow``). A worker claims it
once, and :func:`run_claimed_flow` starts it: it creates the flow's state
(``flow_status``), launches its first step as a child job (``parent_job``,
``root_job``, ``flow_step``) and *parks* the flow (running, held by no worker, never a
zombie). When a child ends, the queue calls :func:`on_child_finished` in the very
transaction that recorded the child's outcome: the engine locks the flow's state,
records the outcome, launches what comes next, and commits with it. A child's
completion happens once (it is guarded by its lease), so a flow never advances twice
for one step, whatever crashes.

Steps that need no worker (``identity``, mocks, skipped steps, branch choices, loop
bookkeeping) are done inline. Loop iterations and branches are child *flow* jobs of
their own (``meta.scope = "inherit"``: they see the parent's inputs and results),
started inline and parked; a sub-flow ending is a child ending for its parent. Loop
and branch-all children run side by side up to ``parallelism``.

A script or sub-flow step with a ``cache_ttl`` whose result is in the result cache
(same code or version, same arguments) ends inline with it and makes no job.

A flow saved with ``dedicated_worker`` carries its dedicated tag in its job's ``meta``
(``DEDICATED_META_KEY``, ``<workspace>:flow/<path>``), and so do its loop iterations
and branches: every script step job it launches gets that tag instead of its own, so
only a worker dedicated to the flow claims it. The flow jobs themselves keep the
``flow`` tag; a sub-flow step runs with the sub-flow's own setting.

Timers are queue rows: a retry is a new step job with a later ``scheduled_for``; a
``sleep`` or an approval's timeout makes the parked flow claimable at that instant,
and the worker that claims it then (:func:`run_claimed_flow` again) moves it on.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import secrets
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias

import asyncpg
import msgspec
import structlog

from gristmill.common import result_cache, scripts
from gristmill.common.argschema import validate_args
from gristmill.common.contracts.jobs import ExitReason, JobStatus
from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, Forbidden, GristmillError, NotFound
from gristmill.common.flows import same_worker, store
from gristmill.common.flows.expressions import (
    Evaluator,
    ExpressionError,
    default_evaluator,
    referenced_steps,
)
from gristmill.common.flows.model import (
    BranchAll,
    BranchOne,
    FlowModule,
    FlowValue,
    ForloopFlow,
    Identity,
    InputTransform,
    JavascriptTransform,
    PathFlow,
    PathScript,
    RawScript,
    Retry,
    StaticTransform,
    StopAfterIf,
    WhileloopFlow,
    parse_value,
)
from gristmill.common.flows.status import (
    FlowPhase,
    FlowState,
    ModuleState,
    ModuleStatus,
    decode_state,
    encode_state,
)
from gristmill.common.queue import (
    CONCURRENCY_WINDOW,
    ClaimedJob,
    FinishedJob,
    NewJob,
    Queue,
    concurrency_key,
    concurrency_window,
    worker_tag,
)

__all__ = [
    "DEDICATED_META_KEY",
    "FLOW_KINDS",
    "FLOW_TAG",
    "FlowJob",
    "on_child_finished",
    "resume_signature",
    "resume_step",
    "run_claimed_flow",
]

_log = structlog.get_logger(__name__)
_Q = load_queries("flows.sql")
#: Job kinds a worker hands to the engine instead of running.
FLOW_KINDS: Final = frozenset({"flow", "flowpreview"})
#: The tag of flow jobs (claimed only to start them or when a timer fires).
FLOW_TAG: Final = "flow"
#: Key of a flow job's ``meta``: the tag of its step jobs when the flow was saved with
#: ``dedicated_worker`` (inherited by its loop iterations and branches).
DEDICATED_META_KEY: Final = "dedicated_tag"
#: Triggers whose runs go through the flow's preprocessor module.
_PREPROCESSED_TRIGGERS: Final = frozenset({"webhook", "http", "kafka", "websocket", "email"})
#: Deepest nesting of sub-flows and containers.
_MAX_DEPTH: Final = 32
_MAX_PRIORITY: Final = 100

#: Where a module sits in its flow: an index of ``modules``, or a special module.
Slot: TypeAlias = int | str
_FAILURE: Final = "failure"
_PREPROCESSOR: Final = "preprocessor"
#: Errors that say nothing about the flow: the transaction is retried as a whole.
_TRANSIENT: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.TransactionRollbackError,
    asyncpg.QueryCanceledError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def _now() -> datetime:
    return datetime.now(UTC)


class FlowJob(msgspec.Struct, frozen=True, kw_only=True):
    """A flow job's definition (its ``jobs`` row)."""

    id: uuid.UUID
    workspace: str
    kind: str
    path: str | None
    value: dict[str, Any]
    args: dict[str, Any]
    priority: int
    created_by: str
    trigger_kind: str
    trigger_source: str | None
    parent_job: uuid.UUID | None
    root_job: uuid.UUID | None
    flow_step: str | None
    meta: dict[str, Any]

    @property
    def root(self) -> uuid.UUID:
        return self.root_job or self.id

    @property
    def inherits(self) -> bool:
        """A loop iteration or a branch: sees its parent's inputs and results."""
        return self.meta.get("scope") == "inherit"

    @property
    def depth(self) -> int:
        depth = self.meta.get("depth", 0)
        return depth if isinstance(depth, int) else 0


def _flow_job(row: asyncpg.Record) -> FlowJob:
    return FlowJob(
        id=row["id"],
        workspace=row["workspace_id"],
        kind=row["kind"],
        path=row["runnable_path"],
        value=row["flow_value"] or {},
        args=row["args"] or {},
        priority=row["priority"],
        created_by=row["created_by"],
        trigger_kind=row["trigger_kind"],
        trigger_source=row["trigger_source"],
        parent_job=row["parent_job"],
        root_job=row["root_job"],
        flow_step=row["flow_step"],
        meta=row["meta"] or {},
    )


class _StepError(Exception):
    """A module could not start (bad expression, unknown script...): it fails."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def _error(name: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "message": message, **extra}


class _Outcome(msgspec.Struct, frozen=True):
    status: str
    result: Any
    error: dict[str, Any] | None


class _Tx:
    """What one transaction knows: the scopes it loaded, the outcomes it saw."""

    def __init__(self, queue: Queue, conn: Conn, evaluator: Evaluator) -> None:
        self.queue = queue
        self.conn = conn
        self.evaluator = evaluator
        self.scopes: dict[uuid.UUID, _Scope] = {}
        self.outcomes: dict[uuid.UUID, _Outcome] = {}

    def remember(self, finished: FinishedJob) -> None:
        self.outcomes[finished.id] = _Outcome(str(finished.status), finished.result, finished.error)

    async def outcome(self, job_id: uuid.UUID) -> _Outcome | None:
        found = self.outcomes.get(job_id)
        if found is None:
            row = await self.conn.fetchrow(_Q["job_outcomes"], [job_id])
            if row is None:
                return None
            found = _Outcome(row["status"], row["result"], row["error"])
            self.outcomes[job_id] = found
        return found

    async def scope(self, flow_id: uuid.UUID, *, lock: bool) -> _Scope | None:
        """A flow's scope: live in this transaction, else read (and locked) from Postgres."""
        if not lock and flow_id in self.scopes:
            return self.scopes[flow_id]
        row = await self.conn.fetchrow(_Q["flow_job_lock" if lock else "flow_job"], flow_id)
        if row is None or row["state"] is None:
            return None
        scope = _Scope.load(self, row)
        self.scopes[flow_id] = scope
        return scope

    async def child_finished(self, finished: FinishedJob) -> None:
        """A child of a flow ended: lock the flow, move it on, save it."""
        self.remember(finished)
        scope = await self.scope(finished.parent_job, lock=True)
        if scope is None or scope.state.phase is FlowPhase.DONE:
            return
        if not await self.conn.fetchval("SELECT 1 FROM job_queue WHERE id = $1", scope.job.id):
            return  # the flow ended already (canceled): nothing to advance
        scope.inbox.append(finished)
        await scope.advance()
        await scope.save()

    async def start_scope(self, job: FlowJob, *, nested: bool) -> _Scope:
        """Create and start the state of a flow job that is parked (or just claimed)."""
        secret = secrets.token_bytes(32)
        try:
            value = parse_value(job.value)
            problem: dict[str, Any] | None = None
        except GristmillError as exc:
            value = FlowValue(modules=[])
            problem = _error("InvalidFlow", exc.message, location=exc.location)
        state = FlowState(
            modules=tuple(ModuleState(id=m.id) for m in value.modules),
            failure_module=None
            if value.failure_module is None
            else ModuleState(id=value.failure_module.id),
            preprocessor_module=None
            if value.preprocessor_module is None
            else ModuleState(id=value.preprocessor_module.id),
            started_at=_now(),
        )
        inserted = await self.conn.fetchval(
            _Q["status_insert"], job.id, job.root, encode_state(state), secret
        )
        if inserted is None:  # started already (a redelivered claim): just load it
            loaded = await self.scope(job.id, lock=True)
            assert loaded is not None
            return loaded
        scope = _Scope(self, job, state, value, secret, nested=nested)
        self.scopes[job.id] = scope
        if problem is not None:
            await scope.finish(JobStatus.FAILURE, error=problem)
            return scope
        await scope.begin()
        await scope.advance()
        await scope.save()
        return scope


class _Scope:
    """One flow job being advanced (its definition, parsed value and state)."""

    def __init__(
        self,
        tx: _Tx,
        job: FlowJob,
        state: FlowState,
        value: FlowValue,
        secret: bytes,
        *,
        nested: bool,
    ) -> None:
        self.tx = tx
        self.job = job
        self.state = state
        self.value = value
        self.secret = secret
        #: Started by its parent in this transaction: the parent takes its end.
        self.nested = nested
        self.inbox: deque[FinishedJob] = deque()
        self.ended = False
        self.finished_event: FinishedJob | None = None
        self._dirty = False

    @classmethod
    def load(cls, tx: _Tx, row: asyncpg.Record) -> _Scope:
        job = _flow_job(row)
        try:
            value = parse_value(job.value)
        except GristmillError:
            value = FlowValue(modules=[])
        state = decode_state(row["state"])
        return cls(tx, job, state, value, bytes(row["resume_secret"]), nested=False)

    # -- state helpers -------------------------------------------------------------------

    @property
    def conn(self) -> Conn:
        return self.tx.conn

    @property
    def queue(self) -> Queue:
        return self.tx.queue

    def module(self, slot: Slot) -> FlowModule:
        if slot == _FAILURE:
            assert self.value.failure_module is not None
            return self.value.failure_module
        if slot == _PREPROCESSOR:
            assert self.value.preprocessor_module is not None
            return self.value.preprocessor_module
        assert isinstance(slot, int)
        return self.value.modules[slot]

    def raw_module(self, slot: Slot) -> dict[str, Any]:
        if slot == _FAILURE:
            raw: dict[str, Any] = self.job.value["failure_module"]
            return raw
        if slot == _PREPROCESSOR:
            raw = self.job.value["preprocessor_module"]
            return raw
        assert isinstance(slot, int)
        raw = self.job.value["modules"][slot]
        return raw

    def ms(self, slot: Slot) -> ModuleState:
        if slot == _FAILURE:
            assert self.state.failure_module is not None
            return self.state.failure_module
        if slot == _PREPROCESSOR:
            assert self.state.preprocessor_module is not None
            return self.state.preprocessor_module
        assert isinstance(slot, int)
        return self.state.modules[slot]

    def set_ms(self, slot: Slot, **changes: Any) -> ModuleState:
        updated = msgspec.structs.replace(self.ms(slot), **changes)
        if slot == _FAILURE:
            self.set_state(failure_module=updated)
        elif slot == _PREPROCESSOR:
            self.set_state(preprocessor_module=updated)
        else:
            assert isinstance(slot, int)
            modules = list(self.state.modules)
            modules[slot] = updated
            self.set_state(modules=tuple(modules))
        return updated

    def set_state(self, **changes: Any) -> None:
        self.state = msgspec.structs.replace(self.state, **changes)
        self._dirty = True

    def slots(self) -> Iterator[Slot]:
        yield from range(len(self.value.modules))
        if self.value.failure_module is not None:
            yield _FAILURE
        if self.value.preprocessor_module is not None:
            yield _PREPROCESSOR

    def slot_of(self, finished: FinishedJob) -> Slot | None:
        for slot in self.slots():
            if self.ms(slot).job == finished.id:
                return slot
        for slot in self.slots():
            module = self.module(slot)
            if (
                module.id == finished.flow_step
                and isinstance(module.value, ForloopFlow | WhileloopFlow | BranchAll)
                and self.ms(slot).type is ModuleStatus.IN_PROGRESS
            ):
                return slot
        return None

    def where(self) -> str:
        return self.job.path or str(self.job.root)

    @property
    def dedicated(self) -> str | None:
        """The tag of this flow's step jobs when it runs on dedicated workers."""
        tag = self.job.meta.get(DEDICATED_META_KEY)
        return tag if isinstance(tag, str) else None

    @property
    def same_worker(self) -> uuid.UUID | None:
        """The same_worker flow this one is (or runs inside): its steps share a worker."""
        owner = same_worker.owner_of(self.job.meta)
        if owner is None and self.value.same_worker:
            return self.job.id
        return owner

    # -- names of expressions ------------------------------------------------------------

    async def flow_input(self) -> dict[str, Any]:
        if self.state.flow_input is not None:
            return self.state.flow_input
        if not self.job.inherits or self.job.parent_job is None:
            return self.job.args
        parent = await self.tx.scope(self.job.parent_job, lock=False)
        base = await parent.flow_input() if parent is not None else {}
        own = {k: v for k, v in self.job.args.items() if k != "previous_result"}
        return {**base, **own}

    async def module_result(self, slot: Slot) -> Any:
        ms = self.ms(slot)
        if ms.result is not msgspec.UNSET:
            return ms.result
        if ms.job is not None:
            outcome = await self.tx.outcome(ms.job)
            if outcome is None:
                return None
            if outcome.status == "success":
                return outcome.result
            return {"error": outcome.error}
        return None

    async def previous_result(self, slot: Slot) -> Any:
        if slot == _FAILURE:
            return self.state.error
        if slot == _PREPROCESSOR:
            return self.job.args
        assert isinstance(slot, int)
        if slot > 0:
            return await self.module_result(slot - 1)
        if self.job.inherits:
            iteration = self.job.args.get("iter")
            if isinstance(iteration, dict) and "previous_result" not in self.job.args:
                return iteration.get("value")
            return self.job.args.get("previous_result")
        return await self.flow_input()

    async def step_result(self, step_id: str) -> tuple[bool, Any]:
        """(found, result) of the step ``step_id`` here or in an enclosing scope."""
        for slot in self.slots():
            module = self.module(slot)
            if module.id == step_id:
                ms = self.ms(slot)
                if ms.type in (ModuleStatus.SUCCESS, ModuleStatus.FAILURE) or (
                    ms.type is ModuleStatus.WAITING_FOR_EVENTS
                ):
                    return True, await self.module_result(slot)
                return False, None
        if self.job.inherits and self.job.parent_job is not None:
            parent = await self.tx.scope(self.job.parent_job, lock=False)
            if parent is not None:
                return await parent.step_result(step_id)
        return False, None

    def _all_step_ids(self) -> set[str]:
        return {self.module(slot).id for slot in self.slots()}

    async def results(self, refs: set[str] | None) -> dict[str, Any]:
        if refs is None:
            refs = set()
            scope: _Scope | None = self
            while scope is not None:
                refs |= scope._all_step_ids()
                if not scope.job.inherits or scope.job.parent_job is None:
                    break
                scope = await self.tx.scope(scope.job.parent_job, lock=False)
        found: dict[str, Any] = {}
        for ref in sorted(refs):
            ok, value = await self.step_result(ref)
            if ok:
                found[ref] = value
        return found

    async def names(
        self, slot: Slot, exprs: list[str], extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        refs: set[str] | None = set()
        for expr in exprs:
            found = referenced_steps(expr)
            if found is None:
                refs = None
                break
            assert refs is not None
            refs |= found
        names: dict[str, Any] = {
            "flow_input": await self.flow_input(),
            "previous_result": await self.previous_result(slot),
            "results": await self.results(refs) if refs is None or refs else {},
        }
        if slot == _FAILURE:
            names["error"] = self.state.error  # the failure module's inputs: error.message...
        if isinstance(slot, int) and slot > 0 and self.ms(slot - 1).approvers is not None:
            names["resume"] = names["previous_result"]
            names["approvers"] = list(self.ms(slot - 1).approvers or ())
        if extra:
            names.update(extra)
        return names

    async def evaluate(
        self, slot: Slot, what: str, expr: str, extra: Mapping[str, Any] | None = None
    ) -> Any:
        names = await self.names(slot, [expr], extra)
        return self._run(slot, what, expr, names)

    def _run(self, slot: Slot, what: str, expr: str, names: Mapping[str, Any]) -> Any:
        module_id = self.module(slot).id
        try:
            return self.tx.evaluator.evaluate(expr, names, workspace=self.job.workspace)
        except ExpressionError as exc:
            raise _StepError(
                _error(
                    "ExpressionError",
                    f"step {module_id!r}: {what} `{expr}` failed: {exc.js_error}",
                    location=f"{module_id}.{what}",
                    step_id=module_id,
                )
            ) from None

    async def transform(
        self, slot: Slot, what: str, transform: InputTransform | float | int | None
    ) -> Any:
        if transform is None:
            return None
        if isinstance(transform, StaticTransform):
            return transform.value
        if isinstance(transform, JavascriptTransform):
            return await self.evaluate(slot, what, transform.expr)
        return transform

    async def number(
        self, slot: Slot, what: str, transform: InputTransform | float | int | None
    ) -> float | None:
        value = await self.transform(slot, what, transform)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _StepError(
                _error(
                    "InvalidValue",
                    f"step {self.module(slot).id!r}: {what} must be a number, got {value!r}",
                    step_id=self.module(slot).id,
                )
            )
        return float(value)

    async def arguments(
        self, slot: Slot, transforms: Mapping[str, InputTransform]
    ) -> dict[str, Any]:
        exprs = [t.expr for t in transforms.values() if isinstance(t, JavascriptTransform)]
        names = await self.names(slot, exprs, {"params": {}}) if exprs else {}
        args: dict[str, Any] = {}
        for name, transform in transforms.items():
            if isinstance(transform, StaticTransform):
                args[name] = transform.value
            else:
                args[name] = self._run(slot, f"input {name!r}", transform.expr, names)
        return args

    # -- lifecycle -----------------------------------------------------------------------

    async def begin(self) -> None:
        """First moves of a new flow: skip it, or run its preprocessor."""
        if self.value.skip_expr and not self.job.inherits:
            try:
                skip = self.tx.evaluator.evaluate(
                    self.value.skip_expr,
                    {"flow_input": self.job.args},
                    workspace=self.job.workspace,
                )
            except ExpressionError as exc:
                await self.finish(
                    JobStatus.FAILURE,
                    error=_error(
                        "ExpressionError",
                        f"skip_expr `{self.value.skip_expr}` failed: {exc.js_error}",
                    ),
                )
                return
            if skip:
                self.set_state(skipped=True)
                await self.finish(JobStatus.SUCCESS, result=None)
                return
        if (
            self.value.preprocessor_module is not None
            and self.job.trigger_kind in _PREPROCESSED_TRIGGERS
            and not self.job.inherits
        ):
            self.set_state(phase=FlowPhase.PREPROCESSING)
            await self.launch(_PREPROCESSOR)

    async def advance(self) -> None:
        """Handle ended children, then start modules until one has to wait."""
        while not self.ended:
            if self.inbox:
                await self.child_done(self.inbox.popleft())
                continue
            if self.state.phase is not FlowPhase.RUNNING:
                return
            step = self.state.step
            if step >= len(self.value.modules):
                await self.finish(JobStatus.SUCCESS, result=await self.previous_result(step))
                return
            if self.ms(step).type is ModuleStatus.WAITING:
                await self.launch(step)
                continue
            return

    async def save(self) -> None:
        if not self.ended and self._dirty:
            await self.conn.execute(_Q["status_update"], self.job.id, encode_state(self.state))
            self._dirty = False

    async def finish(
        self,
        status: JobStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """End the flow job; its parent hears of it (now, or from its caller)."""
        if self.ended:
            return
        self.ended = True
        self.state = msgspec.structs.replace(self.state, phase=FlowPhase.DONE)
        await self.conn.execute(_Q["status_update"], self.job.id, encode_state(self.state))
        if status is not JobStatus.SUCCESS:
            await self.queue.cancel_descendants(
                self.conn, self.job.id, by="flow", reason="the flow ended"
            )
        reason = {
            JobStatus.SUCCESS: ExitReason.OK,
            JobStatus.CANCELED: ExitReason.CANCELED,
        }.get(status, ExitReason.ERROR)
        started = self.state.started_at
        duration = None if started is None else int((_now() - started).total_seconds() * 1000)
        finished = await self.queue.finish_parked(
            self.conn,
            self.job.id,
            status,
            result=result if status is JobStatus.SUCCESS else None,
            error=error,
            reason=reason,
            duration_ms=duration,
        )
        cache = result_cache.cache_of(self.job.meta)
        if cache is not None and status is JobStatus.SUCCESS and not self.state.skipped:
            await result_cache.store(
                self.conn,
                key=cache[0],
                workspace=self.job.workspace,
                result=result,
                job_id=self.job.id,
                ttl_s=cache[1],
            )
        if finished is None:
            return
        if self.nested:
            self.finished_event = finished
        else:
            await self.tx.child_finished(finished)

    # -- starting a module ---------------------------------------------------------------

    async def launch(self, slot: Slot) -> None:
        module = self.module(slot)
        self.set_ms(slot, type=ModuleStatus.IN_PROGRESS, started_at=_now())
        try:
            if module.skip_if is not None and await self.evaluate(
                slot, "skip_if", module.skip_if.expr
            ):
                self.set_ms(slot, skipped=True)
                await self.module_done(slot, await self.previous_result(slot), skipped=True)
                return
            if module.mock is not None and module.mock.enabled:
                await self.module_done(slot, module.mock.return_value)
                return
            value = module.value
            if isinstance(value, Identity):
                await self.module_done(slot, await self.previous_result(slot))
            elif isinstance(value, RawScript | PathScript):
                await self.launch_job(slot)
            elif isinstance(value, PathFlow):
                await self.launch_subflow(slot)
            elif isinstance(value, ForloopFlow):
                await self.launch_forloop(slot, value)
            elif isinstance(value, WhileloopFlow):
                await self.launch_whileloop(slot, value)
            elif isinstance(value, BranchOne):
                await self.launch_branchone(slot, value)
            elif isinstance(value, BranchAll):
                count = len(value.branches)
                if count == 0:
                    await self.module_done(slot, [])
                    return
                width = count if value.parallel else 1
                self.set_ms(slot, count=count, started=0, finished=0, parallelism=width)
                for index in range(width):
                    await self.launch_child(slot, index)
        except _StepError as exc:
            await self.module_failed(slot, exc.error, retryable=False)

    def _priority(self, module: FlowModule) -> int:
        value = module.priority or self.value.priority or self.job.priority or 0
        return max(0, min(int(value), _MAX_PRIORITY))

    async def launch_job(self, slot: Slot, *, delay_s: float = 0.0) -> None:
        """Enqueue the job of a script module (after ``delay_s``: a retry)."""
        module = self.module(slot)
        value = module.value
        assert isinstance(value, RawScript | PathScript)
        args = await self.arguments(slot, value.input_transforms)
        timeout = await self.number(slot, "timeout", module.timeout)
        common: dict[str, Any] = {
            "id": uuid.uuid4(),
            "workspace": self.job.workspace,
            "created_by": self.job.created_by,
            "trigger_kind": "flow",
            "trigger_source": self.where(),
            "parent_job": self.job.id,
            "root_job": self.job.root,
            "flow_step": module.id,
            "priority": self._priority(module),
            "scheduled_for": _now() + timedelta(seconds=delay_s) if delay_s > 0 else None,
        }
        if isinstance(value, RawScript):
            if value.language not in scripts.SUPPORTED_LANGUAGES:
                raise _StepError(
                    _error(
                        "UnsupportedLanguage",
                        f"step {module.id!r}: language {value.language!r} is not supported "
                        f"(supported: {', '.join(sorted(scripts.SUPPORTED_LANGUAGES))})",
                        step_id=module.id,
                    )
                )
            limits: dict[str, Any] = {}
            meta: dict[str, Any] = self._pin_meta()
            if value.concurrent_limit and value.concurrent_limit >= 1:
                template = value.custom_concurrency_key
                limits["concurrency_key"] = (
                    concurrency_key(template, self.job.workspace, args)
                    if template
                    else f"{self.job.workspace}/{self.where()}/{module.id}"
                )
                limits["concurrency_limit"] = int(value.concurrent_limit)
                window = concurrency_window(value.concurrency_time_window_s)
                if window is not None:
                    meta[CONCURRENCY_WINDOW] = window
            ttl = result_cache.ttl_of(module.cache_ttl)
            if ttl is not None:
                key = result_cache.rawscript_key(
                    self.job.workspace, value.language, value.content, value.lock, args
                )
                if await self._served_from_cache(slot, key):
                    return
                meta.update(result_cache.cache_meta(key, ttl))
            job = NewJob(
                kind="flowscript",
                tag=self.dedicated or value.tag or value.language,
                runnable_path=value.path or f"{self.job.path or 'preview'}/{module.id}",
                language=value.language,
                code=value.content,
                lock=value.lock,
                args=args,
                timeout_s=timeout,
                meta=meta,
                **limits,
                **common,
            )
        else:
            try:
                if value.hash:
                    script = await scripts.runnable_by_hash(
                        self.conn, self.job.workspace, value.hash
                    )
                else:
                    script = await scripts.runnable_by_path(
                        self.conn, self.job.workspace, value.path
                    )
                args = validate_args(script.schema, args)
            except GristmillError as exc:
                raise _StepError(
                    _error(
                        type(exc).__name__,
                        f"step {module.id!r}: {exc.message}",
                        location=exc.location,
                        step_id=module.id,
                    )
                ) from None
            limits = scripts.job_limits(script, args)
            if self.same_worker is not None:
                limits["meta"] = {**limits.get("meta", {}), **self._pin_meta()}
            ttl = result_cache.ttl_of(module.cache_ttl)
            if ttl is not None:  # the step's own TTL wins over the script's
                key = result_cache.script_key(self.job.workspace, script.hash, args)
                limits["meta"] = {
                    **limits.get("meta", {}),
                    **result_cache.cache_meta(key, ttl),
                }
            cache = result_cache.cache_of(limits.get("meta"))
            if cache is not None and await self._served_from_cache(slot, cache[0]):
                return
            job = NewJob(
                kind="script",
                tag=self.dedicated or value.tag_override or script.job_tag,
                runnable_path=script.path,
                runnable_hash=script.hash,
                language=script.language,
                code=script.content,
                lock=script.lock,
                args=args,
                timeout_s=timeout or script.timeout_s,
                **limits,
                **common,
            )
        await self._enqueue(slot, [job], parked=False)
        await self._pin(job)
        self.set_ms(slot, job=job.id)

    def _pin_meta(self) -> dict[str, Any]:
        owner = self.same_worker
        return {} if owner is None else {same_worker.META_KEY: str(owner)}

    async def _pin(self, job: NewJob) -> None:
        """A step of a same_worker flow already pinned goes to that worker only."""
        owner = self.same_worker
        if owner is None:
            return
        worker = await same_worker.pinned_worker(self.conn, owner)
        if worker is not None:
            await self.queue.retag(self.conn, [job.id], worker_tag(worker))

    async def _served_from_cache(self, slot: Slot, key: str) -> bool:
        """A result cached under ``key`` becomes the module's result, with no job."""
        hit = await result_cache.lookup(self.conn, key)
        if hit is None:
            return False
        self.set_ms(slot, cached_from=hit.job_id)
        await self.module_done(slot, hit.result)
        return True

    async def _enqueue(self, slot: Slot, jobs: list[NewJob], *, parked: bool) -> None:
        try:
            if parked:
                await self.queue.enqueue_parked(self.conn, jobs)
            else:
                await self.queue.enqueue(jobs, conn=self.conn)
        except GristmillError as exc:
            module_id = self.module(slot).id
            raise _StepError(
                _error(
                    type(exc).__name__,
                    f"step {module_id!r}: {exc.message}",
                    location=exc.location,
                    step_id=module_id,
                )
            ) from None

    async def _start_child_flow(self, slot: Slot, job: NewJob) -> None:
        """Insert a child flow job parked, start it, take its end if it ended already."""
        if self.job.depth + 1 > _MAX_DEPTH:
            raise _StepError(
                _error(
                    "TooDeep",
                    f"step {self.module(slot).id!r}: flows nested deeper than {_MAX_DEPTH}",
                    step_id=self.module(slot).id,
                )
            )
        await self._enqueue(slot, [job], parked=True)
        child_job = FlowJob(
            id=job.id,
            workspace=job.workspace,
            kind=job.kind,
            path=job.runnable_path,
            value=job.flow_value or {},
            args=job.args,
            priority=job.priority,
            created_by=job.created_by,
            trigger_kind=job.trigger_kind,
            trigger_source=job.trigger_source,
            parent_job=job.parent_job,
            root_job=job.root_job,
            flow_step=job.flow_step,
            meta=job.meta,
        )
        child = await self.tx.start_scope(child_job, nested=True)
        if child.finished_event is not None:
            self.inbox.append(child.finished_event)
            self.tx.remember(child.finished_event)

    def _child(self, module: FlowModule, *, dedicated: str | None, **fields: Any) -> NewJob:
        """A child flow job: a sub-flow, a loop iteration or a branch (``dedicated``:
        the tag of its step jobs, see ``DEDICATED_META_KEY``)."""
        meta = {"depth": self.job.depth + 1, **self._pin_meta(), **fields.pop("meta", {})}
        if dedicated is not None:
            meta[DEDICATED_META_KEY] = dedicated
        return NewJob(
            id=uuid.uuid4(),
            workspace=self.job.workspace,
            kind="flow",
            tag=FLOW_TAG,
            created_by=self.job.created_by,
            trigger_kind="flow",
            trigger_source=self.where(),
            parent_job=self.job.id,
            root_job=self.job.root,
            flow_step=module.id,
            priority=self._priority(module),
            meta=meta,
            **fields,
        )

    async def launch_subflow(self, slot: Slot) -> None:
        module = self.module(slot)
        value = module.value
        assert isinstance(value, PathFlow)
        args = await self.arguments(slot, value.input_transforms)
        try:
            saved = await store.get_flow(self.conn, self.job.workspace, value.path)
            args = validate_args(saved.schema, args)
        except GristmillError as exc:
            raise _StepError(
                _error(
                    type(exc).__name__,
                    f"step {module.id!r}: {exc.message}",
                    location=exc.location,
                    step_id=module.id,
                )
            ) from None
        meta: dict[str, Any] = {}
        ttl = result_cache.ttl_of(module.cache_ttl) or result_cache.ttl_of(
            saved.value.get("cache_ttl")
        )
        if ttl is not None:
            key = result_cache.flow_key(self.job.workspace, saved.value, args)
            if await self._served_from_cache(slot, key):
                return
            meta = result_cache.cache_meta(key, ttl)
        job = self._child(
            module,
            dedicated=saved.dedicated_tag,  # the sub-flow's own setting
            runnable_path=saved.path,
            flow_value=saved.value,
            args=args,
            meta=meta,
        )
        self.set_ms(slot, job=job.id)
        await self._start_child_flow(slot, job)

    async def launch_forloop(self, slot: Slot, value: ForloopFlow) -> None:
        items = await self.transform(slot, "iterator", value.iterator)
        module = self.module(slot)
        if not isinstance(items, list):
            raise _StepError(
                _error(
                    "InvalidIterator",
                    f"step {module.id!r}: the iterator must be an array, got "
                    f"{type(items).__name__}",
                    step_id=module.id,
                )
            )
        if not items:
            await self.module_done(slot, [])
            return
        width = 1
        if value.parallel:
            parallelism = await self.number(slot, "parallelism", value.parallelism)
            width = len(items) if parallelism is None else max(1, int(parallelism))
        width = min(width, len(items))
        await self.conn.execute(_Q["iterator_insert"], self.job.id, module.id, items)
        self.set_ms(slot, count=len(items), started=0, finished=0, parallelism=width)
        for index in range(width):
            await self.launch_child(slot, index, item=items[index])

    async def launch_whileloop(self, slot: Slot, value: WhileloopFlow) -> None:
        """Start a while loop: one iteration, or ``parallelism`` side by side (``parallel``).

        A parallel while loop keeps ``parallelism`` iterations running; once one of them
        stops the loop (``stop_after_if``) no more start, the ones running finish, and
        the loop's result is every iteration's result in order. Without a
        ``parallelism`` the iterations run one at a time (a while loop has no length to
        run all of them at once).
        """
        width = 1
        if value.parallel:
            parallelism = await self.number(slot, "parallelism", value.parallelism)
            width = 1 if parallelism is None else max(1, int(parallelism))
        self.set_ms(slot, count=None, started=0, finished=0, parallelism=width)
        for index in range(width):
            await self.launch_child(slot, index)
            if self.ms(slot).type is not ModuleStatus.IN_PROGRESS or self.ended:
                return  # an iteration ended the loop (or the flow) at once

    async def launch_child(self, slot: Slot, index: int, *, item: Any = msgspec.UNSET) -> None:
        """Start iteration (or branch) ``index`` of a loop or branch-all module."""
        module = self.module(slot)
        value = module.value
        raw = self.raw_module(slot)["value"]
        if isinstance(value, ForloopFlow):
            if item is msgspec.UNSET:
                item = await self.conn.fetchval(_Q["iterator_item"], self.job.id, module.id, index)
            args: dict[str, Any] = {"iter": {"index": index, "value": item}}
            body = raw.get("modules", [])
        elif isinstance(value, WhileloopFlow):
            args = {"iter": {"index": index, "value": index}}
            body = raw.get("modules", [])
        else:
            assert isinstance(value, BranchAll)
            args = {"previous_result": await self.previous_result(slot)}
            body = raw["branches"][index].get("modules", [])
        job = self._child(
            module,
            dedicated=self.dedicated,
            args=args,
            flow_value={"modules": body},
            runnable_path=self.job.path,
            meta={"scope": "inherit", "index": index, "container": raw.get("type")},
        )
        self.set_ms(slot, started=self.ms(slot).started + 1)
        await self._start_child_flow(slot, job)

    async def launch_branchone(self, slot: Slot, value: BranchOne) -> None:
        chosen = -1
        for index, branch in enumerate(value.branches):
            if await self.evaluate(slot, f"branches[{index}].expr", branch.expr):
                chosen = index
                break
        self.set_ms(slot, branch_chosen=chosen)
        raw = self.raw_module(slot)["value"]
        body = raw.get("default", []) if chosen < 0 else raw["branches"][chosen].get("modules", [])
        previous = await self.previous_result(slot)
        if not body:
            await self.module_done(slot, previous)
            return
        module = self.module(slot)
        job = self._child(
            module,
            dedicated=self.dedicated,
            args={"previous_result": previous},
            flow_value={"modules": body},
            runnable_path=self.job.path,
            meta={"scope": "inherit", "index": chosen, "container": "branchone"},
        )
        self.set_ms(slot, job=job.id)
        await self._start_child_flow(slot, job)

    # -- a module ended ------------------------------------------------------------------

    async def child_done(self, finished: FinishedJob) -> None:
        self.tx.remember(finished)
        slot = self.slot_of(finished)
        if slot is None:
            return  # a job this flow no longer waits for (superseded, canceled)
        module = self.module(slot)
        if finished.status is JobStatus.CANCELED:
            error = finished.error or _error("Canceled", "a step was canceled")
            self.set_ms(slot, type=ModuleStatus.FAILURE, error=error, finished_at=_now())
            await self.finish(JobStatus.CANCELED, error={**error, "step_id": module.id})
            return
        try:
            if isinstance(module.value, ForloopFlow | WhileloopFlow | BranchAll):
                await self.iteration_done(slot, finished)
                return
            if finished.status is JobStatus.SUCCESS:
                if isinstance(module.value, BranchOne) and await self._stopped(finished.id):
                    self.set_ms(slot, type=ModuleStatus.SUCCESS, finished_at=_now())
                    self.set_state(stopped=True)
                    await self.finish(JobStatus.SUCCESS, result=finished.result)
                    return
                await self.module_done(slot, finished.result, inline=False)
            else:
                error = finished.error or _error("Error", "the step failed")
                await self.module_failed(slot, error, failed_job=finished.id)
        except _StepError as exc:
            await self.module_failed(slot, exc.error, retryable=False)

    async def _stopped(self, child_id: uuid.UUID) -> bool:
        child = await self.tx.scope(child_id, lock=False)
        return child is not None and child.state.stopped

    async def iteration_done(self, slot: Slot, finished: FinishedJob) -> None:
        module = self.module(slot)
        value = module.value
        ms = self.set_ms(slot, finished=self.ms(slot).finished + 1)
        stopping = ms.stopping or await self._stopped(finished.id)
        if finished.status is not JobStatus.SUCCESS:
            if isinstance(value, BranchAll):
                index = await self.conn.fetchval(
                    "SELECT (meta->>'index')::int FROM jobs WHERE id = $1", finished.id
                )
                tolerated = value.branches[index].skip_failure if index is not None else False
            else:
                assert isinstance(value, ForloopFlow | WhileloopFlow)
                tolerated = value.skip_failures
            if not tolerated:
                error = finished.error or _error("Error", "an iteration failed")
                await self.module_failed(slot, error, retryable=False)
                return
        elif (
            isinstance(value, ForloopFlow | WhileloopFlow)
            and module.stop_after_if is not None
            and not stopping
            and await self.evaluate(
                slot, "stop_after_if", module.stop_after_if.expr, {"result": finished.result}
            )
        ):
            stopping = True
        ms = self.set_ms(slot, stopping=stopping)
        if isinstance(value, WhileloopFlow):
            if not stopping:
                await self.launch_child(slot, ms.started)
                return
        elif not stopping and ms.count is not None and ms.started < ms.count:
            await self.launch_child(slot, ms.started)
        ms = self.ms(slot)
        if ms.finished < ms.started:
            return
        if not stopping and ms.count is not None and ms.started < ms.count:
            return
        await self.module_done(slot, await self._collect(slot))

    async def _collect(self, slot: Slot) -> list[Any]:
        module = self.module(slot)
        rows = await self.conn.fetch(_Q["children_outcomes"], self.job.id, module.id)
        collected: list[Any] = []
        for row in rows:
            if row["status"] == "success":
                collected.append(row["result"])
            elif isinstance(module.value, BranchAll):
                collected.append({"error": row["error"]})
            else:
                collected.append(None)
        return collected

    async def module_done(
        self, slot: Slot, result: Any, *, inline: bool = True, skipped: bool = False
    ) -> None:
        """A module succeeded: check its conditions, then move on."""
        module = self.module(slot)
        changes: dict[str, Any] = {"type": ModuleStatus.SUCCESS, "finished_at": _now()}
        if inline:
            changes["result"] = result
        self.set_ms(slot, **changes)
        if slot == _FAILURE:
            await self.finish(JobStatus.FAILURE, error=self.state.error)
            return
        if slot == _PREPROCESSOR:
            if not isinstance(result, dict):
                await self.flow_failed(
                    _error(
                        "InvalidPreprocessorResult",
                        "the preprocessor must return an object (the flow's arguments), got "
                        f"{type(result).__name__}",
                        step_id=module.id,
                    )
                )
                return
            self.set_state(flow_input=result, phase=FlowPhase.RUNNING)
            return
        if (
            not self.job.inherits
            and self.job.parent_job is None
            and self.value.early_return == module.id
        ):
            self.set_state(early_result=result)
        if not skipped:
            conditions: list[StopAfterIf] = []
            if not isinstance(module.value, ForloopFlow | WhileloopFlow):
                conditions += [module.stop_after_if] if module.stop_after_if else []
            if module.stop_after_all_iters_if is not None:
                conditions.append(module.stop_after_all_iters_if)
            for condition in conditions:
                if await self.evaluate(slot, "stop_after_if", condition.expr, {"result": result}):
                    await self._stop(slot, condition, result)
                    return
            if module.suspend is not None:
                await self.suspend(slot, result)
                return
        await self.next_after(slot)

    async def _stop(self, slot: Slot, condition: StopAfterIf, result: Any) -> None:
        module = self.module(slot)
        if condition.error_message is not None:
            await self.flow_failed(
                _error(
                    "StopAfterIf",
                    condition.error_message
                    or f"the flow was stopped by step {module.id!r}: `{condition.expr}`",
                    step_id=module.id,
                )
            )
            return
        self.set_state(stopped=True, skipped=condition.skip_if_stopped)
        await self.finish(JobStatus.SUCCESS, result=None if condition.skip_if_stopped else result)

    async def next_after(self, slot: Slot) -> None:
        """Go to the module after ``slot``, after its ``sleep`` if it has one."""
        assert isinstance(slot, int)
        module = self.module(slot)
        seconds = await self.number(slot, "sleep", module.sleep)
        self.set_state(step=slot + 1)
        if seconds is not None and seconds > 0:
            self.set_state(phase=FlowPhase.SLEEPING)
            await self.queue.unpark_at(self.conn, self.job.id, seconds)

    # -- approvals -----------------------------------------------------------------------

    def _resume_key(self, slot: Slot) -> uuid.UUID:
        return self.ms(slot).job or self.job.id

    async def suspend(self, slot: Slot, result: Any) -> None:
        """After a module with ``suspend``: wait for approvals (some may be in already)."""
        module = self.module(slot)
        assert module.suspend is not None
        if await self._apply_events(slot, result):
            return
        timeout = module.suspend.timeout
        until = _now() + timedelta(seconds=timeout) if timeout else None
        self.set_ms(slot, type=ModuleStatus.WAITING_FOR_EVENTS, result=result, suspend_until=until)
        self.set_state(phase=FlowPhase.SUSPENDED)
        if timeout:
            await self.queue.unpark_at(self.conn, self.job.id, float(timeout))

    async def _apply_events(self, slot: Slot, result: Any) -> bool:
        """Resume or fail the suspended module if its events decide; False: wait on."""
        module = self.module(slot)
        assert module.suspend is not None
        rows = await self.conn.fetch(_Q["resume_events"], self._resume_key(slot))
        denied = [row for row in rows if not row["approved"]]
        if denied:
            who = denied[0]["approver"] or "anonymous"
            self.set_state(phase=FlowPhase.RUNNING)
            await self.module_failed(
                slot,
                _error(
                    "ApprovalDenied",
                    f"step {module.id!r} was denied by {who}",
                    payload=denied[0]["payload"],
                ),
                retryable=False,
            )
            return True
        approved = [row for row in rows if row["approved"]]
        if len(approved) < (module.suspend.required_events or 1):
            return False
        payload = approved[-1]["payload"]
        self.set_state(phase=FlowPhase.RUNNING)
        self.set_ms(
            slot,
            type=ModuleStatus.SUCCESS,
            result=result if payload is None else payload,
            approvers=tuple(row["approver"] or "anonymous" for row in approved),
            suspend_until=None,
        )
        await self.next_after(slot)
        return True

    async def on_timer(self) -> None:
        """The flow's timer fired (a worker claimed it): wake from a sleep or time out."""
        phase = self.state.phase
        if phase is FlowPhase.SLEEPING:
            self.set_state(phase=FlowPhase.RUNNING)
            return
        if phase is not FlowPhase.SUSPENDED:
            return
        slot = self.state.step
        ms = self.ms(slot)
        module = self.module(slot)
        assert module.suspend is not None
        if await self._apply_events(slot, ms.result):
            return
        if ms.suspend_until is not None and ms.suspend_until > _now():
            remaining = (ms.suspend_until - _now()).total_seconds()
            await self.queue.unpark_at(self.conn, self.job.id, remaining)
            return
        self.set_state(phase=FlowPhase.RUNNING)
        if module.suspend.continue_on_disapprove_timeout:
            self.set_ms(slot, type=ModuleStatus.SUCCESS, suspend_until=None, approvers=())
            await self.next_after(slot)
            return
        await self.module_failed(
            slot,
            _error(
                "Timeout",
                f"step {module.id!r} was not approved within {module.suspend.timeout:g}s",
            ),
            retryable=False,
        )

    # -- failures ------------------------------------------------------------------------

    async def module_failed(
        self,
        slot: Slot,
        error: dict[str, Any],
        *,
        retryable: bool = True,
        failed_job: uuid.UUID | None = None,
    ) -> None:
        module = self.module(slot)
        error = {**error, "step_id": error.get("step_id", module.id)}
        if slot == _FAILURE:
            self.set_ms(slot, type=ModuleStatus.FAILURE, error=error, finished_at=_now())
            await self.finish(JobStatus.FAILURE, error=self.state.error)
            return
        if (
            retryable
            and module.retry is not None
            and isinstance(module.value, RawScript | PathScript)
        ):
            delay = await self._retry_delay(slot, module.retry, error)
            if delay is not None:
                ms = self.ms(slot)
                retried = (*ms.failed_retries, failed_job) if failed_job else ms.failed_retries
                self.set_ms(slot, retries=ms.retries + 1, failed_retries=retried)
                try:
                    await self.launch_job(slot, delay_s=delay)
                    return
                except _StepError as exc:
                    error = {**exc.error, "step_id": module.id}
        if module.continue_on_error and isinstance(slot, int):
            self.set_ms(slot, error=error)
            await self.module_done(slot, {"error": error})
            return
        self.set_ms(slot, type=ModuleStatus.FAILURE, error=error, finished_at=_now())
        await self.flow_failed(error)

    async def _retry_delay(self, slot: Slot, retry: Retry, error: dict[str, Any]) -> float | None:
        done = self.ms(slot).retries
        delay: float | None = None
        constant = retry.constant.attempts if retry.constant is not None else 0
        if retry.constant is not None and done < constant:
            delay = float(retry.constant.seconds)
        elif retry.exponential is not None and done - constant < retry.exponential.attempts:
            policy = retry.exponential
            delay = float(policy.multiplier * policy.seconds ** (done - constant + 1))
            if policy.random_factor:
                spread = delay * min(policy.random_factor, 100) / 100
                delay += random.uniform(-spread, spread)  # noqa: S311  # jitter, not crypto
        if delay is None:
            return None
        if retry.retry_if is not None:
            try:
                wanted = await self.evaluate(
                    slot, "retry_if", retry.retry_if.expr, {"result": error}
                )
            except _StepError:
                return None
            if not wanted:
                return None
        return max(delay, 0.0)

    async def flow_failed(self, error: dict[str, Any]) -> None:
        """The flow fails: run its failure module first, if it has one."""
        if (
            self.value.failure_module is not None
            and not self.job.inherits
            and self.state.phase is not FlowPhase.FAILURE_HANDLER
        ):
            await self.queue.cancel_descendants(
                self.conn, self.job.id, by="flow", reason="a step failed"
            )
            self.set_state(error=error, phase=FlowPhase.FAILURE_HANDLER)
            await self.launch(_FAILURE)
            return
        await self.finish(JobStatus.FAILURE, error=error)


# -- entry points ------------------------------------------------------------------------------


async def _broken(tx: _Tx, flow_id: uuid.UUID, exc: BaseException) -> None:
    """A bug while advancing ``flow_id``: fail it rather than leave it stuck."""
    _log.exception("flow engine error; the flow is failed", flow_id=str(flow_id))
    error = _error("FlowEngineError", f"{type(exc).__name__}: {exc}")
    finished = await tx.queue.finish_parked(
        tx.conn, flow_id, JobStatus.FAILURE, error=error, reason=ExitReason.ERROR
    )
    await tx.queue.cancel_descendants(tx.conn, flow_id, by="flow", reason="engine error")
    if finished is not None:
        await on_child_finished(tx.queue, tx.conn, finished, evaluator=tx.evaluator)


async def on_child_finished(
    queue: Queue, conn: Conn, finished: FinishedJob, *, evaluator: Evaluator | None = None
) -> None:
    """The queue's child-finished hook: advance the parent flow (same transaction)."""
    tx = _Tx(queue, conn, evaluator or default_evaluator())
    try:
        async with conn.transaction():  # a savepoint: a bug undoes only the flow's part
            await tx.child_finished(finished)
    except _TRANSIENT:
        raise  # the whole completion is retried by its caller
    except Exception as exc:  # any bug: the flow fails, the step stays done
        await _broken(_Tx(queue, conn, tx.evaluator), finished.parent_job, exc)


async def run_claimed_flow(
    queue: Queue, job: ClaimedJob, *, evaluator: Evaluator | None = None
) -> bool:
    """Start a flow a worker claimed, or wake it (a timer fired). False: lease lost."""
    async with queue.pool.acquire() as conn, conn.transaction():
        if not await queue.park_claimed(conn, job):
            return False
        tx = _Tx(queue, conn, evaluator or default_evaluator())
        try:
            async with conn.transaction():
                scope = await tx.scope(job.id, lock=True)
                if scope is None:
                    row = await conn.fetchrow(_Q["flow_job"], job.id)
                    assert row is not None  # the job exists: we hold its claim
                    await tx.start_scope(_flow_job(row), nested=False)
                else:
                    await scope.on_timer()
                    await scope.advance()
                    await scope.save()
        except _TRANSIENT:
            raise
        except Exception as exc:  # any bug: the flow fails instead of hanging
            await _broken(_Tx(queue, conn, tx.evaluator), job.id, exc)
        return True


def resume_signature(secret: bytes, job_id: uuid.UUID, resume_id: int, approver: str | None) -> str:
    """The signature of a resume URL: HMAC-SHA256 over the step job, nonce and approver."""
    message = f"{job_id}:{resume_id}:{approver or ''}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


async def resume_step(
    queue: Queue,
    conn: Conn,
    *,
    workspace: str,
    job_id: uuid.UUID,
    resume_id: int,
    approved: bool,
    payload: Any,
    approver: str | None,
    user: str | None = None,
    evaluator: Evaluator | None = None,
) -> None:
    """Record an approval (or denial) of step job ``job_id``; move the flow on if it
    waits for it. ``user``: the authenticated user (``None`` for a signed URL).

    Raises ``NotFound`` (no such step), ``Conflict`` (URL used) or ``Forbidden`` (the
    step wants an authenticated approver, or not the flow's own author).
    """
    row = await conn.fetchrow(_Q["step_job"], job_id, workspace)
    if row is None or row["parent_job"] is None:
        raise NotFound(f"job {job_id} is not a step of a flow in {workspace!r}", location="id")
    tx = _Tx(queue, conn, evaluator or default_evaluator())
    scope = await tx.scope(row["parent_job"], lock=True)
    if scope is None:
        raise NotFound(f"job {job_id} is not a step of a flow", location="id")
    for slot in scope.slots():
        suspend = scope.module(slot).suspend
        if scope.module(slot).id != row["flow_step"] or suspend is None:
            continue
        if suspend.user_auth_required and user is None:
            raise Forbidden(
                f"step {row['flow_step']!r} must be approved by an authenticated user",
                location="approver",
            )
        who = user or approver
        if suspend.self_approval_disabled and who is not None and who == scope.job.created_by:
            raise Forbidden(
                f"step {row['flow_step']!r} cannot be approved by the flow's own author",
                location="approver",
            )
    inserted = await conn.fetchval(
        _Q["resume_insert"], job_id, resume_id, scope.job.id, approved, approver, payload
    )
    if inserted is None:
        raise Conflict(f"resume id {resume_id} of job {job_id} was used already", location="id")
    if scope.state.phase is not FlowPhase.SUSPENDED:
        return  # kept: counted when the step ends
    slot = scope.state.step
    if scope._resume_key(slot) != job_id:
        return
    if not await queue.repark(conn, scope.job.id):
        return
    with contextlib.suppress(_StepError):
        if await scope._apply_events(slot, scope.ms(slot).result):
            await scope.advance()
            await scope.save()
            return
    await scope.save()
    # Still waiting (more approvals needed): keep the timer running.
    until = scope.ms(slot).suspend_until
    if until is not None:
        await queue.unpark_at(conn, scope.job.id, max((until - _now()).total_seconds(), 0.0))
