"""WebSocket triggers: connect to an external WebSocket server, run a script or flow per message.

Saved settings (Windmill's ``WebsocketTrigger`` fields):

* ``url``: a static ``ws://`` or ``wss://`` URL, or ``$script:<path>`` / ``$flow:<path>``:
  the runnable is run (with ``url_runnable_args``) before each connection and its
  result, a string, is the URL (for URLs carrying a fresh token).
* ``initial_messages``: sent in order right after connecting; each is
  ``{"raw_message": "<text>"}`` or ``{"runnable_result": {"path", "args", "is_flow"}}``
  (the runnable's result is sent: a string as is, anything else as JSON).
* ``filters``: ``[{"key": ..., "value": ...}]``. Only messages that are JSON objects
  whose field ``key`` *contains* ``value`` run the script (objects: every key of the
  value is contained; arrays: every item of the value is contained in some item;
  anything else: equal). ``filter_logic`` ``and`` (default) needs every filter to
  match, ``or`` any. No filters: every message runs.
* ``can_return_message``: the run's result is sent back on the socket (a string as is,
  anything else as JSON); ``can_return_error_result``: a failed run's error is too.

Connection state is on the row: ``server_id`` and ``last_server_ping`` (the lease of
the triggers replica connecting it) and ``error`` (the last connection error, ``None``
while connected). See ``gristmill.triggers.websocket`` and docs/adr.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
import msgspec

from gristmill.common import scripts
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, InvalidRequest, NotFound
from gristmill.common.flows.store import flow_exists
from gristmill.common.scripts import Executor
from gristmill.common.variables import missing_workspace

__all__ = [
    "CHANNEL",
    "FILTER_LOGICS",
    "Filter",
    "InitialMessage",
    "RunnableRef",
    "TriggerSettings",
    "UrlRunnable",
    "WebsocketTrigger",
    "claim",
    "create",
    "delete",
    "exists",
    "get",
    "list_triggers",
    "matches",
    "parse_url",
    "release",
    "set_enabled",
    "set_error",
    "update",
]

_Q = load_queries("websocket_triggers.sql")
#: Notified (by a table trigger) when what a connection uses changes.
CHANNEL: Final = "gristmill_websocket_triggers"
FILTER_LOGICS: Final = ("and", "or")
_RUNNABLE_URL = re.compile(r"^\$(script|flow):(.+)$")
_MAX_URL: Final = 4096
_MAX_MESSAGES: Final = 100
_MAX_FILTERS: Final = 100


class Filter(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    value: Any


class RunnableRef(msgspec.Struct, frozen=True, kw_only=True):
    """A script or flow whose result is used (an initial message)."""

    path: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    is_flow: bool = False


class InitialMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``raw_message`` or ``runnable_result``: exactly one is set."""

    raw_message: str | None = None
    runnable_result: RunnableRef | None = None


class UrlRunnable(msgspec.Struct, frozen=True, kw_only=True):
    """The runnable of a ``$script:``/``$flow:`` URL."""

    is_flow: bool
    path: str


class TriggerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What a create or update sets."""

    url: str
    script_path: str
    is_flow: bool = False
    url_runnable_args: dict[str, Any] | None = None
    filters: tuple[Filter, ...] = ()
    filter_logic: str = "and"
    initial_messages: tuple[InitialMessage, ...] = ()
    can_return_message: bool = False
    can_return_error_result: bool = False
    #: ``None`` on update: unchanged.
    enabled: bool | None = None


class WebsocketTrigger(msgspec.Struct, frozen=True, kw_only=True):
    """One saved trigger and its connection state."""

    workspace_id: str
    path: str
    url: str
    url_runnable_args: dict[str, Any] | None
    script_path: str
    is_flow: bool
    filters: list[Filter]
    filter_logic: str
    initial_messages: list[InitialMessage]
    can_return_message: bool
    can_return_error_result: bool
    enabled: bool
    email: str
    edited_by: str
    edited_at: datetime
    server_id: str | None
    last_server_ping: datetime | None
    error: str | None
    error_at: datetime | None

    def connection_key(self) -> tuple[Any, ...]:
        """What a live connection depends on: a change means reconnecting."""
        return (
            self.url,
            msgspec.json.encode(self.url_runnable_args),
            self.script_path,
            self.is_flow,
            msgspec.json.encode(self.filters),
            self.filter_logic,
            msgspec.json.encode(self.initial_messages),
            self.can_return_message,
            self.can_return_error_result,
            self.edited_by,
        )


def _trigger(row: asyncpg.Record) -> WebsocketTrigger:
    return msgspec.convert(dict(row), WebsocketTrigger)


def parse_url(url: str) -> str | UrlRunnable:
    """The static URL, or the runnable producing it. ``InvalidRequest`` names ``url``."""
    url = url.strip()
    if not url:
        raise InvalidRequest("url must not be empty", location="url")
    if len(url) > _MAX_URL:
        raise InvalidRequest(f"url is longer than {_MAX_URL} characters", location="url")
    runnable = _RUNNABLE_URL.match(url)
    if runnable is not None:
        path = scripts.validate_path(runnable.group(2), location="url")
        return UrlRunnable(is_flow=runnable.group(1) == "flow", path=path)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"invalid url {url!r}: {exc}", location="url") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidRequest(
            f"invalid url {url!r}: expected a ws:// or wss:// URL, or $script:<path> / "
            "$flow:<path> (a runnable returning the URL)",
            location="url",
        )
    if not parts.hostname:
        raise InvalidRequest(f"invalid url {url!r}: it names no host", location="url")
    if port == 0:
        raise InvalidRequest(f"invalid url {url!r}: port 0", location="url")
    return url


def _check(settings: TriggerSettings) -> None:
    parse_url(settings.url)
    scripts.validate_path(settings.script_path, location="script_path")
    if settings.filter_logic not in FILTER_LOGICS:
        raise InvalidRequest("filter_logic must be 'and' or 'or'", location="filter_logic")
    if len(settings.filters) > _MAX_FILTERS:
        raise InvalidRequest(f"at most {_MAX_FILTERS} filters", location="filters")
    for index, item in enumerate(settings.filters):
        if not item.key:
            raise InvalidRequest("a filter needs a key", location=f"filters[{index}].key")
    if len(settings.initial_messages) > _MAX_MESSAGES:
        raise InvalidRequest(
            f"at most {_MAX_MESSAGES} initial messages", location="initial_messages"
        )
    for index, message in enumerate(settings.initial_messages):
        where = f"initial_messages[{index}]"
        if (message.raw_message is None) == (message.runnable_result is None):
            raise InvalidRequest(
                "an initial message is either {raw_message} or {runnable_result}",
                location=where,
            )
        if message.runnable_result is not None:
            scripts.validate_path(
                message.runnable_result.path, location=f"{where}.runnable_result.path"
            )


async def _check_runnable(
    conn: Executor, workspace: str, is_flow: bool, path: str, location: str
) -> None:
    if is_flow:
        if not await flow_exists(conn, workspace, path):
            raise NotFound(f"flow {path!r} not found in workspace {workspace!r}", location=location)
        return
    try:
        await scripts.runnable_by_path(conn, workspace, path)
    except NotFound as exc:
        raise NotFound(exc.message, location=location) from None


async def _check_references(conn: Executor, workspace: str, settings: TriggerSettings) -> None:
    await _check_runnable(
        conn, workspace, settings.is_flow, settings.script_path.strip("/"), "script_path"
    )
    source = parse_url(settings.url)
    if isinstance(source, UrlRunnable):
        await _check_runnable(conn, workspace, source.is_flow, source.path, "url")
    for index, message in enumerate(settings.initial_messages):
        ref = message.runnable_result
        if ref is not None:
            await _check_runnable(
                conn,
                workspace,
                ref.is_flow,
                ref.path.strip("/"),
                f"initial_messages[{index}].runnable_result.path",
            )


def _values(settings: TriggerSettings) -> tuple[Any, ...]:
    return (
        settings.url.strip(),
        settings.url_runnable_args,
        settings.script_path.strip("/"),
        settings.is_flow,
        list(settings.filters),
        settings.filter_logic,
        list(settings.initial_messages),
        settings.can_return_message,
        settings.can_return_error_result,
    )


def _missing(workspace: str, path: str) -> NotFound:
    return NotFound(f"no WebSocket trigger at {path} in workspace {workspace!r}", location="path")


async def create(
    conn: Executor, workspace: str, path: str, settings: TriggerSettings, *, editor: str
) -> WebsocketTrigger:
    """Save a new trigger. Raises ``InvalidRequest`` (naming the field), ``NotFound``
    (the runnable), ``Conflict`` (a trigger exists at ``path``)."""
    _check(settings)
    await _check_references(conn, workspace, settings)
    try:
        row = await conn.fetchrow(
            _Q["insert"],
            workspace,
            path,
            *_values(settings),
            True if settings.enabled is None else settings.enabled,
            editor,
        )
    except asyncpg.ForeignKeyViolationError:
        raise missing_workspace(workspace) from None
    if row is None:
        raise Conflict(f"a WebSocket trigger already exists at {path}", location="path")
    return _trigger(row)


async def update(
    conn: Executor, workspace: str, path: str, settings: TriggerSettings, *, editor: str
) -> WebsocketTrigger:
    _check(settings)
    await _check_references(conn, workspace, settings)
    row = await conn.fetchrow(
        _Q["update"], workspace, path, *_values(settings), settings.enabled, editor
    )
    if row is None:
        raise _missing(workspace, path)
    return _trigger(row)


async def get(conn: Executor, workspace: str, path: str) -> WebsocketTrigger:
    row = await conn.fetchrow(_Q["get"], workspace, path)
    if row is None:
        raise _missing(workspace, path)
    return _trigger(row)


async def exists(conn: Executor, workspace: str, path: str) -> bool:
    found: bool = await conn.fetchval(_Q["exists"], workspace, path)
    return found


async def list_triggers(conn: Executor, workspace: str) -> list[WebsocketTrigger]:
    return [_trigger(row) for row in await conn.fetch(_Q["list"], workspace)]


async def delete(conn: Executor, workspace: str, path: str) -> None:
    if await conn.fetchval(_Q["delete"], workspace, path) is None:
        raise _missing(workspace, path)


async def set_enabled(conn: Executor, workspace: str, path: str, enabled: bool) -> None:
    if await conn.fetchval(_Q["set_enabled"], workspace, path, enabled) is None:
        raise _missing(workspace, path)


# -- the triggers service's side -----------------------------------------------------------


async def claim(conn: Executor, server_id: str, lease_s: float) -> list[WebsocketTrigger]:
    """The enabled triggers ``server_id`` connects now (its lease on each renewed)."""
    return [_trigger(row) for row in await conn.fetch(_Q["claim"], server_id, lease_s)]


async def release(conn: Executor, server_id: str) -> None:
    """Give up every trigger ``server_id`` holds (another replica takes them at once)."""
    await conn.execute(_Q["release"], server_id)


async def set_error(
    conn: Executor, workspace: str, path: str, server_id: str, error: str | None
) -> None:
    """Record (or, with ``None``, clear) the connection error, if ``server_id`` holds it."""
    await conn.execute(_Q["set_error"], workspace, path, server_id, error)


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and all(
            any(_contains(item, wanted) for item in actual) for wanted in expected
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    return bool(actual == expected)


def matches(filters: list[Filter] | tuple[Filter, ...], logic: str, message: Any) -> bool:
    """Whether a decoded message passes the filters (see the module's doc)."""
    if not filters:
        return True
    if not isinstance(message, dict):
        return False
    results = (item.key in message and _contains(message[item.key], item.value) for item in filters)
    return any(results) if logic == "or" else all(results)
