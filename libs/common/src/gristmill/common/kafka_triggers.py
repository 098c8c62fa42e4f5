"""Kafka triggers: each message of some topics runs a script or flow.

A trigger names a resource holding the connection (:class:`KafkaConnection`), the
topics, the consumer group and what to run. The triggers service runs one consumer
per enabled trigger, in the trigger's group, so that several triggers replicas share
the partitions. The consumer's state (its last error and when, which server and when
it last reported) is written beside the trigger and answered by reads.

The connection resource (Windmill's ``kafka`` resource type)::

    {"brokers": ["host:9092", ...],                       # or "host:9092,host2:9092"
     "security": {"label": "PLAINTEXT"}}                  # the default
     "security": {"label": "SASL_PLAINTEXT" | "SASL_SSL",
                  "mechanism": "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512",
                  "username": "...", "password": "$var:u/admin/kafka_password"}
     "security": {"label": "SSL", "ca_pem": "-----BEGIN CERTIFICATE-----..."}

``protocol`` is accepted for ``label``. ``$var:``/``$res:`` references are resolved
when the consumer starts. Messages a trigger cannot turn into a run request are
*parked* (:func:`park`), their offsets committed, and listed by :func:`list_parked`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, InvalidRequest, NotFound
from gristmill.common.scripts import Executor
from gristmill.common.variables import missing_workspace

__all__ = [
    "CHANGES_CHANNEL",
    "OFFSET_RESETS",
    "KafkaConnection",
    "KafkaTrigger",
    "ParkedMessage",
    "TriggerSettings",
    "check_topic",
    "create",
    "default_group_id",
    "delete",
    "delete_parked",
    "exists",
    "get",
    "list_parked",
    "list_triggers",
    "park",
    "parse_connection",
    "resource_value",
    "set_enabled",
    "set_error",
    "trigger_from_row",
    "update",
]

_Q = load_queries("kafka_triggers.sql")
#: Notified (by a table trigger) whenever what a consumer uses changes.
CHANGES_CHANNEL: Final = "gristmill_kafka_triggers"
OFFSET_RESETS: Final = ("latest", "earliest")
_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_MAX_TOPICS: Final = 100
_MAX_GROUP_ID: Final = 255
_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_REF_PREFIXES: Final = ("$var:", "$res:")


class KafkaTrigger(msgspec.Struct, frozen=True, kw_only=True):
    """One saved trigger (Windmill's ``KafkaTrigger`` fields, plus Gristmill's)."""

    workspace_id: str
    path: str
    kafka_resource_path: str
    group_id: str
    topics: list[str]
    script_path: str
    is_flow: bool
    #: Where a group without committed offsets starts: ``latest`` or ``earliest``.
    auto_offset_reset: str
    enabled: bool
    email: str
    edited_by: str
    edited_at: datetime
    #: The consumer's last error (``None`` while it works) and when it happened.
    error: str | None = None
    error_at: datetime | None = None
    #: The triggers server that last reported on this trigger, and when.
    server_id: str | None = None
    last_server_ping: datetime | None = None


class TriggerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What a create or update sets (checked by :func:`create`/:func:`update`)."""

    kafka_resource_path: str
    topics: list[str]
    script_path: str
    is_flow: bool = False
    #: Empty: :func:`default_group_id` of the trigger's path.
    group_id: str = ""
    auto_offset_reset: str = "latest"
    enabled: bool | None = None


class KafkaConnection(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach the brokers (from the trigger's resource)."""

    brokers: list[str]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None


class ParkedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message that could not become a run request, and why."""

    id: int
    workspace_id: str
    trigger_path: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[list[Any]]
    #: ``{"message": ..., "location": ...}`` as the failed check reported it.
    error: dict[str, Any]
    parked_at: datetime


def default_group_id(workspace: str, path: str) -> str:
    """The consumer group of a trigger that names none."""
    return f"gristmill-{workspace}-{path.replace('/', '__')}"


def check_topic(topic: str, *, location: str = "topics") -> str:
    """``topic`` if it is a legal Kafka topic name, else ``InvalidRequest``."""
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise InvalidRequest(
            f"invalid topic name {topic!r}: use 1-249 letters, digits, '.', '_' or '-' "
            "(not '.' or '..')",
            location=location,
        )
    return topic


def _check(workspace: str, path: str, settings: TriggerSettings) -> TriggerSettings:
    if not settings.topics:
        raise InvalidRequest("topics must name at least one topic", location="topics")
    if len(settings.topics) > _MAX_TOPICS:
        raise InvalidRequest(f"at most {_MAX_TOPICS} topics per trigger", location="topics")
    topics: list[str] = []
    for index, topic in enumerate(settings.topics):
        check_topic(topic.strip(), location=f"topics[{index}]")
        if topic.strip() in topics:
            raise InvalidRequest(f"topic {topic!r} is listed twice", location=f"topics[{index}]")
        topics.append(topic.strip())
    group_id = settings.group_id.strip() or default_group_id(workspace, path)
    if len(group_id) > _MAX_GROUP_ID or any(ord(c) < 32 for c in group_id):
        raise InvalidRequest(
            f"group_id must be at most {_MAX_GROUP_ID} printable characters", location="group_id"
        )
    if settings.auto_offset_reset not in OFFSET_RESETS:
        raise InvalidRequest(
            f"auto_offset_reset must be one of {', '.join(OFFSET_RESETS)}",
            location="auto_offset_reset",
        )
    if not settings.kafka_resource_path:
        raise InvalidRequest("kafka_resource_path is required", location="kafka_resource_path")
    if not settings.script_path:
        raise InvalidRequest("script_path is required", location="script_path")
    return msgspec.structs.replace(settings, topics=topics, group_id=group_id)


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_REF_PREFIXES)


def parse_connection(
    value: Any, *, location: str = "kafka_resource_path", allow_references: bool = False
) -> KafkaConnection:
    """The connection a ``kafka`` resource value describes; ``InvalidRequest`` says what
    is wrong. With ``allow_references``, ``$var:``/``$res:`` strings stand for any value
    (they are checked once resolved, when the consumer starts)."""

    def bad(problem: str) -> InvalidRequest:
        return InvalidRequest(f"the Kafka resource {problem}", location=location)

    if allow_references and _is_reference(value):
        return KafkaConnection(brokers=[])
    if not isinstance(value, dict):
        raise bad("must be an object with a 'brokers' list")
    raw = value.get("brokers")
    brokers: list[str] = []
    if allow_references and _is_reference(raw):
        pass
    elif isinstance(raw, str):
        brokers = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list) and all(isinstance(b, str) for b in raw):
        brokers = [b.strip() for b in raw if b.strip()]
    else:
        raise bad("needs 'brokers': a list of 'host:port' strings")
    if not brokers and not (allow_references and _is_reference(raw)):
        raise bad("needs at least one broker in 'brokers'")
    security = value.get("security") or {}
    if allow_references and _is_reference(security):
        return KafkaConnection(brokers=brokers)
    if not isinstance(security, dict):
        raise bad("'security' must be an object")
    protocol = security.get("label", security.get("protocol", "PLAINTEXT"))
    if protocol not in _PROTOCOLS:
        raise bad(f"'security.label' must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}")
    fields: dict[str, Any] = {"brokers": brokers, "security_protocol": protocol}
    if protocol.startswith("SASL"):
        mechanism = security.get("mechanism", "PLAIN")
        if mechanism not in _MECHANISMS and not (allow_references and _is_reference(mechanism)):
            raise bad(f"'security.mechanism' must be one of {', '.join(_MECHANISMS)}")
        for name in ("username", "password"):
            if not isinstance(security.get(name), str):
                raise bad(f"'security.{name}' is required with {protocol}")
        fields.update(
            sasl_mechanism=mechanism, username=security["username"], password=security["password"]
        )
    if protocol in ("SSL", "SASL_SSL"):
        ca_pem = security.get("ca_pem")
        if ca_pem is not None and not isinstance(ca_pem, str):
            raise bad("'security.ca_pem' must be a PEM string")
        fields["ca_pem"] = ca_pem or None
    return KafkaConnection(**fields)


def _trigger(row: asyncpg.Record) -> KafkaTrigger:
    return KafkaTrigger(
        workspace_id=row["workspace_id"],
        path=row["path"],
        kafka_resource_path=row["kafka_resource_path"],
        group_id=row["group_id"],
        topics=list(row["topics"]),
        script_path=row["script_path"],
        is_flow=row["is_flow"],
        auto_offset_reset=row["auto_offset_reset"],
        enabled=row["enabled"],
        email=row["email"],
        edited_by=row["edited_by"],
        edited_at=row["edited_at"],
        error=row["error"],
        error_at=row["error_at"],
        server_id=row["server_id"],
        last_server_ping=row["last_server_ping"],
    )


def trigger_from_row(row: asyncpg.Record) -> KafkaTrigger:
    """A trigger from a row of ``kafka_triggers`` (extra columns ignored)."""
    return _trigger(row)


def _not_found(workspace: str, path: str) -> NotFound:
    return NotFound(f"no Kafka trigger at {path} in workspace {workspace!r}", location="path")


async def resource_value(conn: Executor, workspace: str, path: str) -> Any:
    """The stored value of the connection resource (references unresolved)."""
    row = await conn.fetchrow(_Q["resource_value"], workspace, path)
    if row is None:
        raise NotFound(
            f"resource {path} not found in workspace {workspace!r}",
            location="kafka_resource_path",
        )
    return row["value"]


async def create(
    conn: Executor, workspace: str, path: str, settings: TriggerSettings, *, editor: str
) -> KafkaTrigger:
    """Save a new trigger; the caller checked the script or flow and the resource."""
    checked = _check(workspace, path, settings)
    try:
        row = await conn.fetchrow(
            _Q["insert"],
            workspace,
            path,
            checked.kafka_resource_path,
            checked.group_id,
            checked.topics,
            checked.script_path,
            checked.is_flow,
            checked.auto_offset_reset,
            True if checked.enabled is None else checked.enabled,
            editor,
        )
    except asyncpg.ForeignKeyViolationError:
        raise missing_workspace(workspace) from None
    if row is None:
        raise Conflict(f"a Kafka trigger already exists at {path}", location="path")
    return _trigger(row)


async def update(
    conn: Executor,
    workspace: str,
    path: str,
    settings: TriggerSettings,
    *,
    editor: str,
    new_path: str | None = None,
) -> KafkaTrigger:
    """Replace a trigger's settings (and rename it to ``new_path`` when given)."""
    target = new_path or path
    checked = _check(workspace, target, settings)
    try:
        row = await conn.fetchrow(
            _Q["update"],
            workspace,
            path,
            target,
            checked.kafka_resource_path,
            checked.group_id,
            checked.topics,
            checked.script_path,
            checked.is_flow,
            checked.auto_offset_reset,
            checked.enabled,
            editor,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a Kafka trigger already exists at {target}", location="path") from None
    if row is None:
        raise _not_found(workspace, path)
    return _trigger(row)


async def get(conn: Executor, workspace: str, path: str) -> KafkaTrigger:
    row = await conn.fetchrow(_Q["get"], workspace, path)
    if row is None:
        raise _not_found(workspace, path)
    return _trigger(row)


async def exists(conn: Executor, workspace: str, path: str) -> bool:
    found: bool = await conn.fetchval(_Q["exists"], workspace, path)
    return found


async def list_triggers(conn: Executor, workspace: str) -> list[KafkaTrigger]:
    return [_trigger(row) for row in await conn.fetch(_Q["list"], workspace)]


async def delete(conn: Executor, workspace: str, path: str) -> None:
    if await conn.fetchval(_Q["delete"], workspace, path) is None:
        raise _not_found(workspace, path)


async def set_enabled(conn: Executor, workspace: str, path: str, enabled: bool) -> None:
    if await conn.fetchval(_Q["set_enabled"], workspace, path, enabled) is None:
        raise _not_found(workspace, path)


async def set_error(
    conn: Executor, workspace: str, path: str, error: str | None, *, server_id: str
) -> None:
    """Record the consumer's state: its error, or ``None`` once it works again, and that
    ``server_id`` serves the trigger now. ``error_at`` keeps the time the current error
    first appeared while the same error is reported again."""
    await conn.execute(_Q["set_error"], workspace, path, error, server_id)


async def park(
    conn: Executor,
    rows: list[tuple[str, str, str, int, int, bytes | None, bytes | None, Any, Any]],
) -> None:
    """Park messages: ``(workspace, trigger path, topic, partition, offset, key, value,
    headers, error)`` each; a message parked before is left as it is."""
    if rows:
        await conn.executemany(_Q["park"], rows)


async def list_parked(
    conn: Executor, workspace: str, path: str, *, limit: int = 100, offset: int = 0
) -> list[ParkedMessage]:
    """The trigger's parked messages, newest first."""
    rows = await conn.fetch(_Q["list_parked"], workspace, path, limit, offset)
    return [
        ParkedMessage(
            id=row["id"],
            workspace_id=row["workspace_id"],
            trigger_path=row["trigger_path"],
            topic=row["topic"],
            partition=row["partition"],
            offset=row["offset"],
            key=row["key"],
            value=row["value"],
            headers=row["headers"],
            error=row["error"],
            parked_at=row["parked_at"],
        )
        for row in rows
    ]


async def delete_parked(conn: Executor, workspace: str, path: str) -> int:
    """Forget the trigger's parked messages; answers how many there were."""
    status: str = await conn.execute(_Q["delete_parked"], workspace, path)
    return int(status.rsplit(" ", 1)[-1])
