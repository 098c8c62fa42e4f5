"""One Kafka trigger's consumer: messages in, run requests out, offsets committed after.

A batch (up to ``batch_size`` records of the partitions this member owns) is handled
in three steps, each idempotent, and only then are its offsets committed:

1. every record becomes a run request (:mod:`gristmill.triggers.kafka.args`), checked
   like any run's; a record that cannot (its arguments break the runnable's schema,
   they are too large, ...) is *parked* in ``kafka_trigger_parked`` with the error;
2. the requests are published on the bus, which returns once they are durable;
3. the offset after each partition's last record is committed (partitions revoked
   meanwhile are left to their new owner).

A crash anywhere before the commit gets the batch delivered again; the second
publish makes no second job, since a request's job id derives from its idempotency
key ``kafka:<workspace>:<trigger>:<topic>:<partition>:<offset>``. A parked record's
offset is committed like the others: a poison message never blocks its partition.

Failures of the trigger itself (brokers unreachable, a missing resource, script or
flow, the bus refusing) are written on the trigger (``error``, ``error_at``) and the
consumer starts over after a back-off that doubles up to ``max_backoff_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.helpers import create_ssl_context
from structlog.typing import FilteringBoundLogger

from gristmill.common import kafka_triggers, scripts
from gristmill.common.argschema import validate_args
from gristmill.common.contracts.runs import (
    FlowPath,
    RunRequest,
    ScriptHash,
    Trigger,
    TriggerKind,
    encode_run_request,
)
from gristmill.common.contracts.topics import Topic
from gristmill.common.errors import GristmillError, NotFound
from gristmill.common.flows import store as flows
from gristmill.common.kafka_triggers import KafkaConnection, parse_connection
from gristmill.common.keystore import KeyStore
from gristmill.common.queue import QueueLimits
from gristmill.common.resources import ResourceStore
from gristmill.common.runs import idempotent_job_id, validate_request
from gristmill.common.variables import VariableStore
from gristmill.triggers.kafka.args import KafkaRecord, message_args
from gristmill.triggers.service import TriggerContext

__all__ = ["ConsumerSettings", "TriggerConsumer", "TriggerSpec", "idempotency_key"]

_log: FilteringBoundLogger = structlog.get_logger(__name__)
_json = msgspec.json.Encoder()


class ConsumerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How every trigger's consumer behaves (the same for all triggers of a process)."""

    #: Identifies this process in the triggers' ``server_id``.
    server_id: str
    session_timeout_ms: int = 10_000
    #: Records handled per batch (one publish, one commit).
    batch_size: int = 500
    #: Longest wait for records before the consumer looks at its stop event again.
    poll_timeout_ms: int = 500
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    #: How often a working consumer asks the brokers for their topics (a lost cluster
    #: or a missing topic becomes the trigger's error) and records that it is alive
    #: (``last_server_ping``).
    check_interval_s: float = 10.0
    #: A client request (e.g. connecting to a broker) fails after this long.
    request_timeout_ms: int = 30_000


class TriggerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a consumer uses: a running consumer whose spec changed is restarted."""

    workspace: str
    path: str
    resource_path: str
    #: The resource's stored value as JSON (``None`` if the resource is missing).
    resource_json: bytes | None
    group_id: str
    topics: tuple[str, ...]
    script_path: str
    is_flow: bool
    auto_offset_reset: str
    edited_by: str
    edited_at: datetime


def idempotency_key(workspace: str, path: str, topic: str, partition: int, offset: int) -> str:
    """The key (and so the job id) of the run of one record, the same on redelivery."""
    return f"kafka:{workspace}:{path}:{topic}:{partition}:{offset}"


class _TriggerFault(Exception):
    """The trigger cannot consume now (not one message's fault): reported, retried."""


#: Failures that are reported without a traceback (anything else is a bug, logged in full).
_EXPECTED = (
    _TriggerFault,
    GristmillError,
    KafkaError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Partitions revoked since last cleared: their batch is not committed by us."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        self.partitions: set[TopicPartition] = set()
        self._log = log

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.partitions.update(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._log.info(
            "kafka_trigger.assigned",
            partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
        )


class TriggerConsumer:
    """Consumes one trigger's topics until its stop event; owns its Kafka client."""

    def __init__(
        self, spec: TriggerSpec, context: TriggerContext, settings: ConsumerSettings
    ) -> None:
        self.spec = spec
        self._context = context
        self._settings = settings
        self._limits = QueueLimits(max_args_bytes=context.settings.max_args_bytes)
        keystore = KeyStore(context.keyring) if context.keyring is not None else None
        self._resources = ResourceStore(context.pool, VariableStore(context.pool, keystore))
        self._reported: tuple[str | None] | None = None
        self._topics_error: str | None = None
        self._last_check = 0.0
        self._log = _log.bind(workspace=spec.workspace, trigger=spec.path)
        #: Counters since start: records published as run requests, records parked.
        self.published = 0
        self.parked = 0

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; every failure is reported and retried after a back-off."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._session(stop)
            except Exception as exc:
                if time.monotonic() - started > self._settings.max_backoff_s:
                    failures = 0  # it worked for a while: start the back-off over
                failures += 1
                delay = min(
                    self._settings.max_backoff_s,
                    self._settings.initial_backoff_s * 2 ** (failures - 1),
                )
                message = _describe(exc)
                if isinstance(exc, _EXPECTED):
                    self._log.warning("kafka_trigger.failed", error=message, retry_in_s=delay)
                else:
                    self._log.exception("kafka_trigger.crashed", retry_in_s=delay)
                with contextlib.suppress(Exception):  # the database may be what failed
                    await self._report(message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            else:
                return

    async def _session(self, stop: asyncio.Event) -> None:
        connection = await self._connection()
        consumer = self._consumer(connection)
        revoked = _Revocations(self._log)
        consumer.subscribe(list(self.spec.topics), listener=revoked)
        try:
            try:
                await consumer.start()
            except KafkaError as exc:
                raise _TriggerFault(
                    f"cannot reach the brokers {', '.join(connection.brokers)}: {exc}"
                ) from exc
            await self._check(consumer, connection)
            self._log.info("kafka_trigger.consuming", topics=list(self.spec.topics))
            while not stop.is_set():
                revoked.partitions.clear()
                records = await consumer.getmany(
                    timeout_ms=self._settings.poll_timeout_ms,
                    max_records=self._settings.batch_size,
                )
                if records:
                    await self._handle(records)
                    await self._commit(consumer, revoked, records)
                    await self._report(self._topics_error)
                if time.monotonic() - self._last_check >= self._settings.check_interval_s:
                    await self._check(consumer, connection)
        finally:
            await consumer.stop()

    async def _check(self, consumer: AIOKafkaConsumer, connection: KafkaConnection) -> None:
        """Ask the brokers for their topics: a lost cluster is the trigger's error (the
        consumer starts over), a missing topic too (it keeps consuming the others).
        Either way the state is written, which records that this server is alive."""
        self._last_check = time.monotonic()
        try:
            topics = await asyncio.wait_for(
                consumer.topics(), timeout=self._settings.request_timeout_ms / 1000
            )
        except (KafkaError, TimeoutError) as exc:
            raise _TriggerFault(
                f"lost the brokers {', '.join(connection.brokers)}: {_describe(exc)}"
            ) from exc
        missing = sorted(set(self.spec.topics) - set(topics))
        self._topics_error = (
            f"topics not found on the brokers: {', '.join(missing)}" if missing else None
        )
        await self._report(self._topics_error, force=True)

    async def _connection(self) -> KafkaConnection:
        spec = self.spec
        try:
            value = await self._resources.get_value_interpolated(spec.workspace, spec.resource_path)
        except NotFound as exc:
            raise _TriggerFault(f"resource {spec.resource_path} not found: {exc.message}") from None
        return parse_connection(value)

    def _consumer(self, connection: KafkaConnection) -> AIOKafkaConsumer:
        settings = self._settings
        options: dict[str, Any] = {}
        if connection.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(cadata=connection.ca_pem)
        if connection.security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=connection.sasl_mechanism,
                sasl_plain_username=connection.username,
                sasl_plain_password=connection.password,
            )
        return AIOKafkaConsumer(
            bootstrap_servers=connection.brokers,
            client_id=f"gristmill-trigger-{settings.server_id}",
            group_id=self.spec.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.spec.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.session_timeout_ms // 6),
            request_timeout_ms=settings.request_timeout_ms,
            security_protocol=connection.security_protocol,
            **options,
        )

    # -- a batch -------------------------------------------------------------------------

    async def _target(self) -> tuple[ScriptHash | FlowPath, Mapping[str, Any] | None]:
        """What the records run now, and its input schema (read once per batch)."""
        spec = self.spec
        pool = self._context.pool
        try:
            if spec.is_flow:
                flow = await flows.get_flow(pool, spec.workspace, spec.script_path)
                if flow.archived:
                    raise _TriggerFault(f"flow {spec.script_path} is archived")
                return FlowPath(path=flow.path), flow.schema
            script = await scripts.runnable_by_path(pool, spec.workspace, spec.script_path)
        except NotFound as exc:
            raise _TriggerFault(exc.message) from None
        return ScriptHash(hash=script.hash), script.schema

    async def _handle(self, records: Mapping[TopicPartition, list[Any]]) -> None:
        runnable, schema = await self._target()
        now = datetime.now(UTC)
        requests: list[RunRequest] = []
        parked: list[tuple[Any, ...]] = []
        for tp_records in records.values():
            for raw in tp_records:
                record = KafkaRecord(
                    topic=raw.topic,
                    partition=raw.partition,
                    offset=raw.offset,
                    key=raw.key,
                    value=raw.value,
                    headers=tuple(raw.headers or ()),
                    timestamp=raw.timestamp,
                )
                try:
                    requests.append(self._request(record, runnable, schema, now))
                except GristmillError as exc:
                    parked.append(self._parked(record, exc))
        if parked:
            await kafka_triggers.park(self._context.pool, parked)
            self.parked += len(parked)
            self._log.warning(
                "kafka_trigger.parked", count=len(parked), first_error=parked[0][-1]["message"]
            )
        if requests:
            await self._context.bus.publish_many(
                Topic.RUN_REQUESTS,
                [(request.job_id.bytes, encode_run_request(request)) for request in requests],
            )
            self.published += len(requests)

    def _request(
        self,
        record: KafkaRecord,
        runnable: ScriptHash | FlowPath,
        schema: Mapping[str, Any] | None,
        now: datetime,
    ) -> RunRequest:
        spec = self.spec
        key = idempotency_key(
            spec.workspace, spec.path, record.topic, record.partition, record.offset
        )
        args = validate_args(schema, message_args(record, schema))
        request = RunRequest(
            job_id=idempotent_job_id(spec.workspace, key),
            workspace=spec.workspace,
            runnable=runnable,
            requested_by=spec.edited_by,
            trigger=Trigger(
                kind=TriggerKind.KAFKA,
                source=f"{record.topic}/{record.partition}/{record.offset}",
            ),
            args=args,
            idempotency_key=key,
            requested_at=now,
            meta={
                "kafka": {
                    "trigger": spec.path,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                }
            },
        )
        validate_request(request, self._limits)
        return request

    def _parked(self, record: KafkaRecord, exc: GristmillError) -> tuple[Any, ...]:
        spec = self.spec
        error: dict[str, Any] = {"message": exc.message, "code": exc.code}
        if exc.location is not None:
            error["location"] = exc.location
        headers = [
            [name, None if data is None else data.decode("utf-8", "replace")]
            for name, data in record.headers
        ]
        return (
            spec.workspace,
            spec.path,
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            headers,
            error,
        )

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        revoked: _Revocations,
        records: Mapping[TopicPartition, list[Any]],
    ) -> None:
        assignment = consumer.assignment()
        offsets = {
            tp: tp_records[-1].offset + 1
            for tp, tp_records in records.items()
            if tp in assignment and tp not in revoked.partitions
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError):
            # The group rebalanced meanwhile: the partitions' new owner starts from the
            # last commit and publishes these records again (the same job ids).
            self._log.info("kafka_trigger.commit_lost_to_rebalance")

    # -- the trigger's state ---------------------------------------------------------------

    async def _report(self, error: str | None, *, force: bool = False) -> None:
        """Write the consumer's state on the trigger (with ``last_server_ping``), when it
        changed or when ``force``d."""
        if self._reported == (error,) and not force:
            return
        spec = self.spec
        await kafka_triggers.set_error(
            self._context.pool, spec.workspace, spec.path, error, server_id=self._settings.server_id
        )
        self._reported = (error,)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GristmillError):
        return f"{exc.message} (at {exc.location})" if exc.location else exc.message
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, _TriggerFault) else f"{type(exc).__name__}: {text}"
