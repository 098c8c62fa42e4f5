"""Postgres access: the pool, migrations and named SQL queries."""

from gristmill.common.db.migrations import migrate, pending_migrations
from gristmill.common.db.pool import connect, create_pool

__all__ = ["connect", "create_pool", "migrate", "pending_migrations"]
