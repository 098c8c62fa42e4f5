"""What the gateway's handlers need, handed in by the composition root."""

from __future__ import annotations

import asyncpg
import msgspec

from gristmill.common.bus.base import Bus
from gristmill.common.job_done import DoneListener
from gristmill.common.keystore import KeyStore
from gristmill.common.queue import Queue, QueueLimits
from gristmill.common.secrets import MasterKeyring

__all__ = ["GatewayContext"]


class GatewayContext(msgspec.Struct, kw_only=True):
    pool: asyncpg.Pool
    queue: Queue
    bus: Bus
    limits: QueueLimits = msgspec.field(default_factory=QueueLimits)
    max_body_bytes: int = 10 * 1024 * 1024
    version: str = "0.1.0"
    #: Where the gateway is reachable (told to jobs and printed at start).
    base_url: str | None = None
    #: With a remote bus, a published request becomes a job only once a dispatcher
    #: inserted it: wait (up to this long) so that the id answered can be read at once.
    #: ``None`` when publish already returns after the insert (in-process bus).
    await_job_visible_s: float | None = None
    #: The master keys of secrets; without them secret variables are unavailable (the
    #: endpoints that need one say so) and everything else works.
    keyring: MasterKeyring | None = None
    #: The cache of workspaces' unwrapped data keys; built from ``keyring`` if not given.
    keystore: KeyStore | None = None
    #: Wakes run-and-wait callers when their job ended; the app starts one for its
    #: lifetime (``create_app``). ``None``: waiting polls only.
    done: DoneListener | None = None

    def __post_init__(self) -> None:
        if self.keystore is None and self.keyring is not None:
            self.keystore = KeyStore(self.keyring)
