"""Saved flows: one OpenFlow document per path, checked when saved.

A save stores the document as sent: ``summary``, ``description``, ``value`` and
``schema`` in their columns, every other top-level field in ``extra`` (so fields this
version does not know come back unchanged). The value is validated first (see
``flows.validate``), including cycles through sub-flows. Of the other fields, Windmill's
``dedicated_worker`` (a boolean beside ``summary``, not in ``value``) is checked too:
the steps of a flow saved with it run on the workers dedicated to that flow
(``SavedFlow.dedicated_tag``, docs/adr/0011-dedicated-workers.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, InvalidRequest, NotFound
from gristmill.common.flows.expressions import Evaluator
from gristmill.common.flows.model import FlowValue, parse_value
from gristmill.common.flows.validate import check_subflow_cycles, validate_value
from gristmill.common.queue import validate_tag
from gristmill.common.scripts import dedicated_flow_tag, validate_path

__all__ = [
    "SavedFlow",
    "archive_flow",
    "create_flow",
    "delete_flow",
    "flow_exists",
    "flow_version",
    "get_flow",
    "list_flows",
    "load_value",
    "update_flow",
]

_Q = load_queries("flows.sql")
#: Top-level fields with a column of their own, or set by the server.
_COLUMNS: Final = frozenset({"path", "summary", "description", "value", "schema"})
_SERVER_FIELDS: Final = frozenset(
    {
        "workspace_id",
        "edited_by",
        "edited_at",
        "archived",
        "extra_perms",
        "version",
        "created_by",
        "created_at",
        "starred",
        "has_draft",
        "draft_only",
    }
)


class SavedFlow(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    path: str
    summary: str
    description: str
    value: dict[str, Any]
    schema: dict[str, Any] | None
    extra: dict[str, Any]
    archived: bool
    version: int
    created_by: str
    created_at: datetime
    edited_by: str
    edited_at: datetime

    def document(self) -> dict[str, Any]:
        """The document as ``flows/get`` answers it (Windmill's ``Flow``)."""
        return {
            **self.extra,
            "workspace_id": self.workspace,
            "path": self.path,
            "summary": self.summary,
            "description": self.description,
            "value": self.value,
            "schema": self.schema,
            "edited_by": self.edited_by,
            "edited_at": self.edited_at,
            "archived": self.archived,
            "extra_perms": {},
            "version": self.version,
        }

    @property
    def dedicated_tag(self) -> str | None:
        """The tag of this flow's step jobs when it was saved with Windmill's
        ``dedicated_worker`` (only workers dedicated to it claim them), else ``None``."""
        if self.extra.get("dedicated_worker") is True:
            return dedicated_flow_tag(self.workspace, self.path)
        return None


def _saved(row: asyncpg.Record) -> SavedFlow:
    return SavedFlow(
        workspace=row["workspace_id"],
        path=row["path"],
        summary=row["summary"],
        description=row["description"],
        value=row["value"],
        schema=row["schema"],
        extra=row["extra"],
        archived=row["archived"],
        version=row["version"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        edited_by=row["edited_by"],
        edited_at=row["edited_at"],
    )


def _text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", location=name)
    return value


async def load_value(conn: Conn, workspace: str, path: str) -> FlowValue | None:
    """The parsed value of a saved flow, or ``None``."""
    row = await conn.fetchrow(_Q["flow_get"], workspace, path)
    if row is None:
        return None
    try:
        return parse_value(row["value"])
    except InvalidRequest:
        return None


async def _checked(
    conn: Conn,
    workspace: str,
    path: str,
    document: Any,
    evaluator: Evaluator | None,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    if not isinstance(document, dict):
        raise InvalidRequest("the flow must be a JSON (or YAML) object", location="body")
    raw = document.get("value")
    value = validate_value(raw, evaluator=evaluator)
    assert isinstance(raw, dict)  # validate_value accepts objects only

    async def load(target: str) -> FlowValue | None:
        return await load_value(conn, workspace, target)

    await check_subflow_cycles(path, value, load)
    schema = document.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise InvalidRequest("schema must be a JSON Schema object", location="schema")
    extra = {k: v for k, v in document.items() if k not in _COLUMNS and k not in _SERVER_FIELDS}
    dedicated = extra.get("dedicated_worker")
    if dedicated is not None and not isinstance(dedicated, bool):
        raise InvalidRequest(
            f"dedicated_worker must be true or false, got {dedicated!r}",
            location="dedicated_worker",
        )
    if dedicated:
        validate_tag(dedicated_flow_tag(workspace, path), location="dedicated_worker")
    return raw, schema, extra


async def create_flow(
    conn: Conn,
    workspace: str,
    document: Any,
    *,
    user: str,
    evaluator: Evaluator | None = None,
) -> str:
    """Save a new flow at ``document['path']``; ``Conflict`` if the path is taken."""
    if not isinstance(document, dict):
        raise InvalidRequest("the flow must be a JSON (or YAML) object", location="body")
    path = validate_path(_text(document, "path"))
    raw, schema, extra = await _checked(conn, workspace, path, document, evaluator)
    created = await conn.fetchval(
        _Q["flow_create"],
        workspace,
        path,
        _text(document, "summary"),
        _text(document, "description"),
        raw,
        schema,
        extra,
        user,
    )
    if created is None:
        raise Conflict(f"a flow already exists at {path!r}", location="path")
    return path


async def update_flow(
    conn: Conn,
    workspace: str,
    path: str,
    document: Any,
    *,
    user: str,
    evaluator: Evaluator | None = None,
) -> str:
    """Save over the flow at ``path`` (``document['path']`` may rename it)."""
    if not isinstance(document, dict):
        raise InvalidRequest("the flow must be a JSON (or YAML) object", location="body")
    new_path = validate_path(_text(document, "path") or path)
    raw, schema, extra = await _checked(conn, workspace, new_path, document, evaluator)
    try:
        row = await conn.fetchrow(
            _Q["flow_update"],
            workspace,
            path,
            _text(document, "summary"),
            _text(document, "description"),
            raw,
            schema,
            extra,
            user,
            new_path if new_path != path else None,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a flow already exists at {new_path!r}", location="path") from None
    if row is None:
        raise NotFound(f"flow {path!r} not found", location="path")
    path_saved: str = row["path"]
    return path_saved


async def get_flow(conn: Conn | asyncpg.Pool, workspace: str, path: str) -> SavedFlow:
    row = await conn.fetchrow(_Q["flow_get"], workspace, path)
    if row is None:
        raise NotFound(f"flow {path!r} not found in workspace {workspace!r}", location="path")
    return _saved(row)


async def flow_exists(conn: Conn | asyncpg.Pool, workspace: str, path: str) -> bool:
    found: bool = await conn.fetchval(_Q["flow_exists"], workspace, path)
    return found


async def flow_version(conn: Conn | asyncpg.Pool, workspace: str, path: str) -> int | None:
    """The version of the flow at ``path`` (it grows on every save), or ``None``."""
    version: int | None = await conn.fetchval(_Q["flow_version"], workspace, path)
    return version


async def list_flows(
    conn: Conn | asyncpg.Pool,
    workspace: str,
    *,
    show_archived: bool = False,
    path_start: str | None = None,
    created_by: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[SavedFlow]:
    rows = await conn.fetch(
        _Q["flow_list"], workspace, show_archived, path_start, created_by, limit, offset
    )
    return [_saved(row) for row in rows]


async def archive_flow(
    conn: Conn | asyncpg.Pool, workspace: str, path: str, *, archived: bool = True
) -> None:
    if await conn.fetchval(_Q["flow_archive"], workspace, path, archived) is None:
        raise NotFound(f"flow {path!r} not found", location="path")


async def delete_flow(conn: Conn | asyncpg.Pool, workspace: str, path: str) -> None:
    if await conn.fetchval(_Q["flow_delete"], workspace, path) is None:
        raise NotFound(f"flow {path!r} not found", location="path")
