"""Test fixtures: a real Postgres, a real Kafka-protocol broker, real processes.

``GRISTMILL_TEST_DATABASE_URL`` points the suite at an existing server (superuser DSN)
and ``GRISTMILL_TEST_KAFKA_BOOTSTRAP`` at an existing broker; otherwise both are
started here for the session.
"""

from __future__ import annotations

pytest_plugins = ["tests.harness.postgres", "tests.harness.broker", "tests.harness.services"]
