"""Email triggers: mail sent to an address of the instance runs a script or flow.

A trigger reserves a local part: mail to ``<local_part>@<domain>`` (the domain is
``GRISTMILL_SMTP_DOMAIN``) runs its runnable; with ``workspaced_local_part`` the
address is ``<workspace>-<local_part>@<domain>``. Addresses are global to the
instance and matched without regard to case. A sender may append ``+key=value``
pairs to the local part (``orders+source=shop@...``): they reach the runnable as
``email_extra_args``. The SMTP server lives in the triggers service
(``gristmill.triggers.email``); this module holds the records.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from gristmill.common import scripts
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, InvalidRequest, NotFound
from gristmill.common.flows.store import flow_exists
from gristmill.common.scripts import Executor
from gristmill.common.variables import missing_workspace

__all__ = [
    "MAX_LOCAL_PART",
    "EmailTrigger",
    "TriggerSettings",
    "address_of",
    "by_address",
    "create",
    "delete",
    "exists",
    "get",
    "list_triggers",
    "set_enabled",
    "update",
]

_Q = load_queries("email_triggers.sql")
#: RFC 5321's limit on a local part.
MAX_LOCAL_PART: Final = 64
_LOCAL_PART = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$")


class TriggerSettings(msgspec.Struct, frozen=True, kw_only=True):
    local_part: str
    script_path: str
    is_flow: bool = False
    workspaced_local_part: bool = False
    #: ``None`` on update: unchanged.
    enabled: bool | None = None


class EmailTrigger(msgspec.Struct, frozen=True, kw_only=True):
    workspace_id: str
    path: str
    local_part: str
    workspaced_local_part: bool
    #: The local part mail is matched on (lower-cased).
    address: str
    script_path: str
    is_flow: bool
    enabled: bool
    email: str
    edited_by: str
    edited_at: datetime


def _trigger(row: asyncpg.Record) -> EmailTrigger:
    return msgspec.convert(dict(row), EmailTrigger)


def address_of(workspace: str, settings: TriggerSettings) -> str:
    """The local part the trigger answers to; ``InvalidRequest`` if it is not valid."""
    local = settings.local_part.strip().lower()
    address = f"{workspace}-{local}" if settings.workspaced_local_part else local
    if not local or not _LOCAL_PART.match(local) or ".." in local:
        raise InvalidRequest(
            f"invalid local_part {settings.local_part!r}: use letters, digits, '.', '_' or "
            "'-', starting and ending with a letter or digit ('+' is reserved for extra "
            "arguments)",
            location="local_part",
        )
    if len(address) > MAX_LOCAL_PART:
        raise InvalidRequest(
            f"the address's local part {address!r} is longer than {MAX_LOCAL_PART} characters",
            location="local_part",
        )
    return address


async def _check_runnable(conn: Executor, workspace: str, settings: TriggerSettings) -> str:
    path = scripts.validate_path(settings.script_path, location="script_path")
    if settings.is_flow:
        if not await flow_exists(conn, workspace, path):
            raise NotFound(
                f"flow {path!r} not found in workspace {workspace!r}", location="script_path"
            )
        return path
    try:
        await scripts.runnable_by_path(conn, workspace, path)
    except NotFound as exc:
        raise NotFound(exc.message, location="script_path") from None
    return path


async def _check_free(conn: Executor, workspace: str, path: str | None, address: str) -> None:
    owner = await conn.fetchrow(_Q["address_owner"], address)
    if owner is not None and (owner["workspace_id"], owner["path"]) != (workspace, path):
        raise Conflict(
            f"the address {address!r} is already used by email trigger {owner['path']} "
            f"in workspace {owner['workspace_id']}",
            location="local_part",
        )


def _missing(workspace: str, path: str) -> NotFound:
    return NotFound(f"no email trigger at {path} in workspace {workspace!r}", location="path")


def _taken(address: str) -> Conflict:
    return Conflict(f"the address {address!r} is already used", location="local_part")


async def create(
    conn: Executor, workspace: str, path: str, settings: TriggerSettings, *, editor: str
) -> EmailTrigger:
    address = address_of(workspace, settings)
    script_path = await _check_runnable(conn, workspace, settings)
    await _check_free(conn, workspace, None, address)
    try:
        row = await conn.fetchrow(
            _Q["insert"],
            workspace,
            path,
            settings.local_part.strip().lower(),
            settings.workspaced_local_part,
            address,
            script_path,
            settings.is_flow,
            True if settings.enabled is None else settings.enabled,
            editor,
        )
    except asyncpg.UniqueViolationError:
        raise _taken(address) from None
    except asyncpg.ForeignKeyViolationError:
        raise missing_workspace(workspace) from None
    if row is None:
        raise Conflict(f"an email trigger already exists at {path}", location="path")
    return _trigger(row)


async def update(
    conn: Executor, workspace: str, path: str, settings: TriggerSettings, *, editor: str
) -> EmailTrigger:
    address = address_of(workspace, settings)
    script_path = await _check_runnable(conn, workspace, settings)
    await _check_free(conn, workspace, path, address)
    try:
        row = await conn.fetchrow(
            _Q["update"],
            workspace,
            path,
            settings.local_part.strip().lower(),
            settings.workspaced_local_part,
            address,
            script_path,
            settings.is_flow,
            settings.enabled,
            editor,
        )
    except asyncpg.UniqueViolationError:
        raise _taken(address) from None
    if row is None:
        raise _missing(workspace, path)
    return _trigger(row)


async def get(conn: Executor, workspace: str, path: str) -> EmailTrigger:
    row = await conn.fetchrow(_Q["get"], workspace, path)
    if row is None:
        raise _missing(workspace, path)
    return _trigger(row)


async def exists(conn: Executor, workspace: str, path: str) -> bool:
    found: bool = await conn.fetchval(_Q["exists"], workspace, path)
    return found


async def list_triggers(conn: Executor, workspace: str) -> list[EmailTrigger]:
    return [_trigger(row) for row in await conn.fetch(_Q["list"], workspace)]


async def delete(conn: Executor, workspace: str, path: str) -> None:
    if await conn.fetchval(_Q["delete"], workspace, path) is None:
        raise _missing(workspace, path)


async def set_enabled(conn: Executor, workspace: str, path: str, enabled: bool) -> None:
    if await conn.fetchval(_Q["set_enabled"], workspace, path, enabled) is None:
        raise _missing(workspace, path)


async def by_address(conn: Executor, address: str) -> EmailTrigger | None:
    """The enabled trigger answering to a local part (any case), if any."""
    row = await conn.fetchrow(_Q["by_address"], address.lower())
    return None if row is None else _trigger(row)
