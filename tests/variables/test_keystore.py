"""Workspace data keys in Postgres, rotation, and the master key of standalone mode."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from gristmill.common.errors import GristmillError, InvalidRequest
from gristmill.common.keystore import (
    MASTER_KEY_FILENAME,
    KeyStore,
    load_master_keyring,
    master_key_configured,
    rewrap_all,
    rotate_data_key,
    rotate_secrets,
)
from gristmill.common.secrets import (
    MasterKeyring,
    decode_stored_keys,
    decode_text,
    encrypt_secret,
)
from gristmill.common.variables import VariableStore
from tests.variables.conftest import Client

SECRETS = {
    "main": {f"u/admin/s{i}": f"main value {i}" for i in range(5)},
    "other": {"f/x/token": "other value", "u/admin/s0": "other s0"},
}


async def _raw(pool: asyncpg.Pool, workspace: str) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT path, value FROM variables WHERE workspace_id = $1 AND is_secret", workspace
    )
    return {r["path"]: r["value"] for r in rows}


async def _stored(pool: asyncpg.Pool, workspace: str) -> tuple[int, list[int], set[str]]:
    row = await pool.fetchrow(
        "SELECT keys::text AS keys FROM workspace_keys WHERE workspace_id = $1", workspace
    )
    stored = decode_stored_keys(row["keys"])
    return (
        stored.active_key_id,
        [w.key_id for w in stored.keys],
        {w.master_key_id for w in stored.keys},
    )


async def _fill(store: VariableStore) -> None:
    for workspace, secrets in SECRETS.items():
        for path, value in secrets.items():
            await store.create(
                workspace, path, value=value, is_secret=True, description="", created_by="admin"
            )
    await store.create(
        "main", "u/admin/plain", value="plain", is_secret=False, description="", created_by="admin"
    )


async def test_rotation_reencrypts_every_secret(
    users: asyncpg.Pool, keyring: MasterKeyring, api: Client
) -> None:
    gateway_store = VariableStore(users, KeyStore(keyring))
    await _fill(gateway_store)
    # Warm the cache of this "gateway" before the rotation.
    assert await gateway_store.get_value("main", "u/admin/s0") == "main value 0"
    before = {ws: await _raw(users, ws) for ws in SECRETS}

    outcome = await rotate_secrets(users, keyring)

    assert sorted(r.workspace for r in outcome.rotated) == ["main", "other"]
    main = next(r for r in outcome.rotated if r.workspace == "main")
    assert (main.previous_key_ids, main.active_key_id, main.key_ids) == ((1,), 2, (2,))
    assert main.reencrypted == len(SECRETS["main"])
    assert main.master_key_id == "k1"
    for workspace, secrets in SECRETS.items():
        after = await _raw(users, workspace)
        assert set(after) == set(secrets)
        for path in secrets:
            assert after[path] != before[workspace][path]
            assert decode_text(after[path]).key_id == 2
        assert await _stored(users, workspace) == (2, [2], {"k1"})
        # Read back by a fresh process, by the stale gateway cache, and over HTTP.
        fresh = VariableStore(users, KeyStore(keyring))
        for path, value in secrets.items():
            assert await fresh.get_value(workspace, path) == value
            assert await gateway_store.get_value(workspace, path) == value
            response = await api.get(f"/api/w/{workspace}/variables/get_value/{path}")
            assert response.json() == value
    assert await gateway_store.get_value("main", "u/admin/plain") == "plain"

    # The stale gateway writes new secrets with the new key, never with the retired one.
    await gateway_store.create(
        "main", "u/admin/later", value="later", is_secret=True, description="", created_by="admin"
    )
    assert decode_text((await _raw(users, "main"))["u/admin/later"]).key_id == 2
    await gateway_store.update("main", "u/admin/s1", value="changed")
    assert decode_text((await _raw(users, "main"))["u/admin/s1"]).key_id == 2

    # Rotating again moves on to key 3; every value still reads back.
    again = await rotate_data_key(users, keyring, "main")
    assert again is not None
    assert (again.previous_key_ids, again.active_key_id) == ((2,), 3)
    assert await gateway_store.get_value("main", "u/admin/s1") == "changed"
    assert await gateway_store.get_value("main", "u/admin/later") == "later"


async def test_rotation_can_keep_old_keys_and_skips_keyless_workspaces(
    users: asyncpg.Pool, keyring: MasterKeyring
) -> None:
    assert await rotate_data_key(users, keyring, "main") is None
    store = VariableStore(users, KeyStore(keyring))
    await _fill(store)
    kept = await rotate_data_key(users, keyring, "main", retire_old=False)
    assert kept is not None
    assert kept.key_ids == (1, 2)
    assert await _stored(users, "main") == (2, [1, 2], {"k1"})


async def test_a_bad_secret_aborts_the_rotation(
    users: asyncpg.Pool, keyring: MasterKeyring
) -> None:
    store = VariableStore(users, KeyStore(keyring))
    await _fill(store)
    before = await _raw(users, "main")
    # A ciphertext moved to another path no longer authenticates.
    await users.execute(
        "UPDATE variables SET value = $1 WHERE workspace_id = 'main' AND path = 'u/admin/s3'",
        before["u/admin/s0"],
    )
    with pytest.raises(InvalidRequest, match=r"secret u/admin/s3 cannot be decrypted"):
        await rotate_data_key(users, keyring, "main")
    after = await _raw(users, "main")
    assert after["u/admin/s1"] == before["u/admin/s1"]
    assert await _stored(users, "main") == (1, [1], {"k1"})


async def test_master_key_rotation_rewraps_data_keys(users: asyncpg.Pool) -> None:
    old_key, new_key = MasterKeyring.generate_key(), MasterKeyring.generate_key()
    old = MasterKeyring([("k1", old_key)])
    store = VariableStore(users, KeyStore(old))
    await _fill(store)
    secrets_before = await _raw(users, "main")
    # Step 1 of a master-key rotation: the new key first, the old one kept after it.
    both = MasterKeyring([("k2", new_key), ("k1", old_key)])

    assert await rewrap_all(users, both) == 2
    assert await rewrap_all(users, both) == 0  # idempotent
    for workspace in SECRETS:
        assert await _stored(users, workspace) == (1, [1], {"k2"})
    # Secret values did not change; the new master key alone reads them.
    assert await _raw(users, "main") == secrets_before
    fresh = VariableStore(users, KeyStore(MasterKeyring([("k2", new_key)])))
    for path, value in SECRETS["main"].items():
        assert await fresh.get_value("main", path) == value
    # The old master key alone no longer can: the error names the key it lacks.
    with pytest.raises(GristmillError, match="master key 'k2'"):
        await VariableStore(users, KeyStore(old)).get_value("main", "u/admin/s0")


def test_master_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with capture_logs() as logs:
        first = load_master_keyring({}, data_dir)
    path = data_dir / MASTER_KEY_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any(
        "created a master key" in entry["event"] and entry.get("path") == str(path)
        for entry in logs
    )
    assert first.key_ids == ("k1",)
    # Later starts read the same key; nothing is logged about creating one.
    with capture_logs() as logs:
        second = load_master_keyring({}, data_dir)
    assert not any("created a master key" in entry["event"] for entry in logs)
    wrapped = first.wrap(os.urandom(32), workspace="main", key_id=1)
    assert second.unwrap(wrapped, workspace="main") is not None
    assert [p.name for p in data_dir.iterdir()] == [MASTER_KEY_FILENAME]


def test_master_key_from_the_environment_wins(tmp_path: Path) -> None:
    key = base64.b64encode(MasterKeyring.generate_key()).decode()
    env = {"GRISTMILL_MASTER_KEY": f"prod:{key}"}
    assert master_key_configured(env)
    assert not master_key_configured({"GRISTMILL_MASTER_KEY": "  "})
    keyring = load_master_keyring(env, tmp_path)
    assert keyring.key_ids == ("prod",)
    assert not (tmp_path / MASTER_KEY_FILENAME).exists()
    key_file = tmp_path / "keys"
    key_file.write_text(f"# comment\nfile:{key}\n")
    from_file = load_master_keyring({"GRISTMILL_MASTER_KEY_FILE": str(key_file)}, tmp_path)
    assert from_file.key_ids == ("file",)
    # Commands that only use existing keys never create one.
    with pytest.raises(InvalidRequest, match=r"master\.key does not exist"):
        load_master_keyring({}, tmp_path / "empty", create=False)
    assert not (tmp_path / "empty").exists()
    # No key and no data directory (a distributed service): say what to set.
    with pytest.raises(InvalidRequest, match="GRISTMILL_MASTER_KEY") as raised:
        load_master_keyring({}, None)
    assert raised.value.location == "GRISTMILL_MASTER_KEY"


async def test_rotation_waits_for_writers_and_covers_their_secrets(
    users: asyncpg.Pool, keyring: MasterKeyring
) -> None:
    store = VariableStore(users, KeyStore(keyring))
    await _fill(store)
    writer_keys = KeyStore(keyring)
    async with users.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        keys = await writer_keys.lock(conn, "main")  # a writer in the middle of its work
        assert keys is not None
        rotation = asyncio.ensure_future(rotate_data_key(users, keyring, "main"))
        await asyncio.sleep(0.3)
        assert not rotation.done()  # it waits for the writer's share lock
        await conn.execute(
            "INSERT INTO variables (workspace_id, path, value, is_secret, created_by) "
            "VALUES ('main', 'u/admin/during', $1, true, 'admin')",
            encrypt_secret(keys, "u/admin/during", "written during"),
        )
        await transaction.commit()
    outcome = await rotation
    assert outcome is not None
    assert outcome.reencrypted == len(SECRETS["main"]) + 1
    raw = await _raw(users, "main")
    assert {decode_text(v).key_id for v in raw.values()} == {2}
    assert await store.get_value("main", "u/admin/during") == "written during"
