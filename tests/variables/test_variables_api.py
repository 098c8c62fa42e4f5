"""Variables and secrets over HTTP, with the rows they leave in Postgres."""

from __future__ import annotations

import asyncio
import base64

import asyncpg
import pytest

from gristmill.common.secrets import MasterKeyring, decode_text
from tests.variables.conftest import ALICE_TOKEN, Client, client_of, gateway_app

V = "/api/w/main/variables"
SECRET = "correct horse battery staple"


async def _create(api: Client, path: str, value: str, *, secret: bool = False) -> None:
    response = await api.post(
        f"{V}/create",
        json={"path": path, "value": value, "is_secret": secret, "description": "d"},
    )
    assert response.status_code == 201, response.text
    assert response.text == path


async def _raw(pool: asyncpg.Pool, path: str, workspace: str = "main") -> str:
    value: str = await pool.fetchval(
        "SELECT value FROM variables WHERE workspace_id = $1 AND path = $2", workspace, path
    )
    return value


async def test_plain_variable_lifecycle(api: Client, pg_pool: asyncpg.Pool) -> None:
    await _create(api, "u/admin/greeting", "hello")
    assert await _raw(pg_pool, "u/admin/greeting") == "hello"
    assert (await api.get(f"{V}/exists/u/admin/greeting")).json() is True
    assert (await api.get(f"{V}/get_value/u/admin/greeting")).json() == "hello"
    got = (await api.get(f"{V}/get/u/admin/greeting")).json()
    assert got["path"] == "u/admin/greeting"
    assert got["value"] == "hello"
    assert got["is_secret"] is False
    assert got["description"] == "d"
    assert got["workspace_id"] == "main"
    assert got["extra_perms"] == {}

    updated = await api.post(
        f"{V}/update/u/admin/greeting", json={"value": "bonjour", "description": "fr"}
    )
    assert updated.status_code == 200, updated.text
    got = (await api.get(f"{V}/get/u/admin/greeting")).json()
    assert (got["value"], got["description"]) == ("bonjour", "fr")

    # Windmill documents DELETE; POST works too.
    assert (await api.delete(f"{V}/delete/u/admin/greeting")).status_code == 200
    assert (await api.get(f"{V}/exists/u/admin/greeting")).json() is False
    await _create(api, "u/admin/greeting", "again")
    assert (await api.post(f"{V}/delete/u/admin/greeting")).status_code == 200
    missing = await api.get(f"{V}/get/u/admin/greeting")
    assert missing.status_code == 404
    assert "u/admin/greeting" in missing.json()["error"]["message"]


async def test_secret_is_encrypted_at_rest(api: Client, pg_pool: asyncpg.Pool) -> None:
    await _create(api, "u/admin/db_password", SECRET, secret=True)
    raw = await _raw(pg_pool, "u/admin/db_password")
    assert raw.startswith("$gm1$")
    assert decode_text(raw).key_id == 1
    encoded = SECRET.encode()
    forms = [encoded, base64.b64encode(encoded), base64.urlsafe_b64encode(encoded)]
    for form in forms:
        text = form.decode()
        assert text not in raw
        assert text.rstrip("=") not in raw
    # Nowhere else in the database either (the wrapped keys, a dump of every row).
    dump = await pg_pool.fetchval(
        "SELECT string_agg(t::text, '') FROM ("
        " SELECT to_jsonb(v) AS t FROM variables v"
        " UNION ALL SELECT to_jsonb(k) FROM workspace_keys k) AS rows"
    )
    assert SECRET not in dump
    assert base64.b64encode(encoded).decode().rstrip("=") not in dump
    # Equal values encrypt differently (fresh nonce).
    await _create(api, "u/admin/db_password_2", SECRET, secret=True)
    assert await _raw(pg_pool, "u/admin/db_password_2") != raw


async def test_secret_shown_only_when_asked(api: Client) -> None:
    await _create(api, "u/admin/token", SECRET, secret=True)
    await _create(api, "u/admin/plain", "visible")

    hidden = (await api.get(f"{V}/get/u/admin/token")).json()
    assert hidden["is_secret"] is True
    assert hidden["value"] is None
    assert SECRET not in str(hidden)
    hidden = (await api.get(f"{V}/get/u/admin/token", params={"decrypt_secret": "false"})).json()
    assert hidden["value"] is None

    listing = await api.get(f"{V}/list")
    assert listing.status_code == 200
    by_path = {v["path"]: v for v in listing.json()}
    assert by_path["u/admin/token"]["value"] is None
    assert by_path["u/admin/plain"]["value"] == "visible"
    assert SECRET not in listing.text

    shown = (await api.get(f"{V}/get/u/admin/token", params={"decrypt_secret": "true"})).json()
    assert shown["value"] == SECRET
    assert (await api.get(f"{V}/get_value/u/admin/token")).json() == SECRET

    sealed = (await api.get(f"{V}/get/u/admin/token", params={"include_encrypted": "true"})).json()
    assert sealed["value"].startswith("$gm1$")


async def test_list_filters_by_path_start_and_pages(api: Client) -> None:
    for name in ("a", "b", "c"):
        await _create(api, f"f/team/{name}", name)
    await _create(api, "u/admin/x", "x")
    listing = await api.get(f"{V}/list", params={"path_start": "f/team/"})
    paths = [v["path"] for v in listing.json()]
    assert paths == ["f/team/a", "f/team/b", "f/team/c"]
    page = await api.get(f"{V}/list", params={"page": 2, "per_page": 2})
    assert [v["path"] for v in page.json()] == ["f/team/c", "u/admin/x"]
    assert (await api.get(f"{V}/list", params={"page": 0})).status_code == 400


async def test_copied_ciphertext_does_not_decrypt(api: Client, pg_pool: asyncpg.Pool) -> None:
    await _create(api, "u/admin/key", SECRET, secret=True)
    # The other workspace gets data keys of its own (a secret there), and a plain row.
    other = await api.post(
        "/api/w/other/variables/create",
        json={"path": "u/admin/mine", "value": "x", "is_secret": True, "description": ""},
    )
    assert other.status_code == 201, other.text
    await api.post(
        "/api/w/other/variables/create",
        json={"path": "u/admin/key", "value": "decoy", "is_secret": True, "description": ""},
    )
    stolen = await _raw(pg_pool, "u/admin/key")
    await pg_pool.execute(
        "UPDATE variables SET value = $1 WHERE workspace_id = 'other' AND path = 'u/admin/key'",
        stolen,
    )
    response = await api.get("/api/w/other/variables/get_value/u/admin/key")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "secret u/admin/key cannot be decrypted" in message
    assert "wrong workspace" in message
    assert SECRET not in response.text

    # Same workspace, another path.
    await _create(api, "u/admin/elsewhere", "placeholder", secret=True)
    await pg_pool.execute(
        "UPDATE variables SET value = $1 WHERE workspace_id = 'main' AND path = $2",
        stolen,
        "u/admin/elsewhere",
    )
    response = await api.get(f"{V}/get_value/u/admin/elsewhere")
    assert response.status_code == 400
    assert "secret u/admin/elsewhere cannot be decrypted" in response.json()["error"]["message"]
    # The original still reads.
    assert (await api.get(f"{V}/get_value/u/admin/key")).json() == SECRET


async def test_rename_reencrypts_and_toggling_secrecy(api: Client, pg_pool: asyncpg.Pool) -> None:
    await _create(api, "u/admin/old", SECRET, secret=True)
    before = await _raw(pg_pool, "u/admin/old")
    renamed = await api.post(f"{V}/update/u/admin/old", json={"path": "f/ops/new"})
    assert renamed.status_code == 200, renamed.text
    after = await _raw(pg_pool, "f/ops/new")
    assert after.startswith("$gm1$")
    assert after != before
    assert (await api.get(f"{V}/get_value/f/ops/new")).json() == SECRET
    assert (await api.get(f"{V}/exists/u/admin/old")).json() is False

    # Secret -> plain stores the clear value; plain -> secret encrypts it.
    await api.post(f"{V}/update/f/ops/new", json={"is_secret": False})
    assert await _raw(pg_pool, "f/ops/new") == SECRET
    await api.post(f"{V}/update/f/ops/new", json={"is_secret": True, "value": "v2"})
    assert (await _raw(pg_pool, "f/ops/new")).startswith("$gm1$")
    assert (await api.get(f"{V}/get_value/f/ops/new")).json() == "v2"

    # Renaming onto an existing path is a conflict.
    await _create(api, "u/admin/taken", "t")
    conflict = await api.post(f"{V}/update/f/ops/new", json={"path": "u/admin/taken"})
    assert conflict.status_code == 409
    assert "u/admin/taken" in conflict.json()["error"]["message"]


async def test_already_encrypted_round_trip(api: Client) -> None:
    """A sync tool reads a secret's ciphertext and writes it back without the plaintext."""
    await _create(api, "u/admin/synced", SECRET, secret=True)
    sealed = (
        await api.get(f"{V}/get/u/admin/synced", params={"include_encrypted": "true"})
    ).json()["value"]
    await api.delete(f"{V}/delete/u/admin/synced")
    restored = await api.post(
        f"{V}/create",
        params={"already_encrypted": "true"},
        json={"path": "u/admin/synced", "value": sealed, "is_secret": True, "description": ""},
    )
    assert restored.status_code == 201, restored.text
    assert (await api.get(f"{V}/get_value/u/admin/synced")).json() == SECRET
    # A ciphertext made for another path is refused.
    elsewhere = await api.post(
        f"{V}/create",
        params={"already_encrypted": "true"},
        json={"path": "u/admin/copy", "value": sealed, "is_secret": True, "description": ""},
    )
    assert elsewhere.status_code == 400
    assert "cannot be decrypted" in elsewhere.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("noowner", "must start with"),
        ("x/admin/a", "must start with"),
        ("u/admin", "needs a name"),
        ("u/admin/", "needs a name"),
        ("u/ad min/a", "letters, digits"),
        ("u/admin/a//b", "letters, digits"),
        ("u/admin/../b", "'.' or '..'"),
        ("u/admin/" + "a" * 300, "at most 255"),
    ],
)
async def test_bad_paths_are_rejected(api: Client, path: str, reason: str) -> None:
    response = await api.post(
        f"{V}/create", json={"path": path, "value": "v", "is_secret": False, "description": ""}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["location"] == "path"
    assert reason in error["message"]


async def test_conflicts_not_found_and_bad_bodies(api: Client) -> None:
    await _create(api, "u/admin/once", "1")
    again = await api.post(
        f"{V}/create",
        json={"path": "u/admin/once", "value": "2", "is_secret": False, "description": ""},
    )
    assert again.status_code == 409
    assert "u/admin/once already exists" in again.json()["error"]["message"]
    for call in (
        api.get(f"{V}/get/u/admin/nothing"),
        api.get(f"{V}/get_value/u/admin/nothing"),
        api.post(f"{V}/update/u/admin/nothing", json={"value": "x"}),
        api.delete(f"{V}/delete/u/admin/nothing"),
    ):
        response = await call
        assert response.status_code == 404, response.text
        assert "variable u/admin/nothing not found" in response.json()["error"]["message"]
    not_a_string = await api.post(
        f"{V}/create", json={"path": "u/admin/n", "value": 3, "is_secret": False, "description": ""}
    )
    assert not_a_string.status_code == 400
    unknown_workspace = await api.post(
        "/api/w/nowhere/variables/create",
        json={"path": "u/admin/n", "value": "v", "is_secret": False, "description": ""},
    )
    assert unknown_workspace.status_code == 404
    assert "nowhere" in unknown_workspace.json()["error"]["message"]


async def test_users_reach_only_their_own_and_folder_paths(api: Client) -> None:
    await _create(api, "u/admin/private", SECRET, secret=True)
    await _create(api, "f/shared/config", "shared")
    alice = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    created = await api.post(
        f"{V}/create",
        headers=alice,
        json={"path": "u/alice/mine", "value": "a", "is_secret": True, "description": ""},
    )
    assert created.status_code == 201, created.text
    assert (await api.get(f"{V}/get_value/u/alice/mine", headers=alice)).json() == "a"
    assert (await api.get(f"{V}/get_value/f/shared/config", headers=alice)).json() == "shared"
    for call in (
        api.get(f"{V}/get_value/u/admin/private", headers=alice),
        api.get(f"{V}/get/u/admin/private", params={"decrypt_secret": "true"}, headers=alice),
        api.post(f"{V}/update/u/admin/private", json={"value": "x"}, headers=alice),
        api.post(f"{V}/update/u/alice/mine", json={"path": "u/admin/stolen"}, headers=alice),
        api.post(
            f"{V}/create",
            headers=alice,
            json={"path": "u/admin/planted", "value": "x", "is_secret": False, "description": ""},
        ),
    ):
        response = await call
        assert response.status_code == 403, response.text
        assert SECRET not in response.text
    listed = {v["path"] for v in (await api.get(f"{V}/list", headers=alice)).json()}
    assert listed == {"u/alice/mine", "f/shared/config"}
    # The admin sees everything.
    assert (await api.get(f"{V}/get_value/u/alice/mine")).json() == "a"


async def test_wmill_client_set_variable_calls(api: Client) -> None:
    """What ``wmill.set_variable`` sends: get (404 -> create, else update with the value)."""
    path = "u/admin/counter"
    assert (await api.get(f"{V}/get/{path}")).status_code == 404
    created = await api.post(
        f"{V}/create", json={"path": path, "value": "1", "is_secret": True, "description": ""}
    )
    assert created.status_code == 201
    assert (await api.get(f"{V}/get/{path}")).status_code == 200
    assert (await api.post(f"{V}/update/{path}", json={"value": "2"})).status_code == 200
    assert (await api.get(f"{V}/get_value/{path}")).json() == "2"
    assert (await api.get(f"{V}/get/{path}")).json()["is_secret"] is True


async def test_without_master_key_plain_variables_work(users: asyncpg.Pool) -> None:
    app = gateway_app(users, None)
    async with client_of(app) as client:
        await _create(client, "u/admin/plain", "ok")
        assert (await client.get(f"{V}/get_value/u/admin/plain")).json() == "ok"
        refused = await client.post(
            f"{V}/create",
            json={"path": "u/admin/s", "value": "x", "is_secret": True, "description": ""},
        )
        assert refused.status_code == 500
        assert "GRISTMILL_MASTER_KEY" in refused.json()["error"]["message"]
        assert (await client.get(f"{V}/exists/u/admin/s")).json() is False


async def test_keys_created_once_under_concurrent_first_secrets(
    users: asyncpg.Pool, keyring: MasterKeyring
) -> None:
    # Two gateways (two caches) racing to create the workspace's first data key.
    apps = [gateway_app(users, keyring) for _ in range(2)]
    async with (
        client_of(apps[0]) as one,
        client_of(apps[1]) as two,
    ):
        await asyncio.gather(
            *(
                client.post(
                    f"{V}/create",
                    json={
                        "path": f"u/admin/s{i}",
                        "value": f"v{i}",
                        "is_secret": True,
                        "description": "",
                    },
                )
                for i, client in enumerate([one, two] * 4)
            )
        )
        assert await users.fetchval("SELECT count(*) FROM workspace_keys") == 1
        for i in range(8):
            for client in (one, two):
                assert (await client.get(f"{V}/get_value/u/admin/s{i}")).json() == f"v{i}"
