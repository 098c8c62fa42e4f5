"""What a running job gets to talk back to Gristmill: a job-scoped token and its state path.

The token is bound to the job's workspace, acts as the user who started the job, and
dies with the job: the statement that ends (or requeues) the job deletes it, and an
expiry (the job's timeout plus a margin) backs that up.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from gristmill.common.db.pool import Conn
from gristmill.common.queue import ClaimedJob
from gristmill.common.tokens import create_job_token

__all__ = ["JobContext", "state_path"]

_log = structlog.get_logger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def state_path(job: ClaimedJob) -> str:
    """Where ``get_state``/``set_state`` keep this script's state for this trigger.

    One state per script and trigger: ``<script path>/state`` for direct runs,
    ``<script path>/<trigger kind>_<trigger source>`` for triggered ones; previews
    keep theirs under the user's namespace.
    """
    base = job.runnable_path or f"u/{_UNSAFE.sub('_', job.created_by)}/preview"
    if job.trigger_kind in ("api", "cli", "webhook") or not job.trigger_source:
        return f"{base}/state"
    source = _UNSAFE.sub("_", job.trigger_source).strip("_") or "default"
    return f"{base}/{job.trigger_kind}_{source}"


class JobContext:
    """A ``Worker`` ``job_env`` hook: token and SDK variables for each job.

    ``prepare`` runs in the claim's transaction (``Queue.claim``'s ``on_claimed``), so
    a job's token commits with its claim instead of in a commit of its own; a job the
    claim did not prepare (or ``discard``ed) gets its token when asked for its
    variables.
    """

    def __init__(self, pool: asyncpg.Pool, *, default_timeout_s: float, margin_s: float = 60.0):
        self._pool = pool
        self._default_timeout_s = default_timeout_s
        self._margin_s = margin_s
        self._prepared: dict[uuid.UUID, dict[str, str]] = {}

    async def prepare(self, conn: Conn, jobs: Sequence[ClaimedJob]) -> None:
        for job in jobs:
            self._prepared[job.id] = await self._variables(conn, job)

    def discard(self, job_id: uuid.UUID) -> None:
        """Forget what ``prepare`` made for a job that will not run here."""
        self._prepared.pop(job_id, None)

    async def __call__(self, job: ClaimedJob) -> dict[str, str]:
        prepared = self._prepared.pop(job.id, None)
        if prepared is not None:
            return prepared
        return await self._variables(self._pool, job)

    async def _variables(self, conn: Conn | asyncpg.Pool, job: ClaimedJob) -> dict[str, str]:
        timeout = job.timeout_s or self._default_timeout_s
        expires = datetime.now(UTC) + timedelta(seconds=timeout + self._margin_s)
        path = state_path(job)
        env = {"WM_STATE_PATH_NEW": path, "WM_STATE_PATH": path}
        token = await create_job_token(
            conn,
            user_id=job.created_by,
            workspace=job.workspace,
            job_id=job.id,
            expires_at=expires,
        )
        if token is None:
            # Jobs act as a user; one that does not exist gets no API access at all.
            _log.warning(
                "job runs without a token: its user does not exist",
                job_id=str(job.id),
                user=job.created_by,
            )
            return env
        env["WM_TOKEN"] = token
        env["GRISTMILL_TOKEN"] = token
        return env
