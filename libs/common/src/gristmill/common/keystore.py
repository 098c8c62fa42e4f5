"""Where the keys of secrets live: the master keyring and each workspace's data keys.

* ``load_master_keyring`` reads the deployment's master keys (``GRISTMILL_MASTER_KEY``
  or ``GRISTMILL_MASTER_KEY_FILE``). Standalone mode without either keeps one in
  ``<data dir>/master.key`` (mode 0600), created on the first start and announced in
  the log: back that file up with the database, or secrets become unreadable.
* ``KeyStore`` keeps each workspace's data keys in ``workspace_keys`` (wrapped by the
  active master key; see ``gristmill.common.secrets``) and caches their unwrapped form.
  A workspace's keys are created when its first secret is written.
* ``rotate_secrets`` (the ``gristmill secrets rotate`` command): a new data key per
  workspace, every secret re-encrypted with it in the same transaction, older data keys
  retired, and every data key wrapped by the active master key.

Rotating the master key: put a new entry first and keep the old one after it (in
``GRISTMILL_MASTER_KEY``, or in ``master.key``: a line ``k2:<base64 of 32 random
bytes>`` above ``k1:...``), restart, run ``gristmill secrets rotate``, then remove the
old entry. Only variables hold ciphertexts made with workspace data keys: a rotation
re-encrypts them all, which is what allows retiring the old data keys.

Consistency with caches in other processes: a writer of a secret holds the
workspace's key row ``FOR SHARE`` and checks its ``version`` against the cache, while a
rotation holds it ``FOR UPDATE``; so nothing is ever encrypted with a data key that a
rotation retired. A reader whose cache lacks the data key a ciphertext names reloads.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import GristmillError, InvalidRequest
from gristmill.common.secrets import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    MasterKeyring,
    StoredWorkspaceKeys,
    WorkspaceKeys,
    decode_stored_keys,
    decode_text,
    decrypt_secret,
    encode_stored_keys,
    reencrypt,
    rewrap_stored_keys,
)

__all__ = [
    "MASTER_KEY_FILENAME",
    "DataKeyRotation",
    "KeyStore",
    "SecretsRotation",
    "load_master_keyring",
    "master_key_configured",
    "rewrap_all",
    "rotate_data_key",
    "rotate_secrets",
]

_log = structlog.get_logger(__name__)
_Q = load_queries("variables.sql")

#: The key file standalone mode creates in its data directory.
MASTER_KEY_FILENAME = "master.key"
#: The id given to the master key standalone mode creates.
_LOCAL_MASTER_KEY_ID = "k1"


# -- the master keyring -------------------------------------------------------------


def http_trigger_secret_name(path: str) -> str:
    """The name an HTTP route's signature secret is encrypted under (never a variable's:
    variable paths have no ``:``), so its ciphertext decrypts for that route only."""
    return f"http_trigger:{path}"


def master_key_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``GRISTMILL_MASTER_KEY`` or ``GRISTMILL_MASTER_KEY_FILE`` is set."""
    env = os.environ if environ is None else environ
    return bool(env.get(MASTER_KEY_ENV, "").strip() or env.get(MASTER_KEY_FILE_ENV, "").strip())


def load_master_keyring(
    environ: Mapping[str, str] | None = None,
    data_dir: Path | None = None,
    *,
    create: bool = True,
) -> MasterKeyring:
    """The master keyring of this process.

    From ``GRISTMILL_MASTER_KEY``/``GRISTMILL_MASTER_KEY_FILE`` when either is set.
    Otherwise, with ``data_dir`` (standalone mode), from ``<data_dir>/master.key``,
    which is created (mode 0600, with a log line) when missing, unless ``create`` is
    false (commands that only use existing keys). Without a key, raises
    ``InvalidRequest`` saying which variable to set.
    """
    env = os.environ if environ is None else environ
    if master_key_configured(env) or data_dir is None:
        return MasterKeyring.from_env_or_file(env)
    path = data_dir / MASTER_KEY_FILENAME
    if not path.exists():
        if not create:
            raise InvalidRequest(
                f"no master key: {path} does not exist and neither {MASTER_KEY_ENV} nor "
                f"{MASTER_KEY_FILE_ENV} is set",
                location=MASTER_KEY_ENV,
            )
        _create_key_file(path)
    elif path.stat().st_mode & 0o077:
        _log.warning(
            "master key file is readable by other users; run chmod 600 on it", path=str(path)
        )
    return MasterKeyring.from_file(path)


def _create_key_file(path: Path) -> None:
    """Write a new random master key to ``path`` atomically, unless a racer did first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(MasterKeyring.generate_key()).decode("ascii")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    text = (
        f"# Gristmill master key, created {created}. It unlocks every secret stored in\n"
        "# this deployment's database: back it up with the database and keep it private.\n"
        f"{_LOCAL_MASTER_KEY_ID}:{key}\n"
    )
    temporary = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # A link never replaces: if another process created the file meanwhile, its
            # key wins and ours is dropped before anything was encrypted with it.
            os.link(temporary, path)
        except FileExistsError:
            return
    finally:
        temporary.unlink(missing_ok=True)
    _log.warning(
        "created a master key for secrets; back this file up with the database, or set "
        f"{MASTER_KEY_ENV} / {MASTER_KEY_FILE_ENV} to manage it yourself",
        path=str(path),
    )


# -- workspace data keys ------------------------------------------------------------


class KeyStore:
    """Workspace data keys in Postgres, unwrapped with ``keyring`` and cached in memory.

    One per process; safe to share between tasks. Holds no connection: every method
    takes the caller's.
    """

    __slots__ = ("_cache", "_keyring")

    def __init__(self, keyring: MasterKeyring) -> None:
        self._keyring = keyring
        self._cache: dict[str, tuple[int, WorkspaceKeys]] = {}

    @property
    def keyring(self) -> MasterKeyring:
        return self._keyring

    def forget(self, workspace: str | None = None) -> None:
        """Drop cached keys (of one workspace, or all)."""
        if workspace is None:
            self._cache.clear()
        else:
            self._cache.pop(workspace, None)

    async def lock(self, conn: Conn, workspace: str) -> WorkspaceKeys | None:
        """The workspace's current keys (``None`` if it has none yet), its key row held
        ``FOR SHARE`` until the caller's transaction ends (call inside one)."""
        row = await conn.fetchrow(_Q["lock_workspace_keys_shared"], workspace)
        return None if row is None else self._remember(workspace, row)

    async def lock_or_create(self, conn: Conn, workspace: str) -> WorkspaceKeys:
        """``lock``, creating the workspace's first data key when it has none."""
        keys = await self.lock(conn, workspace)
        if keys is not None:
            return keys
        stored = WorkspaceKeys.create(workspace).wrap(self._keyring)
        await conn.execute(
            _Q["insert_workspace_keys"], workspace, encode_stored_keys(stored).decode()
        )
        # A concurrent creator may have won the insert: either way, read what is stored.
        row = await conn.fetchrow(_Q["lock_workspace_keys_shared"], workspace)
        if row is None:  # pragma: no cover - the row was inserted or already there
            raise GristmillError(f"workspace {workspace!r} has no data keys", workspace=workspace)
        _log.info("workspace data keys ready", workspace=workspace)
        return self._remember(workspace, row)

    async def decrypt(self, conn: Conn | asyncpg.Pool, workspace: str, path: str, text: str) -> str:
        """The plaintext of secret ``path``, whose stored value is ``text``.

        Uses the cache, reloading the keys once when it lacks the data key ``text``
        names, or when decryption fails with cached keys. Raises ``InvalidRequest``
        (naming the secret) when the value does not decrypt for this workspace and path.
        """
        key_id = decode_text(text, location=f"secret {path}").key_id
        cached = self._cache.get(workspace)
        if cached is not None and cached[1].cipher(key_id) is not None:
            try:
                return decrypt_secret(cached[1], path, text)
            except InvalidRequest:
                pass  # perhaps stale (the workspace was re-created): reload and retry
        keys = await self._load(conn, workspace)
        if keys is None:
            raise InvalidRequest(
                f"secret {path} cannot be decrypted: workspace {workspace!r} has no data keys "
                "(the value was copied from elsewhere, or the keys were lost)",
                workspace=workspace,
                path=path,
            )
        return decrypt_secret(keys, path, text)

    async def _load(self, conn: Conn | asyncpg.Pool, workspace: str) -> WorkspaceKeys | None:
        row = await conn.fetchrow(_Q["get_workspace_keys"], workspace)
        if row is None:
            self._cache.pop(workspace, None)
            return None
        return self._remember(workspace, row)

    def _remember(self, workspace: str, row: Any) -> WorkspaceKeys:
        version: int = row["version"]
        cached = self._cache.get(workspace)
        if cached is not None and cached[0] == version:
            return cached[1]
        keys = WorkspaceKeys.unwrap(_decode_row(workspace, row["keys"]), self._keyring)
        self._cache[workspace] = (version, keys)
        return keys


def _decode_row(workspace: str, text: str) -> StoredWorkspaceKeys:
    try:
        stored = decode_stored_keys(text)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GristmillError(
            f"the stored data keys of workspace {workspace!r} are malformed: {exc}",
            workspace=workspace,
        ) from None
    if stored.workspace != workspace:
        raise GristmillError(
            f"the stored data keys of workspace {workspace!r} belong to {stored.workspace!r}",
            workspace=workspace,
        )
    return stored


# -- rotation -----------------------------------------------------------------------


class DataKeyRotation(msgspec.Struct, frozen=True, kw_only=True):
    """What a data-key rotation of one workspace did."""

    workspace: str
    #: The data key ids before the rotation.
    previous_key_ids: tuple[int, ...]
    #: The new active data key.
    active_key_id: int
    #: The ids kept after it (older keys are retired unless asked not to).
    key_ids: tuple[int, ...]
    #: Secrets whose ciphertext was rewritten with the new key.
    reencrypted: int
    #: The master key that now wraps every data key of the workspace.
    master_key_id: str


class SecretsRotation(msgspec.Struct, frozen=True, kw_only=True):
    """What ``rotate_secrets`` did."""

    rotated: tuple[DataKeyRotation, ...]
    #: Workspaces whose data keys were rewrapped by the active master key.
    rewrapped: int


async def rotate_data_key(
    pool: asyncpg.Pool, keyring: MasterKeyring, workspace: str, *, retire_old: bool = True
) -> DataKeyRotation | None:
    """A new data key for ``workspace``, and every secret re-encrypted with it.

    One transaction: the key row is locked (writers of secrets wait), every secret is
    decrypted and encrypted again with the new key, older keys are retired (unless
    ``retire_old`` is false) and the keys are stored wrapped by the active master key.
    ``None`` when the workspace has no data keys (it never stored a secret). A secret
    that does not decrypt aborts the whole rotation with an error naming it.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_Q["lock_workspace_keys"], workspace)
        if row is None:
            return None
        keys = WorkspaceKeys.unwrap(_decode_row(workspace, row["keys"]), keyring)
        previous = keys.key_ids
        rotated = keys.new_data_key()
        paths: list[str] = []
        values: list[str] = []
        for secret in await conn.fetch(_Q["lock_secrets"], workspace):
            paths.append(secret["path"])
            values.append(reencrypt(rotated, secret["path"], secret["value"]))
        if paths:
            await conn.execute(_Q["set_secret_values"], workspace, paths, values)
        routes: list[str] = []
        sealed: list[str] = []
        for secret in await conn.fetch(_Q["lock_http_trigger_secrets"], workspace):
            routes.append(secret["path"])
            name = http_trigger_secret_name(secret["path"])
            sealed.append(reencrypt(rotated, name, secret["value"]))
        if routes:
            await conn.execute(_Q["set_http_trigger_secrets"], workspace, routes, sealed)
        if retire_old:
            for key_id in previous:
                rotated = rotated.without_key(key_id)
        await conn.execute(
            _Q["update_workspace_keys"],
            workspace,
            encode_stored_keys(rotated.wrap(keyring)).decode(),
        )
    _log.info(
        "workspace data key rotated",
        workspace=workspace,
        active_key_id=rotated.active_key_id,
        reencrypted=len(paths) + len(routes),
    )
    return DataKeyRotation(
        workspace=workspace,
        previous_key_ids=previous,
        active_key_id=rotated.active_key_id,
        key_ids=rotated.key_ids,
        reencrypted=len(paths) + len(routes),
        master_key_id=keyring.active_id,
    )


async def rewrap_all(pool: asyncpg.Pool, keyring: MasterKeyring) -> int:
    """Master-key rotation: every workspace's data keys wrapped by the active master key.

    Idempotent; secrets are untouched. Answers how many workspaces changed.
    """
    changed = 0
    for workspace in [r["workspace_id"] for r in await pool.fetch(_Q["list_keyed_workspaces"])]:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_Q["lock_workspace_keys"], workspace)
            if row is None:
                continue
            stored = _decode_row(workspace, row["keys"])
            rewrapped = rewrap_stored_keys(stored, keyring)
            if rewrapped == stored:
                continue
            await conn.execute(
                _Q["update_workspace_keys"], workspace, encode_stored_keys(rewrapped).decode()
            )
            changed += 1
    if changed:
        _log.info("data keys rewrapped", workspaces=changed, master_key_id=keyring.active_id)
    return changed


async def rotate_secrets(
    pool: asyncpg.Pool,
    keyring: MasterKeyring,
    *,
    workspace: str | None = None,
    retire_old: bool = True,
) -> SecretsRotation:
    """``gristmill secrets rotate``: rotate the data key of ``workspace`` (or of every
    workspace that has secrets), then wrap every data key with the active master key.

    Each workspace rotates in its own transaction; a failure stops at that workspace
    (the ones before it stay rotated, which is safe) and raises.
    """
    if workspace is not None:
        workspaces = [workspace]
    else:
        workspaces = [r["workspace_id"] for r in await pool.fetch(_Q["list_keyed_workspaces"])]
    rotated: list[DataKeyRotation] = []
    for name in workspaces:
        outcome = await rotate_data_key(pool, keyring, name, retire_old=retire_old)
        if outcome is not None:
            rotated.append(outcome)
    rewrapped = await rewrap_all(pool, keyring)
    return SecretsRotation(rotated=tuple(rotated), rewrapped=rewrapped)
