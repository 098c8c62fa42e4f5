"""Group commits of job successes: one transaction for what finished meanwhile.

A worker's loops finish jobs independently. Each success goes to ``record``; the
first one starts a flush at once (no added wait), and whatever finishes while that
commit is in flight goes together in the next one (``Queue.complete_many``). With one
loop, or with jobs slower than a commit, every success is still its own commit;
with many fast jobs, many successes share one.
"""

from __future__ import annotations

import asyncio

from gristmill.common.queue import Completion, Queue

__all__ = ["CompletionBatcher"]


class CompletionBatcher:
    """See the module docstring. ``record`` raises what the commit raised."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._pending: list[tuple[Completion, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, done: Completion) -> bool:
        """Record one success; ``False`` if the job's lease was lost."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((done, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                recorded = await self._queue.complete_many([done for done, _ in batch])
            except Exception as exc:  # handed to each caller, which retries its own
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), ok in zip(batch, recorded, strict=True):
                if not future.done():
                    future.set_result(ok)
