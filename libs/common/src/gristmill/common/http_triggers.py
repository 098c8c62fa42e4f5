"""HTTP routes: user-defined endpoints (``/api/r/<route>``) that run a script or a flow
(``is_flow``; ``script_path`` is then the flow's path).

A route pattern is segments separated by ``/``: literal segments (letters, digits,
``-``, ``_``, ``.``, ``~``) and parameters, written ``:name`` (Windmill's syntax) or
``{name}``. A route is served at ``/api/r/<route>`` (instance-wide: claimed only by
an admin, through the gateway) or, with ``workspaced_route``, at
``/api/r/<workspace>/<route>``. Two triggers may not hold the same method and an
equivalent served route (``a/:x`` and ``a/{y}``), in any workspace. When a request
matches several patterns, the one with the most literal segments, earliest, wins
(``a/b`` before ``a/:x``).

Authentication methods: ``none`` (public), ``windmill`` (a Gristmill token, as for
the API) and ``signature`` (header ``X-Signature``: the hex HMAC-SHA256 of the raw
request body keyed with the trigger's ``signature_secret``; a ``sha256=`` prefix is
accepted). The secret is encrypted at rest with the workspace's data key, as secret
variables are (bound to the trigger's path; re-encrypted by ``gristmill secrets
rotate``), and never answered by reads.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, GristmillError, InvalidRequest, NotFound
from gristmill.common.keystore import KeyStore, http_trigger_secret_name
from gristmill.common.scripts import Executor
from gristmill.common.secrets import encrypt_secret

__all__ = [
    "AUTH_METHODS",
    "METHODS",
    "HttpTrigger",
    "TriggerSettings",
    "create",
    "delete",
    "get",
    "list_triggers",
    "match",
    "parse_route",
    "set_enabled",
    "signature_ok",
    "signature_secret",
    "update",
]

_Q = load_queries("http_triggers.sql")
METHODS: Final = ("get", "post", "put", "delete", "patch")
AUTH_METHODS: Final = ("none", "windmill", "signature")
_LITERAL = re.compile(r"^[A-Za-z0-9._~-]+$")
_PARAM = re.compile(r"^(?::([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})$")
_MAX_SEGMENTS: Final = 32


class HttpTrigger(msgspec.Struct, frozen=True, kw_only=True):
    """One saved route (Windmill's ``HttpTrigger`` fields we support)."""

    workspace_id: str
    path: str
    route_path: str
    http_method: str
    script_path: str
    is_flow: bool
    is_async: bool
    authentication_method: str
    has_signature_secret: bool
    enabled: bool
    email: str
    edited_by: str
    edited_at: datetime
    #: Served at ``/api/r/<workspace>/<route_path>``.
    workspaced_route: bool = False
    #: The body is the ``body`` argument, whole, instead of spread into arguments.
    wrap_body: bool = False
    #: The body is also the ``raw_string`` argument, unparsed.
    raw_string: bool = False
    #: Internal: the secret of the ``signature`` method, encrypted (not serialised by
    #: the API; see ``signature_secret``).
    signature_secret: str | None = None

    @property
    def served_route(self) -> str:
        """The route as requested under ``/api/r/``."""
        return (
            f"{self.workspace_id}/{self.route_path}" if self.workspaced_route else self.route_path
        )


class TriggerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What a create or update sets."""

    route_path: str
    http_method: str
    script_path: str
    is_flow: bool = False
    is_async: bool = False
    authentication_method: str = "none"
    signature_secret: str | None = None
    enabled: bool | None = None
    workspaced_route: bool = False
    wrap_body: bool = False
    raw_string: bool = False


def parse_route(route_path: str) -> tuple[str, list[str | None], str]:
    """``(clean route, segments, route key)``; ``segments`` has ``None`` for literals
    and the parameter's name for parameters. ``InvalidRequest`` says what is wrong."""
    clean = route_path.strip().strip("/")
    if not clean:
        raise InvalidRequest("route_path must not be empty", location="route_path")
    parts = clean.split("/")
    if len(parts) > _MAX_SEGMENTS:
        raise InvalidRequest(
            f"route_path has more than {_MAX_SEGMENTS} segments", location="route_path"
        )
    names: list[str | None] = []
    key: list[str] = []
    for part in parts:
        param = _PARAM.match(part)
        if param is not None:
            name = param.group(1) or param.group(2)
            if name in names:
                raise InvalidRequest(
                    f"route_path names parameter {name!r} twice", location="route_path"
                )
            names.append(name)
            key.append(":")
        elif _LITERAL.match(part):
            names.append(None)
            key.append(part)
        else:
            raise InvalidRequest(
                f"invalid route_path segment {part!r}: use letters, digits, '-', '_', '.', "
                "'~', or a parameter ':name' / '{name}'",
                location="route_path",
            )
    return clean, names, "/".join(key)


def _check(settings: TriggerSettings, workspace: str) -> tuple[str, str, int]:
    """``(clean route, route key, segments)``; a workspaced route's key and segments are
    those of the route it is served at (``<workspace>/<route>``)."""
    clean, _, _ = parse_route(settings.route_path)
    served = f"{workspace}/{clean}" if settings.workspaced_route else clean
    _, names, key = parse_route(served)
    if settings.http_method not in METHODS:
        raise InvalidRequest(
            f"http_method must be one of {', '.join(METHODS)}", location="http_method"
        )
    if settings.authentication_method not in AUTH_METHODS:
        raise InvalidRequest(
            f"authentication_method must be one of {', '.join(AUTH_METHODS)}",
            location="authentication_method",
        )
    return clean, key, len(names)


def _trigger(row: asyncpg.Record) -> HttpTrigger:
    values = dict(row)
    values.pop("route_key")
    values.pop("segments")
    values["has_signature_secret"] = bool(values["signature_secret"])
    return HttpTrigger(**values)


async def _check_free(
    conn: Executor, workspace: str, path: str | None, method: str, key: str
) -> None:
    owner = await conn.fetchrow(_Q["route_owner"], method, key)
    if owner is not None and (owner["workspace_id"], owner["path"]) != (workspace, path):
        raise Conflict(
            f"route {method.upper()} /{key} is already used by an equivalent route "
            f"(trigger {owner['path']} in workspace {owner['workspace_id']})",
            location="route_path",
        )


def _needs_secret(settings: TriggerSettings, existing: str | None) -> None:
    if settings.authentication_method == "signature" and not (
        settings.signature_secret or existing
    ):
        raise InvalidRequest(
            "authentication_method 'signature' needs a signature_secret",
            location="signature_secret",
        )


def _keys_or_fail(keystore: KeyStore | None) -> KeyStore:
    if keystore is None:
        raise GristmillError(
            "signature secrets are unavailable: this server has no master key (set "
            "GRISTMILL_MASTER_KEY or GRISTMILL_MASTER_KEY_FILE)"
        )
    return keystore


async def _seal(
    conn: Conn, keystore: KeyStore | None, workspace: str, path: str, secret: str | None
) -> str | None:
    """The stored (encrypted) form of ``secret``; call inside a transaction."""
    if not secret:
        return None
    keys = await _keys_or_fail(keystore).lock_or_create(conn, workspace)
    return encrypt_secret(keys, http_trigger_secret_name(path), secret)


async def signature_secret(
    conn: Conn | asyncpg.Pool, keystore: KeyStore | None, trigger: HttpTrigger
) -> str | None:
    """The plaintext signature secret of ``trigger`` (``None`` if it has none)."""
    if not trigger.signature_secret:
        return None
    return await _keys_or_fail(keystore).decrypt(
        conn, trigger.workspace_id, http_trigger_secret_name(trigger.path), trigger.signature_secret
    )


async def create(
    conn: Conn,
    workspace: str,
    path: str,
    settings: TriggerSettings,
    *,
    editor: str,
    keystore: KeyStore | None,
) -> HttpTrigger:
    """Save a new route; call inside a transaction (the secret is sealed in it)."""
    clean, key, segments = _check(settings, workspace)
    _needs_secret(settings, None)
    await _check_free(conn, workspace, None, settings.http_method, key)
    sealed = await _seal(conn, keystore, workspace, path, settings.signature_secret)
    try:
        row = await conn.fetchrow(
            _Q["insert"],
            workspace,
            path,
            clean,
            key,
            segments,
            settings.http_method,
            settings.script_path,
            settings.is_flow,
            settings.is_async,
            settings.authentication_method,
            sealed,
            True if settings.enabled is None else settings.enabled,
            editor,
            settings.workspaced_route,
            settings.wrap_body,
            settings.raw_string,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            f"route {settings.http_method.upper()} /{key} is already used", location="route_path"
        ) from None
    if row is None:
        raise Conflict(f"an HTTP trigger already exists at {path}", location="path")
    return _trigger(row)


async def update(
    conn: Conn,
    workspace: str,
    path: str,
    settings: TriggerSettings,
    *,
    editor: str,
    keystore: KeyStore | None,
) -> HttpTrigger:
    """Change a route; call inside a transaction (a new secret is sealed in it)."""
    current = await get(conn, workspace, path)
    clean, key, segments = _check(settings, workspace)
    _needs_secret(settings, current.signature_secret)
    await _check_free(conn, workspace, path, settings.http_method, key)
    sealed = await _seal(conn, keystore, workspace, path, settings.signature_secret)
    try:
        row = await conn.fetchrow(
            _Q["update"],
            workspace,
            path,
            clean,
            key,
            segments,
            settings.http_method,
            settings.script_path,
            settings.is_flow,
            settings.is_async,
            settings.authentication_method,
            sealed,
            settings.enabled,
            editor,
            settings.workspaced_route,
            settings.wrap_body,
            settings.raw_string,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            f"route {settings.http_method.upper()} /{key} is already used", location="route_path"
        ) from None
    if row is None:
        raise NotFound(f"no HTTP trigger at {path} in workspace {workspace!r}", location="path")
    return _trigger(row)


async def get(conn: Executor, workspace: str, path: str) -> HttpTrigger:
    row = await conn.fetchrow(_Q["get"], workspace, path)
    if row is None:
        raise NotFound(f"no HTTP trigger at {path} in workspace {workspace!r}", location="path")
    return _trigger(row)


async def list_triggers(conn: Executor, workspace: str) -> list[HttpTrigger]:
    return [_trigger(row) for row in await conn.fetch(_Q["list"], workspace)]


async def delete(conn: Executor, workspace: str, path: str) -> None:
    if await conn.fetchval(_Q["delete"], workspace, path) is None:
        raise NotFound(f"no HTTP trigger at {path} in workspace {workspace!r}", location="path")


async def set_enabled(conn: Executor, workspace: str, path: str, enabled: bool) -> None:
    if await conn.fetchval(_Q["set_enabled"], workspace, path, enabled) is None:
        raise NotFound(f"no HTTP trigger at {path} in workspace {workspace!r}", location="path")


async def match(
    conn: Executor, route: str, method: str
) -> tuple[HttpTrigger, dict[str, str]] | bool | None:
    """The enabled trigger for ``method`` and ``route`` with its path parameters;
    ``False`` if the route matches only for other methods, ``None`` if it matches none."""
    parts = route.strip("/").split("/")
    rows = await conn.fetch(_Q["candidates"], len(parts))
    best: tuple[int, asyncpg.Record, dict[str, str]] | None = None
    other_method = False
    for row in rows:
        served = row["route_path"]
        if row["workspaced_route"]:
            served = f"{row['workspace_id']}/{served}"
        clean, names, _ = parse_route(served)
        params: dict[str, str] = {}
        literals = 0
        for name, pattern, part in zip(names, clean.split("/"), parts, strict=True):
            if name is None:
                if part != pattern:
                    break
                literals += 1
            elif part:
                params[name] = part
            else:
                break
        else:
            if row["http_method"] != method:
                other_method = True
            elif best is None or literals > best[0]:
                best = (literals, row, params)
    if best is not None:
        return _trigger(best[1]), best[2]
    return False if other_method else None


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    if not header:
        return False
    given = header.strip()
    if given.lower().startswith("sha256="):
        given = given[len("sha256=") :]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.lower())
