"""WebSocket triggers: one client connection per enabled trigger; each message runs its
script or flow.

**Ownership.** A trigger is connected by exactly one triggers replica: the one holding
its lease (``server_id``/``last_server_ping`` on the row, see
:func:`gristmill.common.websocket_triggers.claim`). Each pass renews this replica's
leases and takes triggers nobody holds or whose holder stopped renewing for
``lease_s``; a trigger this replica no longer holds (disabled, deleted, or taken over
after this replica stalled) is disconnected. A replica that stops hands its triggers
back at once.

**Changes.** A table trigger notifies ``gristmill_websocket_triggers`` when a setting
changes; a pass runs then, and at least every ``poll_s`` otherwise (a lost
notification costs one interval). A trigger whose settings changed is reconnected.

**A connection.** Resolve the URL (a ``$script:``/``$flow:`` URL runs the runnable and
uses its string result), connect, send the initial messages, then for each message:
apply the filters, publish the run request and wait until it is durable before
reading the next message (ordered, with back-pressure on the socket). A connection
that fails or is closed by the server is made again after a back-off doubling from
``initial_backoff_s`` to ``max_backoff_s`` (reset once a connection stayed up for
``stable_s``); the error is written on the trigger (``error``) and cleared once
connected. One trigger's failures never touch another's connection.

**Arguments.** ``msg``: the message as text (a binary frame decoded as UTF-8, bad
bytes replaced), as Windmill passes it. When the message is JSON, ``data`` is the
decoded value and, for a JSON object, each top-level field is also offered under its
own name (never replacing ``msg`` or ``data``). ``url`` is the URL connected to and
``trigger_path`` the trigger's path. The runnable gets those its input schema names;
a runnable with no schema gets ``msg`` only.

**Delivery.** WebSocket has no acknowledgements: a message is run at most once, and
a message the server sent while no connection was up is not seen. A message read is
published before the next is read, so a crash loses at most the message in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, Final

import asyncpg
import msgspec
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from gristmill.common import websocket_triggers
from gristmill.common.contracts.runs import RunRequest, TriggerKind
from gristmill.common.errors import GristmillError
from gristmill.common.websocket_triggers import UrlRunnable, WebsocketTrigger
from gristmill.triggers import runnables
from gristmill.triggers.service import TriggerContext

__all__ = ["WebsocketSource"]

_log = structlog.get_logger(__name__)
_decode_json = msgspec.json.Decoder()
#: Replies awaiting their run's result, per connection; at the cap, reading waits.
_MAX_PENDING_REPLIES: Final = 100
_MAX_ERROR_CHARS: Final = 2000


class WebsocketSource:
    """Connects this replica's WebSocket triggers; see the module's doc."""

    kind = "websocket"

    def __init__(
        self,
        context: TriggerContext,
        *,
        server_id: str | None = None,
        lease_s: float = 15.0,
        poll_s: float = 5.0,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        stable_s: float = 10.0,
        run_timeout_s: float = 60.0,
    ) -> None:
        self._context = context
        self.server_id = server_id or f"triggers-{uuid.uuid4().hex[:12]}"
        self._lease_s = lease_s
        self._poll_s = min(poll_s, lease_s / 3)
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._stable_s = stable_s
        self._run_timeout_s = run_timeout_s
        self._schemas = runnables.SchemaCache(context)
        self._connections: dict[tuple[str, str], tuple[tuple[Any, ...], asyncio.Task[None]]] = {}
        self._changed = asyncio.Event()
        #: When (event loop time) the last successful claim started: the leases it
        #: renewed hold until ``lease_s`` after that.
        self._renewed_at = float("-inf")

    def _lease_fresh(self) -> bool:
        return asyncio.get_running_loop().time() - self._renewed_at < self._lease_s

    # -- which triggers run here --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop), name="websocket-triggers-listen")
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                started = loop.time()
                self._changed.clear()  # a change notified from now on makes another pass
                try:
                    owned = await websocket_triggers.claim(
                        self._context.pool, self.server_id, self._lease_s
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    _log.warning("websocket triggers: cannot renew leases", error=str(exc))
                    if not self._lease_fresh() and self._connections:
                        # Another replica may take these triggers now: let go first.
                        _log.warning("websocket triggers: leases expired; disconnecting")
                        await self._stop_all()
                else:
                    self._renewed_at = started
                    self._reconcile(owned)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_change(stop), timeout=self._poll_s)
        finally:
            listener.cancel()
            await self._stop_all()
            with contextlib.suppress(Exception):
                await asyncio.shield(websocket_triggers.release(self._context.pool, self.server_id))

    async def _wait_change(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _reconcile(self, owned: list[WebsocketTrigger]) -> None:
        wanted = {(item.workspace_id, item.path): item for item in owned}
        for key, (fingerprint, task) in list(self._connections.items()):
            trigger = wanted.get(key)
            if trigger is None or trigger.connection_key() != fingerprint or task.done():
                task.cancel()
                del self._connections[key]
        for key, trigger in wanted.items():
            if key not in self._connections:
                task = asyncio.create_task(
                    self._serve(trigger), name=f"websocket-trigger:{key[0]}:{key[1]}"
                )
                self._connections[key] = (trigger.connection_key(), task)

    async def _stop_all(self) -> None:
        tasks = [task for _, task in self._connections.values()]
        self._connections.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake the pass loop on change notifications; the poll covers lost ones."""
        delay = 0.5
        while not stop.is_set():
            try:
                async with self._context.pool.acquire() as conn:
                    lost = asyncio.Event()

                    def _on_notify(*_: object) -> None:
                        self._changed.set()

                    conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await conn.add_listener(websocket_triggers.CHANNEL, _on_notify)
                    delay = 0.5
                    self._changed.set()  # changes may have happened while not listening
                    try:
                        while not lost.is_set():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(lost.wait(), timeout=self._poll_s)
                            await conn.execute("SELECT 1")
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(websocket_triggers.CHANNEL, _on_notify)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.info("websocket triggers: change listener lost; retrying", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- one trigger's connection -------------------------------------------------------------

    async def _set_error(self, trigger: WebsocketTrigger, error: str | None) -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await websocket_triggers.set_error(
                self._context.pool,
                trigger.workspace_id,
                trigger.path,
                self.server_id,
                None if error is None else error[:_MAX_ERROR_CHARS],
            )

    async def _serve(self, trigger: WebsocketTrigger) -> None:
        log = _log.bind(workspace=trigger.workspace_id, trigger=trigger.path)
        loop = asyncio.get_running_loop()
        backoff = self._initial_backoff_s
        while True:
            started = loop.time()
            url: str | None = None
            try:
                url = await self._url(trigger)
                async with connect(url, open_timeout=10, max_size=2**22) as socket:
                    log.info("websocket trigger connected", url=url)
                    await self._set_error(trigger, None)
                    await self._send_initial(trigger, socket)
                    await self._consume(trigger, socket, url)
                error = _closed_message(socket)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, WebSocketException, GristmillError) as exc:
                error = _describe(exc, url)
            except Exception as exc:  # one trigger's bug must not stop the others
                log.exception("websocket trigger failed")
                error = f"unexpected error: {type(exc).__name__}: {exc}"
            if loop.time() - started >= self._stable_s:
                backoff = self._initial_backoff_s
            log.info("websocket trigger disconnected", error=error, retry_in_s=backoff)
            await self._set_error(trigger, f"{error} (reconnecting in {backoff:g}s)")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _url(self, trigger: WebsocketTrigger) -> str:
        source = websocket_triggers.parse_url(trigger.url)
        if not isinstance(source, UrlRunnable):
            return source
        result = await runnables.run_and_wait(
            self._context,
            workspace=trigger.workspace_id,
            is_flow=source.is_flow,
            path=source.path,
            args=trigger.url_runnable_args or {},
            requested_by=trigger.edited_by,
            kind=TriggerKind.WEBSOCKET,
            source=trigger.path,
            timeout_s=self._run_timeout_s,
        )
        if not isinstance(result, str):
            raise runnables.RunFailed(
                f"the url runnable {source.path} returned {type(result).__name__}, not a string"
            )
        checked = websocket_triggers.parse_url(result)
        if not isinstance(checked, str):
            raise runnables.RunFailed(f"the url runnable {source.path} returned {result!r}")
        return checked

    async def _send_initial(self, trigger: WebsocketTrigger, socket: ClientConnection) -> None:
        for message in trigger.initial_messages:
            if message.raw_message is not None:
                await socket.send(message.raw_message)
                continue
            ref = message.runnable_result
            assert ref is not None  # checked when saved
            result = await runnables.run_and_wait(
                self._context,
                workspace=trigger.workspace_id,
                is_flow=ref.is_flow,
                path=ref.path,
                args=ref.args,
                requested_by=trigger.edited_by,
                kind=TriggerKind.WEBSOCKET,
                source=trigger.path,
                timeout_s=self._run_timeout_s,
            )
            await socket.send(runnables.as_text(result))

    async def _consume(self, trigger: WebsocketTrigger, socket: ClientConnection, url: str) -> None:
        replies: set[asyncio.Task[None]] = set()
        try:
            async for frame in socket:
                text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                decoded: Any = _NOT_JSON
                with contextlib.suppress(msgspec.DecodeError):
                    decoded = _decode_json.decode(text)
                if trigger.filters and not websocket_triggers.matches(
                    trigger.filters, trigger.filter_logic, None if decoded is _NOT_JSON else decoded
                ):
                    continue
                if not self._lease_fresh():
                    # This replica could not renew its lease (database unreachable, or it
                    # was stalled): another replica may hold the trigger by now.
                    raise LeaseExpired("this replica's lease on the trigger expired")
                request = await self._request(trigger, text, decoded, url)
                await runnables.publish(self._context, [request])
                if trigger.can_return_message:
                    while len(replies) >= _MAX_PENDING_REPLIES:
                        await asyncio.wait(replies, return_when=asyncio.FIRST_COMPLETED)
                    reply = asyncio.create_task(self._reply(trigger, socket, request.job_id))
                    replies.add(reply)
                    reply.add_done_callback(replies.discard)
        finally:
            for reply in replies:
                reply.cancel()

    async def _request(
        self, trigger: WebsocketTrigger, text: str, decoded: Any, url: str
    ) -> RunRequest:
        candidates: dict[str, Any] = {"msg": text, "url": url, "trigger_path": trigger.path}
        if decoded is not _NOT_JSON:
            candidates["data"] = decoded
            if isinstance(decoded, dict):
                for name, value in decoded.items():
                    candidates.setdefault(name, value)
        schema = await self._schemas.get(trigger.workspace_id, trigger.is_flow, trigger.script_path)
        return runnables.request(
            workspace=trigger.workspace_id,
            is_flow=trigger.is_flow,
            path=trigger.script_path,
            args=runnables.fit_args(schema, candidates, ("msg",)),
            requested_by=trigger.edited_by,
            kind=TriggerKind.WEBSOCKET,
            source=trigger.path,
            meta={"websocket": {"url": url}},
        )

    async def _reply(
        self, trigger: WebsocketTrigger, socket: ClientConnection, job_id: uuid.UUID
    ) -> None:
        try:
            ok, value = await runnables.wait_outcome(
                self._context, trigger.workspace_id, job_id, self._run_timeout_s
            )
        except runnables.RunFailed as exc:
            _log.info("websocket trigger: no result to send back", error=str(exc))
            return
        if not ok and not trigger.can_return_error_result:
            return
        payload = value if ok else {"error": value}
        with contextlib.suppress(ConnectionClosed):
            await socket.send(runnables.as_text(payload))


class LeaseExpired(GristmillError):
    """This replica can no longer be sure it holds the trigger."""

    code = "lease_expired"


class _NotJson:
    """Marks a message that is not JSON (``None`` is the JSON ``null``)."""


_NOT_JSON: Final = _NotJson()


def _closed_message(socket: ClientConnection) -> str:
    code = socket.close_code
    reason = socket.close_reason
    text = f"the server closed the connection (code {code}"
    return text + (f": {reason})" if reason else ")")


def _describe(exc: BaseException, url: str | None) -> str:
    where = f" to {url}" if url else ""
    if isinstance(exc, InvalidStatus):
        return f"connection{where} refused: HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        return f"connection{where} lost: {exc}"
    if isinstance(exc, TimeoutError):
        return f"connection{where} timed out"
    if isinstance(exc, GristmillError):
        return exc.message
    return f"cannot connect{where}: {type(exc).__name__}: {exc}"
