"""Variables: text values at a path of a workspace; secrets are encrypted at rest.

A secret's value is stored as its ciphertext (``$gm1$...``, see
``gristmill.common.secrets``) made with the workspace's active data key and bound to
the workspace and the path: renaming a secret re-encrypts it, and a ciphertext copied
to another workspace or path does not decrypt. Other values are stored as they are.
A listing never carries a secret's value; reading one in clear is explicit
(``get(..., decrypt=True)``, ``get_value``).

Paths (of variables, resources and other items) follow Windmill: ``u/<user>/<name>``
or ``f/<folder>/<name>``, where a name may hold further ``/``-separated segments.
``may_access`` is the rule for who may read and write an item at a path.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, GristmillError, InvalidRequest, NotFound
from gristmill.common.keystore import KeyStore
from gristmill.common.secrets import decrypt_secret, encrypt_secret, reencrypt

__all__ = [
    "MAX_PATH_LENGTH",
    "Variable",
    "VariableStore",
    "may_access",
    "missing_workspace",
    "validate_path",
]

_Q = load_queries("variables.sql")

MAX_PATH_LENGTH = 255
_OWNER = r"[A-Za-z0-9_-]{1,64}"
_SEGMENT = r"[A-Za-z0-9_.@-]+"
_PATH = re.compile(rf"(u|f)/({_OWNER})(?:/{_SEGMENT})+")
_DOTS = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")


def validate_path(path: str, *, location: str = "path", kind: str = "item") -> str:
    """``path`` if it is a valid item path, else ``InvalidRequest`` saying why.

    Valid: ``u/<user>/<name>`` or ``f/<folder>/<name>``; owner names use letters,
    digits, ``_`` and ``-``; the name is one or more ``/``-separated segments of
    letters, digits, ``_``, ``-``, ``.`` and ``@`` (not ``.`` or ``..``); at most
    255 characters in all.
    """
    problem: str | None = None
    if not path:
        problem = "it is empty"
    elif len(path) > MAX_PATH_LENGTH:
        problem = f"it is {len(path)} characters long, at most {MAX_PATH_LENGTH} are allowed"
    elif _PATH.fullmatch(path) is None:
        if not path.startswith(("u/", "f/")):
            problem = "it must start with 'u/<user>/' or 'f/<folder>/'"
        elif path.count("/") < 2 or path.endswith("/"):
            problem = "it needs a name after the owner, like 'u/alice/my_name'"
        else:
            problem = (
                "use letters, digits, '_', '-' in the owner and also '.', '@' in the name, "
                "with single '/' between segments"
            )
    elif _DOTS.search(path):
        problem = "a segment cannot be '.' or '..'"
    if problem is not None:
        raise InvalidRequest(f"{kind} path {path!r} is invalid: {problem}", location=location)
    return path


def may_access(path: str, *, user_id: str, is_admin: bool) -> bool:
    """Whether a user may read and write the item at ``path``.

    Admins may access everything; a user their own ``u/<user>/...`` items and every
    folder's ``f/...`` items (folders have no access lists yet).
    """
    if is_admin:
        return True
    kind, _, rest = path.partition("/")
    if kind == "f":
        return True
    owner = rest.partition("/")[0]
    return kind == "u" and owner == user_id


def missing_workspace(workspace: str) -> NotFound:
    """The error for an item written to a workspace that does not exist."""
    return NotFound(f"workspace {workspace!r} not found", location="workspace")


class Variable(msgspec.Struct, frozen=True, kw_only=True):
    """A variable as read back."""

    workspace: str
    path: str
    is_secret: bool
    #: The value in clear; for a secret, ``None`` unless it was decrypted (or, when the
    #: ciphertext was asked for, the stored ``$gm1$...`` text).
    value: str | None
    description: str
    created_by: str
    created_at: datetime
    edited_at: datetime


def _variable(row: Any, value: str | None) -> Variable:
    return Variable(
        workspace=row["workspace_id"],
        path=row["path"],
        is_secret=row["is_secret"],
        value=value,
        description=row["description"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
    )


def _not_found(workspace: str, path: str) -> NotFound:
    return NotFound(f"variable {path} not found in workspace {workspace!r}", location="path")


class VariableStore:
    """Variables of every workspace, in Postgres.

    ``keystore`` holds the workspaces' data keys; without it (no master key configured)
    plain variables work and every operation that needs a secret in clear or sealed
    raises an error saying so.
    """

    __slots__ = ("_keystore", "_pool")

    def __init__(self, pool: asyncpg.Pool, keystore: KeyStore | None = None) -> None:
        self._pool = pool
        self._keystore = keystore

    def _keys(self) -> KeyStore:
        if self._keystore is None:
            raise GristmillError(
                "secrets are unavailable: this server has no master key (set "
                "GRISTMILL_MASTER_KEY or GRISTMILL_MASTER_KEY_FILE)"
            )
        return self._keystore

    async def _seal(
        self, conn: Conn, workspace: str, path: str, value: str, *, already_encrypted: bool
    ) -> str:
        """The stored form of secret ``path``; call inside a transaction (it locks the keys).

        With ``already_encrypted``, ``value`` is a ciphertext read back from this
        workspace and path (``include_encrypted``); it must decrypt here, and is kept.
        """
        keys = await self._keys().lock_or_create(conn, workspace)
        if already_encrypted:
            return reencrypt(keys, path, value)
        return encrypt_secret(keys, path, value)

    async def create(
        self,
        workspace: str,
        path: str,
        *,
        value: str,
        is_secret: bool,
        description: str,
        created_by: str,
        already_encrypted: bool = False,
    ) -> None:
        """Create a variable; ``Conflict`` if the path is taken."""
        validate_path(path, kind="variable")
        if already_encrypted and not is_secret:
            raise InvalidRequest(
                "already_encrypted applies to secrets only", location="already_encrypted"
            )
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                stored = value
                if is_secret:
                    stored = await self._seal(
                        conn, workspace, path, value, already_encrypted=already_encrypted
                    )
                created = await conn.fetchval(
                    _Q["insert_variable"],
                    workspace,
                    path,
                    stored,
                    is_secret,
                    description,
                    created_by,
                )
        except asyncpg.ForeignKeyViolationError:
            raise missing_workspace(workspace) from None
        if created is None:
            raise Conflict(
                f"variable {path} already exists in workspace {workspace!r}", location="path"
            )

    async def get(
        self, workspace: str, path: str, *, decrypt: bool = False, encrypted: bool = False
    ) -> Variable:
        """The variable; a secret's value is ``None`` unless ``decrypt`` (the value in
        clear) or ``encrypted`` (the stored ciphertext) is asked for."""
        row = await self._pool.fetchrow(_Q["get_variable"], workspace, path)
        if row is None:
            raise _not_found(workspace, path)
        value: str | None = row["value"]
        if row["is_secret"]:
            if decrypt:
                value = await self._keys().decrypt(self._pool, workspace, path, row["value"])
            elif not encrypted:
                value = None
        return _variable(row, value)

    async def get_value(self, workspace: str, path: str) -> str:
        """The value in clear (decrypted if secret)."""
        return await self.read_value(self._pool, workspace, path)

    async def read_value(self, conn: Conn | asyncpg.Pool, workspace: str, path: str) -> str:
        """``get_value`` on the caller's connection."""
        row = await conn.fetchrow(_Q["get_variable"], workspace, path)
        if row is None:
            raise _not_found(workspace, path)
        if row["is_secret"]:
            return await self._keys().decrypt(conn, workspace, path, row["value"])
        value: str = row["value"]
        return value

    async def list_variables(
        self,
        workspace: str,
        *,
        path_start: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Variable]:
        """Variables in path order; secrets come without their value."""
        rows = await self._pool.fetch(_Q["list_variables"], workspace, path_start, limit, offset)
        return [_variable(row, row["value"]) for row in rows]

    async def exists(self, workspace: str, path: str) -> bool:
        exists: bool = await self._pool.fetchval(_Q["variable_exists"], workspace, path)
        return exists

    async def delete(self, workspace: str, path: str) -> None:
        """Delete a variable; ``NotFound`` if there is none at ``path``."""
        if await self._pool.fetchval(_Q["delete_variable"], workspace, path) is None:
            raise _not_found(workspace, path)

    async def update(
        self,
        workspace: str,
        path: str,
        *,
        value: str | None = None,
        is_secret: bool | None = None,
        description: str | None = None,
        new_path: str | None = None,
        already_encrypted: bool = False,
    ) -> str:
        """Change what is given (``None``: keep). Answers the path after the update.

        Renaming or turning a variable into a secret (or back) re-encodes its value:
        a secret's ciphertext is bound to its path.
        """
        target = path if new_path is None else validate_path(new_path, kind="variable")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # Keys first, then the row: the lock order of a rotation.
                keys = None
                if self._keystore is not None:
                    keys = await self._keystore.lock(conn, workspace)
                row = await conn.fetchrow(_Q["get_variable_for_update"], workspace, path)
                if row is None:
                    raise _not_found(workspace, path)
                secret = row["is_secret"] if is_secret is None else is_secret
                if already_encrypted and (value is None or not secret):
                    raise InvalidRequest(
                        "already_encrypted needs a secret and its value",
                        location="already_encrypted",
                    )
                if value is None and row["is_secret"]:
                    if keys is None:
                        self._keys()  # raises: no master key
                        raise _lost_keys(workspace, path)
                    value = decrypt_secret(keys, path, row["value"])
                elif value is None:
                    value = row["value"]
                stored = value
                if secret:
                    stored = await self._seal(
                        conn, workspace, target, value, already_encrypted=already_encrypted
                    )
                await conn.execute(
                    _Q["update_variable"],
                    workspace,
                    path,
                    target,
                    stored,
                    secret,
                    row["description"] if description is None else description,
                )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"cannot rename variable {path} to {target}: {target} already exists in "
                f"workspace {workspace!r}",
                location="path",
            ) from None
        return target


def _lost_keys(workspace: str, path: str) -> GristmillError:
    return GristmillError(
        f"secret {path} cannot be decrypted: workspace {workspace!r} has no data keys",
        workspace=workspace,
        path=path,
    )
