"""Pytest fixtures for tests that talk to the Kafka-protocol broker.

``kafka_broker`` (session) yields the bootstrap address of a broker started once
per run, or of the one named by ``GRISTMILL_TEST_KAFKA_BOOTSTRAP``. ``kafka_topic``
(function) yields a fresh topic, named from the test plus a random suffix, with
:data:`TOPIC_PARTITIONS` partitions. Import both into a conftest::

    from tests.harness.broker import kafka_broker, kafka_topic  # noqa: F401
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator

import pytest
import pytest_asyncio

from gristmill.cli.broker import LocalBroker
from gristmill.common.bus.kafka import ensure_topics

__all__ = ["BOOTSTRAP_ENV", "TOPIC_PARTITIONS", "kafka_broker", "kafka_topic", "unique_name"]

#: Set to ``host:port`` to run the suite against an existing broker.
BOOTSTRAP_ENV = "GRISTMILL_TEST_KAFKA_BOOTSTRAP"
#: Partitions of each ``kafka_topic``.
TOPIC_PARTITIONS = 4

_ILLEGAL = re.compile(r"[^a-zA-Z0-9._-]+")


def unique_name(base: str) -> str:
    """A legal topic or group name from ``base`` (a test name) plus a random suffix."""
    return f"{_ILLEGAL.sub('-', base).strip('-.')[:200]}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """The bootstrap address (``host:port``) of a broker that lives for the session."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    with LocalBroker() as broker:
        yield broker.bootstrap


@pytest_asyncio.fixture(loop_scope="session")
async def kafka_topic(kafka_broker: str, request: pytest.FixtureRequest) -> str:
    """A new topic for this test only."""
    name = unique_name(request.node.name)
    await ensure_topics(kafka_broker, {name: TOPIC_PARTITIONS})
    return name
