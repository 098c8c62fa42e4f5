"""The distributed transport of the bus: Kafka protocol through aiokafka.

Publishing waits for the acknowledgement of all in-sync replicas (``acks="all"``).
Consuming uses consumer groups with manual commits: a batch's offsets are committed
only after its handler returned, that is after the batch is durable downstream. A
handler that raises gets the same messages again after a capped exponential
back-off; nothing is skipped. Delivery is at-least-once, so handlers must be
idempotent.

``KafkaBus`` owns every client it creates: the producer lives as long as the
``async with`` block, each consumer as long as its :meth:`KafkaBus.consume` call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)
from structlog.typing import FilteringBoundLogger

from gristmill.common.bus.base import Bus, Handler, Message

__all__ = ["KafkaBus", "ensure_topics"]

_log: FilteringBoundLogger = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class KafkaBus:
    """A :class:`~gristmill.common.bus.base.Bus` on a Kafka-protocol cluster.

    Use it as ``async with KafkaBus(bootstrap, client_id="dispatcher") as bus``.
    The timeouts are those of the Kafka clients; group membership changes take
    about ``session_timeout_ms`` to be noticed, so tests use low values.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        rebalance_timeout_ms: int | None = None,
        max_poll_interval_ms: int = 300_000,
        request_timeout_ms: int = 40_000,
        poll_timeout_ms: int = 500,
        retry_backoff_initial_s: float = 0.2,
        retry_backoff_max_s: float = 30.0,
    ) -> None:
        """Configure the clients; nothing connects before ``__aenter__``.

        ``poll_timeout_ms`` bounds how long a consumer waits for records before it
        looks at its ``stop`` event again. A failed batch is retried after
        ``retry_backoff_initial_s``, doubling up to ``retry_backoff_max_s``; keep
        the cap well below ``max_poll_interval_ms``, and every handler call too,
        or the consumer is put out of its group.
        """
        if retry_backoff_initial_s <= 0 or retry_backoff_max_s < retry_backoff_initial_s:
            raise ValueError(
                "retry back-off needs 0 < retry_backoff_initial_s <= retry_backoff_max_s, "
                f"got {retry_backoff_initial_s} and {retry_backoff_max_s}"
            )
        self._bootstrap = (
            bootstrap_servers if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
        )
        self._client_id = client_id
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._rebalance_timeout_ms = rebalance_timeout_ms
        self._max_poll_interval_ms = max_poll_interval_ms
        self._request_timeout_ms = request_timeout_ms
        self._poll_timeout_ms = poll_timeout_ms
        self._retry_initial_s = retry_backoff_initial_s
        self._retry_max_s = retry_backoff_max_s
        self._producer: AIOKafkaProducer | None = None
        self._consumers: set[AIOKafkaConsumer] = set()

    async def __aenter__(self) -> Self:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush and close the producer; stop any consumer still running.

        A :meth:`consume` whose consumer is stopped here returns without
        committing its in-flight batch, which is then delivered again.
        """
        producer, self._producer = self._producer, None
        consumers = list(self._consumers)
        self._consumers.clear()
        for consumer in consumers:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaBus is not open: use `async with KafkaBus(...) as bus`")
        return self._producer

    async def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Send one message and return once all in-sync replicas have it.

        ``headers`` goes beyond the ``Bus`` protocol: Kafka record headers, for
        callers that know they talk to Kafka.
        """
        await self._started_producer().send_and_wait(
            topic, value, key=key, headers=list(headers) or None
        )

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Send every ``(key, value)`` pair, then wait for all acknowledgements.

        If any send fails, the first error is raised after every send has settled;
        some of the other messages may have been written (callers retry, and
        consumers de-duplicate).
        """
        producer = self._started_producer()
        acks: list[asyncio.Future[Any]] = []
        try:
            for key, value in items:
                acks.append(await producer.send(topic, value, key=key))
        finally:
            results = await asyncio.gather(*acks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        stop: asyncio.Event,
        max_batch: int = 500,
    ) -> None:
        """Run ``handler`` on batches from ``topic`` as member of ``group`` until ``stop``.

        A batch holds up to ``max_batch`` messages from any partitions assigned to
        this member, in offset order within each partition. After the handler
        returns, the offset after the last message of each partition is committed,
        except for partitions revoked while the batch was handled (their new owner
        gets those messages again). If the handler raises, nothing is committed,
        each partition of the batch is rewound to the batch's first offset and the
        batch is retried after a back-off. When ``stop`` is set, the batch in hand
        is finished and committed first; a retry back-off is cut short (that batch
        stays uncommitted). Cancelling the call commits nothing of the batch in hand.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
            rebalance_timeout_ms=self._rebalance_timeout_ms,
            max_poll_interval_ms=self._max_poll_interval_ms,
            request_timeout_ms=self._request_timeout_ms,
        )
        revoked = _RevocationLog()
        consumer.subscribe([topic], listener=revoked)
        self._consumers.add(consumer)
        log = _log.bind(topic=topic, group=group)
        try:
            await consumer.start()
            await self._consume_loop(consumer, revoked, handler, stop, max_batch, log)
        except ConsumerStoppedError:
            log.info("bus.consumer_closed_by_bus")
        finally:
            self._consumers.discard(consumer)
            await consumer.stop()

    async def _consume_loop(
        self,
        consumer: AIOKafkaConsumer,
        revoked: _RevocationLog,
        handler: Handler,
        stop: asyncio.Event,
        max_batch: int,
        log: FilteringBoundLogger,
    ) -> None:
        failures = 0
        while not stop.is_set():
            # Revocations are tracked from before the fetch, so a partition revoked
            # at any point until the commit is never committed by this member.
            revoked.partitions.clear()
            records = await consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=max_batch
            )
            if not records:
                continue
            batch = _to_messages(records)
            try:
                await handler(batch)
            except Exception:
                failures += 1
                delay = min(self._retry_max_s, self._retry_initial_s * 2 ** (failures - 1))
                log.warning(
                    "bus.handler_failed",
                    batch_size=len(batch),
                    attempt=failures,
                    retry_in_s=delay,
                    exc_info=True,
                )
                for tp in _still_owned(consumer, revoked, records):
                    consumer.seek(tp, records[tp][0].offset)
                await _wait_or_stop(stop, delay)
                continue
            failures = 0
            await self._commit(consumer, revoked, records, log)

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        revoked: _RevocationLog,
        records: dict[TopicPartition, list[Any]],
        log: FilteringBoundLogger,
    ) -> None:
        offsets = {
            tp: records[tp][-1].offset + 1 for tp in _still_owned(consumer, revoked, records)
        }
        if len(offsets) < len(records):
            log.info(
                "bus.commit_skipped_revoked",
                partitions=sorted(tp.partition for tp in records if tp not in offsets),
            )
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError):
            # The group rebalanced between the check and the commit: the new owner
            # of these partitions starts from the last commit and sees them again.
            log.info("bus.commit_lost_to_rebalance", exc_info=True)
        # Retriable errors are retried inside aiokafka; any other KafkaError is a
        # lasting fault (authorization, unknown topic) and propagates: the batch is
        # then delivered again to whoever consumes next.


class _RevocationLog(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Remembers which partitions were revoked since the log was last cleared."""

    def __init__(self) -> None:
        self.partitions: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.partitions.update(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        pass


def _still_owned(
    consumer: AIOKafkaConsumer,
    revoked: _RevocationLog,
    records: dict[TopicPartition, list[Any]],
) -> list[TopicPartition]:
    assignment = consumer.assignment()
    return [tp for tp in records if tp in assignment and tp not in revoked.partitions]


def _to_messages(records: dict[TopicPartition, list[Any]]) -> list[Message]:
    return [
        Message(
            topic=record.topic,
            value=record.value if record.value is not None else b"",
            key=record.key,
            partition=record.partition,
            offset=record.offset,
            headers=tuple((name, value or b"") for name, value in record.headers),
        )
        for tp_records in records.values()
        for record in tp_records
    ]


async def _wait_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)


async def ensure_topics(
    bootstrap_servers: str | Sequence[str],
    topics: dict[str, int],
    *,
    replication_factor: int = 1,
    request_timeout_ms: int = 40_000,
) -> None:
    """Create each topic of ``{name: partitions}`` that does not exist yet.

    Existing topics are left as they are (their partition count is not checked).
    The default replication factor of 1 suits a single-node development broker;
    production clusters pass their own.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers
        if isinstance(bootstrap_servers, str)
        else list(bootstrap_servers),
        client_id="gristmill-admin",
        request_timeout_ms=request_timeout_ms,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if not missing:
            return
        try:
            response = await admin.create_topics(missing)
        except TopicAlreadyExistsError:
            return
        errors = [
            f"{entry[0]}: error {entry[1]} ({entry[2] if len(entry) > 2 else 'no message'})"
            for entry in response.topic_errors
            if entry[1] not in (0, _TOPIC_ALREADY_EXISTS)
        ]
        if errors:
            raise KafkaError("could not create topics: " + "; ".join(errors))
    finally:
        await admin.close()


if TYPE_CHECKING:

    def _implements_bus(bus: KafkaBus) -> Bus:
        """Type checkers verify here that ``KafkaBus`` satisfies the ``Bus`` protocol."""
        return bus
