"""Successes that finish together are recorded together (``CompletionBatcher``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from gristmill.common.queue import Completion, Queue
from gristmill.worker.completions import CompletionBatcher
from tests.queue.test_queue import job


class _CountingQueue(Queue):
    """The real queue, counting the batches it is handed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.batches: list[int] = []

    async def complete_many(self, done: Sequence[Completion]) -> list[bool]:
        self.batches.append(len(done))
        return await super().complete_many(done)


async def test_successes_finishing_together_share_a_commit(pg_pool: asyncpg.Pool) -> None:
    queue = _CountingQueue(pg_pool)
    await queue.enqueue([job() for _ in range(60)])
    claimed = await queue.claim("w", ["python3"], limit=60)
    batcher = CompletionBatcher(queue)

    # All sixty are handed over before the flush gets to run: one batch, one commit.
    recorded = await asyncio.gather(
        *(batcher.record(Completion(job, {"i": i})) for i, job in enumerate(claimed))
    )
    assert recorded == [True] * 60
    assert queue.batches == [60]
    rows = await pg_pool.fetch("SELECT id, result FROM jobs_completed")
    assert {row["id"]: row["result"] for row in rows} == {
        job.id: {"i": i} for i, job in enumerate(claimed)
    }

    # A lost lease is reported to its own caller only; a lone success is not delayed.
    assert await batcher.record(Completion(claimed[0], {"again": True})) is False
    assert queue.batches == [60, 1]


async def test_a_failed_commit_reaches_every_caller_of_the_batch(pg_pool: asyncpg.Pool) -> None:
    queue = Queue(pg_pool)
    await queue.enqueue([job() for _ in range(3)])
    claimed = await queue.claim("w", ["python3"], limit=3)
    batcher = CompletionBatcher(queue)
    await pg_pool.execute("ALTER TABLE jobs_completed ADD CONSTRAINT no_results CHECK (false)")
    outcomes = await asyncio.gather(
        *(batcher.record(Completion(job)) for job in claimed), return_exceptions=True
    )
    assert all(isinstance(o, asyncpg.CheckViolationError) for o in outcomes), outcomes
    # Nothing was recorded; once the database accepts them again, the retries are.
    await pg_pool.execute("ALTER TABLE jobs_completed DROP CONSTRAINT no_results")
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs_completed") == 0
    assert await asyncio.gather(*(batcher.record(Completion(job)) for job in claimed)) == [True] * 3
