"""What a dedicated worker serves: scripts and flows, and the steps of a flow to warm.

``--dedicated`` names scripts (``<workspace>:<script path>``) and flows
(``<workspace>:flow/<flow path>``, Windmill's spelling); each is the tag of the jobs the
worker claims. For a flow, :func:`flow_steps` reads the saved flow's current version
and turns each of its script steps (inline ``rawscript`` steps and ``script`` steps by
path or hash, in loops and branches too, and the failure and preprocessor modules)
into the job its runs would claim, as far as a warm interpreter is concerned: language,
code, lockfile, path and the script's own sandbox setting. The pool prepares and starts
their interpreters before any run comes (``pool.WarmPool``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

import asyncpg
import msgspec
import structlog

from gristmill.common.contracts.sandbox import SandboxRequest, decode_sandbox_request
from gristmill.common.errors import GristmillError, InvalidRequest, NotFound
from gristmill.common.flows import store
from gristmill.common.flows.model import (
    FlowModule,
    PathScript,
    RawScript,
    iter_modules,
    parse_value,
)
from gristmill.common.queue import ClaimedJob
from gristmill.common.scripts import (
    dedicated_flow_tag,
    dedicated_tag,
    runnable_by_hash,
    runnable_by_path,
)

__all__ = ["FLOW_PREFIX", "FlowSteps", "Target", "WarmStep", "check_target", "flow_steps"]

_log = structlog.get_logger(__name__)
#: How a dedicated target names a flow: ``<workspace>:flow/<flow path>``.
FLOW_PREFIX: Final = "flow/"
_SETTING: Final = "GRISTMILL_DEDICATED"


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A script or a flow a worker is dedicated to."""

    workspace: str
    #: The script's path, or the flow's (without ``flow/``).
    path: str
    flow: bool = False

    @classmethod
    def of(cls, tag: str) -> Target:
        """The target whose jobs carry ``tag`` (``dedicated_tag`` / ``dedicated_flow_tag``)."""
        workspace, _, path = tag.partition(":")
        if path.startswith(FLOW_PREFIX):
            return cls(workspace=workspace, path=path[len(FLOW_PREFIX) :], flow=True)
        return cls(workspace=workspace, path=path)

    @property
    def tag(self) -> str:
        if self.flow:
            return dedicated_flow_tag(self.workspace, self.path)
        return dedicated_tag(self.workspace, self.path)

    @property
    def group(self) -> str:
        """What the interpreters of its jobs are grouped under (``Spec.path``): the
        script's path, or ``flow/<path>`` for every step of a flow."""
        return FLOW_PREFIX + self.path if self.flow else self.path

    def describe(self) -> str:
        return f"{'flow' if self.flow else 'script'} {self.path!r} in workspace {self.workspace!r}"


class WarmStep(msgspec.Struct, frozen=True, kw_only=True):
    """A script step of a dedicated flow, as its runs' jobs will be."""

    step_id: str
    #: What preparing and warming read of its jobs: workspace, language, code, lock,
    #: path (the other fields are placeholders: no such job was claimed).
    job: ClaimedJob
    #: The script's own sandbox setting, as its jobs carry it.
    sandbox: SandboxRequest | None = None


class FlowSteps(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a saved flow, seen from a worker dedicated to it."""

    version: int
    #: Saved with ``dedicated_worker``: its step jobs carry the flow's tag.
    dedicated: bool
    steps: tuple[WarmStep, ...] = ()


async def check_target(db: asyncpg.Pool, target: Target) -> bool:
    """Whether ``target`` exists and is saved with ``dedicated_worker``; logs what is
    wrong otherwise (the worker waits for it: it may be deployed after the worker)."""
    if target.flow:
        try:
            saved = await store.get_flow(db, target.workspace, target.path)
        except NotFound as exc:
            _not_found(target, exc)
            return False
        dedicated = saved.dedicated_tag is not None
    else:
        try:
            script = await runnable_by_path(db, target.workspace, target.path)
        except NotFound as exc:
            _not_found(target, exc)
            return False
        dedicated = script.extra.get("dedicated_worker") is True
    if not dedicated:
        _not_dedicated(target)
    return dedicated


async def flow_steps(db: asyncpg.Pool, target: Target) -> FlowSteps | None:
    """The script steps of the flow's current version; ``None`` when there is no flow
    at that path. A step whose script cannot be found is left out (its runs fail)."""
    assert target.flow
    try:
        saved = await store.get_flow(db, target.workspace, target.path)
    except NotFound:
        return None
    dedicated = saved.dedicated_tag is not None
    try:
        value = parse_value(saved.value)
    except InvalidRequest:
        return FlowSteps(version=saved.version, dedicated=dedicated)
    modules: list[FlowModule] = list(value.modules)
    modules += [m for m in (value.failure_module, value.preprocessor_module) if m is not None]
    steps: list[WarmStep] = []
    for module, _ in iter_modules(modules):
        step = await _warm_step(db, target, saved.path, module)
        if step is not None:
            steps.append(step)
    return FlowSteps(version=saved.version, dedicated=dedicated, steps=tuple(steps))


async def _warm_step(
    db: asyncpg.Pool, target: Target, flow_path: str, module: FlowModule
) -> WarmStep | None:
    value = module.value
    if isinstance(value, RawScript):
        # The path the engine gives an inline step's jobs (flows.engine.launch_job).
        path = value.path or f"{flow_path}/{module.id}"
        job = _job(target, path=path, language=value.language, code=value.content, lock=value.lock)
        return WarmStep(step_id=module.id, job=job)
    if not isinstance(value, PathScript):
        return None
    try:
        if value.hash:
            script = await runnable_by_hash(db, target.workspace, value.hash)
        else:
            script = await runnable_by_path(db, target.workspace, value.path)
        # As the job carries it: converted to JSON in its meta, read back by the worker.
        setting = decode_sandbox_request(script.extra.get("sandbox"))
        sandbox = decode_sandbox_request(msgspec.to_builtins(setting))
    except GristmillError:
        return None
    job = _job(
        target, path=script.path, language=script.language, code=script.content, lock=script.lock
    )
    return WarmStep(step_id=module.id, job=job, sandbox=sandbox)


def _job(target: Target, *, path: str, language: str, code: str, lock: str | None) -> ClaimedJob:
    now = datetime.now(UTC)
    return ClaimedJob(
        id=uuid.uuid4(),
        worker="",
        attempt=0,
        restarts=0,
        started_at=now,
        workspace=target.workspace,
        kind="flowscript",
        tag=target.tag,
        priority=0,
        created_by="",
        trigger_kind="flow",
        args={},
        created_at=now,
        runnable_path=path,
        language=language,
        code=code,
        lock=lock,
    )


def _not_found(target: Target, exc: NotFound) -> None:
    _log.warning(
        f"{_SETTING} names the {target.describe()}, which does not exist: this worker "
        "claims its jobs once it is saved with dedicated_worker",
        dedicated=target.tag,
        reason=exc.message,
    )


def _not_dedicated(target: Target) -> None:
    _log.warning(
        f"{_SETTING} names the {target.describe()}, which is not saved with "
        "dedicated_worker: its jobs go to ordinary workers, not to this one",
        dedicated=target.tag,
    )
