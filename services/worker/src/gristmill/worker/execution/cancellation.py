"""Work that a job's cancellation interrupts (preparing its packages, building it)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["unless_canceled"]

_T = TypeVar("_T")


async def unless_canceled(cancel: asyncio.Event, work: Coroutine[Any, Any, _T]) -> _T | None:
    """``work``'s result, or ``None`` if ``cancel`` was set first (``work`` is then
    cancelled and waited for, so the processes it started are gone)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        return None
    return task.result()
