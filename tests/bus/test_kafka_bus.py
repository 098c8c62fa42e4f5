"""The Kafka transport of the bus against a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from gristmill.common.bus import Message
from gristmill.common.bus.kafka import KafkaBus, ensure_topics
from tests.harness.broker import TOPIC_PARTITIONS, unique_name

pytestmark = pytest.mark.kafka

#: Bound on any wait for deliveries; a takeover after a dead member needs a
#: session timeout plus a join.
DELIVERY_TIMEOUT_S = 45


class Recorder:
    """A handler that records each batch; ``before`` runs first and may raise or block."""

    def __init__(self, before: Callable[[int, list[Message]], Awaitable[None]] | None = None):
        self.calls: list[list[Message]] = []
        self.handled: list[list[Message]] = []
        self._before = before

    async def __call__(self, batch: Sequence[Message]) -> None:
        messages = list(batch)
        self.calls.append(messages)
        if self._before is not None:
            await self._before(len(self.calls), messages)
        self.handled.append(messages)

    @property
    def messages(self) -> list[Message]:
        """Messages of the batches the handler completed, in order."""
        return [message for batch in self.handled for message in batch]

    async def wait_for_values(self, values: set[bytes]) -> None:
        await eventually(lambda: values <= {m.value for m in self.messages})


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, failing after ``DELIVERY_TIMEOUT_S``."""
    async with asyncio.timeout(DELIVERY_TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.05)


def fast_bus(bootstrap: str, client_id: str) -> KafkaBus:
    """A bus with low group timeouts: the development broker takes about half the
    session timeout to complete a group join."""
    return KafkaBus(
        bootstrap,
        client_id=client_id,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        poll_timeout_ms=200,
        retry_backoff_initial_s=0.1,
        retry_backoff_max_s=1.0,
    )


@contextlib.asynccontextmanager
async def consuming(
    bus: KafkaBus, topic: str, group: str, handler: Recorder, *, max_batch: int = 500
) -> AsyncIterator[asyncio.Event]:
    """Run ``bus.consume`` in a task; on exit set ``stop`` and wait for it to drain."""
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(topic, group, handler, stop=stop, max_batch=max_batch))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    """The group's committed offset of each partition (``None``: nothing committed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {
            partition: await consumer.committed(TopicPartition(topic, partition))
            for partition in range(TOPIC_PARTITIONS)
        }
    finally:
        await consumer.stop()


def ends(messages: Sequence[Message]) -> dict[int, int | None]:
    """The offsets a group has committed once it handled ``messages``."""
    result: dict[int, int | None] = dict.fromkeys(range(TOPIC_PARTITIONS))
    for message in messages:
        result[message.partition] = max(result[message.partition] or 0, message.offset + 1)
    return result


def items(prefix: str, count: int) -> list[tuple[bytes | None, bytes]]:
    return [(f"{prefix}-{i}".encode(), f"{prefix}-value-{i}".encode()) for i in range(count)]


@pytest_asyncio.fixture(loop_scope="session")
async def bus(kafka_broker: str) -> AsyncIterator[KafkaBus]:
    async with fast_bus(kafka_broker, "bus-tests") as bus:
        yield bus


@pytest.fixture
def group(kafka_topic: str) -> str:
    return f"{kafka_topic}-group"


async def test_round_trip_keeps_value_key_and_headers(
    bus: KafkaBus, kafka_broker: str, kafka_topic: str, group: str
) -> None:
    await bus.publish(kafka_topic, b"first", key=b"k1", headers=[("trace", b"abc"), ("n", b"1")])
    await bus.publish(kafka_topic, b"second")
    await bus.publish_many(kafka_topic, [(b"k3", b"third"), (None, b"")])
    recorder = Recorder()

    async with consuming(bus, kafka_topic, group, recorder):
        await recorder.wait_for_values({b"first", b"second", b"third", b""})

    by_value = {message.value: message for message in recorder.messages}
    assert len(recorder.messages) == 4
    first = by_value[b"first"]
    assert (first.topic, first.key, first.headers) == (
        kafka_topic,
        b"k1",
        (("trace", b"abc"), ("n", b"1")),
    )
    assert (by_value[b"second"].key, by_value[b"second"].headers) == (None, ())
    assert by_value[b"third"].key == b"k3"
    assert by_value[b""].key is None
    assert all(0 <= m.partition < TOPIC_PARTITIONS and m.offset >= 0 for m in recorder.messages)
    assert await committed_offsets(kafka_broker, kafka_topic, group) == ends(recorder.messages)


async def test_failed_batch_is_redelivered_and_not_committed(
    bus: KafkaBus, kafka_broker: str, kafka_topic: str, group: str
) -> None:
    await bus.publish_many(kafka_topic, items("m", 40))
    committed_at_retry: list[dict[int, int | None]] = []

    async def fail_second_call(call: int, batch: list[Message]) -> None:
        if call == 2:
            raise RuntimeError("downstream is down")
        if call == 3:
            committed_at_retry.append(await committed_offsets(kafka_broker, kafka_topic, group))

    recorder = Recorder(before=fail_second_call)
    async with consuming(bus, kafka_topic, group, recorder, max_batch=7):
        await recorder.wait_for_values({value for _, value in items("m", 40)})

    first, failed = recorder.calls[0], recorder.calls[1]
    assert committed_at_retry == [ends(first)], "the failed batch was committed"
    handled = {(m.partition, m.offset) for m in recorder.messages}
    assert {(m.partition, m.offset) for m in failed} <= handled
    # Per partition, the handled offsets are 0, 1, 2, ... once each: nothing skipped.
    for partition in range(TOPIC_PARTITIONS):
        offsets = [m.offset for m in recorder.messages if m.partition == partition]
        assert offsets == list(range(len(offsets)))
    assert len(recorder.messages) == 40
    assert await committed_offsets(kafka_broker, kafka_topic, group) == ends(recorder.messages)


async def test_cancelled_consumer_leaves_its_batch_to_the_next_member(
    bus: KafkaBus, kafka_broker: str, kafka_topic: str, group: str
) -> None:
    published = items("c", 10)
    await bus.publish_many(kafka_topic, published)
    entered = asyncio.Event()

    async def hang(call: int, batch: list[Message]) -> None:
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(
        bus.consume(kafka_topic, group, Recorder(before=hang), stop=asyncio.Event())
    )
    async with asyncio.timeout(DELIVERY_TIMEOUT_S):
        await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await committed_offsets(kafka_broker, kafka_topic, group) == ends([])

    recorder = Recorder()
    async with (
        fast_bus(kafka_broker, "successor") as successor,
        consuming(successor, kafka_topic, group, recorder),
    ):
        await recorder.wait_for_values({value for _, value in published})
    assert len(recorder.messages) == 10


_DOOMED_CONSUMER = """
import asyncio, sys
from gristmill.common.bus.kafka import KafkaBus

async def handler(batch):
    print("handling", len(batch), flush=True)
    await asyncio.Event().wait()

async def main(bootstrap, topic, group):
    async with KafkaBus(
        bootstrap, client_id="doomed", session_timeout_ms=6000, heartbeat_interval_ms=1000
    ) as bus:
        await bus.consume(topic, group, handler, stop=asyncio.Event())

asyncio.run(main(*sys.argv[1:]))
"""


async def test_killed_consumer_leaves_its_batch_to_the_next_member(
    bus: KafkaBus, kafka_broker: str, kafka_topic: str, group: str
) -> None:
    published = items("k", 10)
    await bus.publish_many(kafka_topic, published)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DOOMED_CONSUMER,
        kafka_broker,
        kafka_topic,
        group,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            while not (await process.stdout.readline()).startswith(b"handling"):
                assert process.returncode is None, "the consumer process died on its own"
    finally:
        process.kill()
        await process.stdout.read()
        await process.wait()
    assert await committed_offsets(kafka_broker, kafka_topic, group) == ends([])

    recorder = Recorder()
    async with consuming(bus, kafka_topic, group, recorder):
        await recorder.wait_for_values({value for _, value in published})
    assert len(recorder.messages) == 10


async def test_stop_drains_and_commits_the_batch_in_hand(
    bus: KafkaBus, kafka_broker: str, kafka_topic: str, group: str
) -> None:
    await bus.publish_many(kafka_topic, items("s", 10))
    entered, release = asyncio.Event(), asyncio.Event()

    async def gate(call: int, batch: list[Message]) -> None:
        entered.set()
        await release.wait()

    recorder = Recorder(before=gate)
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(kafka_topic, group, recorder, stop=stop))
    async with asyncio.timeout(DELIVERY_TIMEOUT_S):
        await entered.wait()
    stop.set()
    await asyncio.sleep(0.5)
    assert not task.done(), "consume returned before its handler did"
    release.set()
    await asyncio.wait_for(task, timeout=20)

    assert len(recorder.handled) == 1
    assert await committed_offsets(kafka_broker, kafka_topic, group) == ends(recorder.messages)


async def test_two_members_share_partitions_and_see_each_message_once(
    kafka_broker: str, kafka_topic: str, group: str
) -> None:
    first, second = Recorder(), Recorder()
    async with (
        fast_bus(kafka_broker, "member-1") as bus_1,
        fast_bus(kafka_broker, "member-2") as bus_2,
        consuming(bus_1, kafka_topic, group, first),
        consuming(bus_2, kafka_topic, group, second),
    ):
        # Warm up until both members hold partitions: the group is then stable,
        # and no rebalance can deliver a measured message twice.
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            round_ = 0
            while not (first.messages and second.messages):
                await bus_1.publish_many(kafka_topic, items(f"warm-{round_}", 8))
                round_ += 1
                await asyncio.sleep(0.3)

        measured = items("measured", 200)
        await bus_1.publish_many(kafka_topic, measured)
        expected = {value for _, value in measured}

        def seen() -> list[bytes]:
            return [m.value for m in first.messages + second.messages if m.value in expected]

        await eventually(lambda: set(seen()) == expected)

    counts = Counter(seen())
    assert set(counts.values()) == {1}, "a message was handled twice"
    partitions_1 = {m.partition for m in first.messages if m.value in expected}
    partitions_2 = {m.partition for m in second.messages if m.value in expected}
    assert partitions_1, "the first member got no partition"
    assert partitions_2, "the second member got no partition"
    assert not partitions_1 & partitions_2


async def test_rebalance_during_a_batch_loses_nothing(
    kafka_broker: str, kafka_topic: str, group: str
) -> None:
    published = items("r", 40)
    expected = {value for _, value in published}
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold_first_batch(call: int, batch: list[Message]) -> None:
        if call == 1:
            entered.set()
            await release.wait()

    first, second = Recorder(before=hold_first_batch), Recorder()
    async with (
        fast_bus(kafka_broker, "member-1") as bus_1,
        fast_bus(kafka_broker, "member-2") as bus_2,
    ):
        await bus_1.publish_many(kafka_topic, published)
        async with consuming(bus_1, kafka_topic, group, first):
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                await entered.wait()
            # The second member joining revokes the partitions of the batch in hand.
            async with consuming(bus_2, kafka_topic, group, second):
                await eventually(lambda: bool(second.messages))
                release.set()
                await eventually(
                    lambda: expected <= {m.value for m in first.messages + second.messages}
                )

    held = first.handled[0]
    handled_again = [m.value for m in first.messages[len(held) :] + second.messages]
    assert {m.value for m in held} <= set(handled_again)
    assert await committed_offsets(kafka_broker, kafka_topic, group) == ends(
        first.messages + second.messages
    )


async def test_publish_many_delivers_a_thousand_messages(
    bus: KafkaBus, kafka_topic: str, group: str
) -> None:
    published = items("bulk", 1000)
    await bus.publish_many(kafka_topic, published)
    recorder = Recorder()

    async with consuming(bus, kafka_topic, group, recorder):
        await recorder.wait_for_values({value for _, value in published})

    assert Counter(m.value for m in recorder.messages) == Counter(v for _, v in published)
    assert {m.key for m in recorder.messages} == {key for key, _ in published}


async def test_ensure_topics_creates_missing_and_keeps_existing(
    kafka_broker: str, kafka_topic: str
) -> None:
    new_topic = unique_name("ensure-topics")
    await ensure_topics(kafka_broker, {kafka_topic: TOPIC_PARTITIONS, new_topic: 2})
    await ensure_topics(kafka_broker, {new_topic: 2})
    async with KafkaBus(kafka_broker, client_id="ensure-topics") as bus:
        await bus.publish(new_topic, b"x")


async def test_publish_needs_an_open_bus(kafka_broker: str) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await KafkaBus(kafka_broker, client_id="closed").publish("anything", b"x")
