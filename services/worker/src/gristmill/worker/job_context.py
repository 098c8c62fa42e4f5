"""What a running job gets to talk back to Gristmill: a job-scoped token and its state path.

The token is bound to the job's workspace, acts as the user who started the job, and
dies with the job: the statement that ends (or requeues) the job deletes it, and an
expiry (the job's timeout plus a margin) backs that up.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from gristmill.common.queue import ClaimedJob
from gristmill.common.tokens import create_token

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
    """A ``Worker`` ``job_env`` hook: token and SDK variables for each job."""

    def __init__(self, pool: asyncpg.Pool, *, default_timeout_s: float, margin_s: float = 60.0):
        self._pool = pool
        self._default_timeout_s = default_timeout_s
        self._margin_s = margin_s

    async def __call__(self, job: ClaimedJob) -> dict[str, str]:
        timeout = job.timeout_s or self._default_timeout_s
        expires = datetime.now(UTC) + timedelta(seconds=timeout + self._margin_s)
        path = state_path(job)
        env = {"WM_STATE_PATH_NEW": path, "WM_STATE_PATH": path}
        try:
            token = await create_token(
                self._pool,
                user_id=job.created_by,
                label=f"job {job.id}",
                workspace=job.workspace,
                job_id=job.id,
                expires_at=expires,
            )
        except asyncpg.ForeignKeyViolationError:
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
