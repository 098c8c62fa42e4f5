"""Resource types, resources, interpolation and scripts' state over HTTP."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.variables.conftest import ALICE_TOKEN, Client

R = "/api/w/main/resources"
V = "/api/w/main/variables"

PG_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "host": {"type": "string", "minLength": 1},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "password": {"type": "string"},
        "sslmode": {"type": "string", "enum": ["disable", "require"]},
        "options": {
            "type": "object",
            "properties": {"timeouts": {"type": "array", "items": {"type": "number"}}},
        },
    },
    "required": ["host", "port"],
}


async def _type(api: Client, name: str, schema: Any = None) -> None:
    response = await api.post(
        f"{R}/type/create", json={"name": name, "schema": schema, "description": name}
    )
    assert response.status_code == 201, response.text


async def _resource(api: Client, path: str, value: Any, kind: str = "any") -> None:
    response = await api.post(
        f"{R}/create", json={"path": path, "value": value, "resource_type": kind}
    )
    assert response.status_code == 201, response.text
    assert response.text == path


async def _secret(api: Client, path: str, value: str, *, secret: bool = True) -> None:
    response = await api.post(
        f"{V}/create",
        json={"path": path, "value": value, "is_secret": secret, "description": ""},
    )
    assert response.status_code == 201, response.text


async def test_resource_types(api: Client) -> None:
    await _type(api, "postgresql", PG_SCHEMA)
    got = (await api.get(f"{R}/type/get/postgresql")).json()
    assert got["name"] == "postgresql"
    assert got["schema"] == PG_SCHEMA
    assert (await api.get(f"{R}/type/exists/postgresql")).json() is True
    assert (await api.get(f"{R}/type/exists/mysql")).json() is False
    assert "postgresql" in (await api.get(f"{R}/type/listnames")).json()
    assert [t["name"] for t in (await api.get(f"{R}/type/list")).json()] == ["postgresql"]

    again = await api.post(f"{R}/type/create", json={"name": "postgresql"})
    assert again.status_code == 409
    bad_name = await api.post(f"{R}/type/create", json={"name": "no spaces"})
    assert bad_name.status_code == 400
    bad_schema = await api.post(
        f"{R}/type/create",
        json={"name": "broken", "schema": {"properties": {"x": {"type": "strnig"}}}},
    )
    assert bad_schema.status_code == 400
    assert bad_schema.json()["error"]["location"] == "schema.properties.x.type"
    assert "strnig" in bad_schema.json()["error"]["message"]

    updated = await api.post(f"{R}/type/update/postgresql", json={"description": "PG"})
    assert updated.status_code == 200, updated.text
    got = (await api.get(f"{R}/type/get/postgresql")).json()
    assert (got["description"], got["schema"]) == ("PG", PG_SCHEMA)

    # A type in use cannot go; an unused one can (DELETE as documented, POST too).
    await _resource(api, "u/admin/db", {"host": "h", "port": 5432}, "postgresql")
    in_use = await api.delete(f"{R}/type/delete/postgresql")
    assert in_use.status_code == 409
    assert "u/admin/db" in in_use.json()["error"]["message"]
    await api.delete(f"{R}/delete/u/admin/db")
    assert (await api.post(f"{R}/type/delete/postgresql")).status_code == 200
    assert (await api.get(f"{R}/type/get/postgresql")).status_code == 404
    assert (await api.delete(f"{R}/type/delete/postgresql")).status_code == 404


async def test_resource_lifecycle(api: Client) -> None:
    value = {"url": "https://example.test", "retries": 3, "tags": ["a", "b"], "nested": {"x": None}}
    await _resource(api, "f/ops/endpoint", value)
    got = (await api.get(f"{R}/get/f/ops/endpoint")).json()
    assert got["path"] == "f/ops/endpoint"
    assert got["value"] == value
    assert got["resource_type"] == "any"
    assert got["is_oauth"] is False
    assert (await api.get(f"{R}/get_value/f/ops/endpoint")).json() == value
    assert (await api.get(f"{R}/exists/f/ops/endpoint")).json() is True

    again = await api.post(
        f"{R}/create", json={"path": "f/ops/endpoint", "value": 1, "resource_type": "any"}
    )
    assert again.status_code == 409
    replaced = await api.post(
        f"{R}/create",
        params={"update_if_exists": "true"},
        json={"path": "f/ops/endpoint", "value": 1, "resource_type": "any"},
    )
    assert replaced.status_code == 201
    assert (await api.get(f"{R}/get_value/f/ops/endpoint")).json() == 1

    assert (
        await api.post(f"{R}/update_value/f/ops/endpoint", json={"value": [1]})
    ).status_code == 200
    assert (await api.get(f"{R}/get_value/f/ops/endpoint")).json() == [1]
    renamed = await api.post(
        f"{R}/update/f/ops/endpoint", json={"path": "f/ops/moved", "description": "moved"}
    )
    assert renamed.status_code == 200, renamed.text
    got = (await api.get(f"{R}/get/f/ops/moved")).json()
    assert (got["value"], got["description"]) == ([1], "moved")
    assert (await api.get(f"{R}/get/f/ops/endpoint")).status_code == 404

    assert (await api.delete(f"{R}/delete/f/ops/moved")).status_code == 200
    missing = await api.get(f"{R}/get/f/ops/moved")
    assert missing.status_code == 404
    assert "resource f/ops/moved not found" in missing.json()["error"]["message"]
    unknown_type = await api.post(
        f"{R}/create", json={"path": "u/admin/x", "value": {}, "resource_type": "nosuchtype"}
    )
    assert unknown_type.status_code == 400
    assert unknown_type.json()["error"]["location"] == "resource_type"
    assert "nosuchtype" in unknown_type.json()["error"]["message"]
    bad_path = await api.post(
        f"{R}/create", json={"path": "admin/x", "value": {}, "resource_type": "any"}
    )
    assert bad_path.status_code == 400
    assert bad_path.json()["error"]["location"] == "path"


async def test_list_filters(api: Client) -> None:
    await _type(api, "postgresql", PG_SCHEMA)
    await _type(api, "smtp")
    await _resource(api, "f/a/pg", {"host": "h", "port": 1}, "postgresql")
    await _resource(api, "f/b/pg", {"host": "h", "port": 2}, "postgresql")
    await _resource(api, "f/a/mail", {}, "smtp")
    await _resource(api, "u/admin/other", {})

    async def paths(**params: Any) -> list[str]:
        response = await api.get(f"{R}/list", params=params)
        assert response.status_code == 200, response.text
        return [r["path"] for r in response.json()]

    assert await paths() == ["f/a/mail", "f/a/pg", "f/b/pg", "u/admin/other"]
    assert await paths(resource_type="postgresql") == ["f/a/pg", "f/b/pg"]
    assert await paths(resource_type="postgresql,smtp", path_start="f/a/") == ["f/a/mail", "f/a/pg"]
    assert await paths(resource_type_exclude="postgresql") == ["f/a/mail", "u/admin/other"]
    assert await paths(page=2, per_page=3) == ["u/admin/other"]


async def test_values_are_checked_against_the_type_schema(api: Client) -> None:
    await _type(api, "postgresql", PG_SCHEMA)

    async def create(value: Any) -> Any:
        return await api.post(
            f"{R}/create",
            json={"path": "u/admin/pg", "value": value, "resource_type": "postgresql"},
        )

    cases = [
        ({"port": 5432}, "value.host", "field 'host' is required"),
        ({"host": "h", "port": "5432"}, "value.port", "field 'port' must be integer, got string"),
        ({"host": "h", "port": 70000}, "value.port", "must be at most 65535"),
        ({"host": "", "port": 1}, "value.host", "at least 1 characters"),
        ({"host": "h", "port": 1, "sslmode": "maybe"}, "value.sslmode", 'one of "disable"'),
        (
            {"host": "h", "port": 1, "options": {"timeouts": [1, "x"]}},
            "value.options.timeouts[1]",
            "must be number",
        ),
        ([1, 2], "value", "the value must be object, got array"),
    ]
    for value, location, message in cases:
        response = await create(value)
        assert response.status_code == 400, (value, response.text)
        error = response.json()["error"]
        assert error["location"] == location, (value, error)
        assert message in error["message"], (value, error)
        assert "postgresql" in error["message"]
    assert (await api.get(f"{R}/exists/u/admin/pg")).json() is False

    # References stand for values resolved later: they pass whatever the field's type.
    ok = await create({"host": "$var:u/admin/host", "port": "$var:u/admin/port", "x": 1})
    assert ok.status_code == 201, ok.text
    # Updates are checked too, against the new type when it changes.
    bad = await api.post(f"{R}/update_value/u/admin/pg", json={"value": {"host": "h"}})
    assert bad.status_code == 400
    assert bad.json()["error"]["location"] == "value.port"
    await _type(api, "strict", {"type": "object", "additionalProperties": False})
    retyped = await api.post(f"{R}/update/u/admin/pg", json={"resource_type": "strict"})
    assert retyped.status_code == 400
    assert "is not allowed" in retyped.json()["error"]["message"]


async def test_interpolation_resolves_variables_and_resources(api: Client) -> None:
    await _secret(api, "u/admin/pg_password", "s3cr3t-pw")
    await _secret(api, "f/shared/api_token", "tok-123")
    await _secret(api, "u/admin/host", "db.internal", secret=False)
    await _resource(api, "u/admin/creds", {"password": "$var:u/admin/pg_password", "user": "app"})
    await _resource(
        api,
        "u/admin/service",
        {
            "db": "$res:u/admin/creds",
            "host": "$var:u/admin/host",
            "tokens": ["$var:f/shared/api_token", "literal", {"again": "$res:u/admin/creds"}],
            "not_a_reference": "costs $var:u/admin/host",
        },
    )
    raw = (await api.get(f"{R}/get_value/u/admin/service")).json()
    assert raw["db"] == "$res:u/admin/creds"
    interpolated = await api.get(f"{R}/get_value_interpolated/u/admin/service")
    assert interpolated.status_code == 200, interpolated.text
    creds = {"password": "s3cr3t-pw", "user": "app"}
    assert interpolated.json() == {
        "db": creds,
        "host": "db.internal",
        "tokens": ["tok-123", "literal", {"again": creds}],
        "not_a_reference": "costs $var:u/admin/host",
    }
    # A resource whose whole value is a reference.
    await _resource(api, "u/admin/alias", "$res:u/admin/creds")
    assert (await api.get(f"{R}/get_value_interpolated/u/admin/alias")).json() == creds


async def test_interpolation_reports_cycles_and_missing_targets(api: Client) -> None:
    await _resource(api, "u/admin/a", {"next": "$res:u/admin/b"})
    await _resource(api, "u/admin/b", {"next": ["$res:u/admin/c"]})
    await _resource(api, "u/admin/c", {"back": "$res:u/admin/a"})
    cycle = await api.get(f"{R}/get_value_interpolated/u/admin/a")
    assert cycle.status_code == 400
    assert (
        "resource reference cycle: u/admin/a -> u/admin/b -> u/admin/c -> u/admin/a"
        in cycle.json()["error"]["message"]
    )
    await _resource(api, "u/admin/self", {"me": "$res:u/admin/self"})
    self_cycle = await api.get(f"{R}/get_value_interpolated/u/admin/self")
    assert "u/admin/self -> u/admin/self" in self_cycle.json()["error"]["message"]

    await _resource(api, "u/admin/outer", {"inner": "$res:u/admin/broken"})
    await _resource(api, "u/admin/broken", {"deep": {"pw": "$var:u/admin/nope"}})
    missing = await api.get(f"{R}/get_value_interpolated/u/admin/outer")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert "variable u/admin/nope not found" in error["message"]
    assert "resource u/admin/broken" in error["message"]
    assert error["location"] == "$.deep.pw"

    await _resource(api, "u/admin/dangling", ["$res:u/admin/gone"])
    dangling = await api.get(f"{R}/get_value_interpolated/u/admin/dangling")
    assert dangling.status_code == 404
    assert "resource u/admin/gone not found" in dangling.json()["error"]["message"]

    await _resource(api, "u/admin/garbled", {"x": "$var:nowhere"})
    garbled = await api.get(f"{R}/get_value_interpolated/u/admin/garbled")
    assert garbled.status_code == 400
    assert "'$var:nowhere'" in garbled.json()["error"]["message"]


async def test_interpolation_respects_access(api: Client) -> None:
    alice = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    await _secret(api, "u/admin/root_pw", "top")
    created = await api.post(
        f"{R}/create",
        headers=alice,
        json={
            "path": "u/alice/sneaky",
            "value": {"pw": "$var:u/admin/root_pw"},
            "resource_type": "any",
        },
    )
    assert created.status_code == 201, created.text
    refused = await api.get(f"{R}/get_value_interpolated/u/alice/sneaky", headers=alice)
    assert refused.status_code == 403
    assert "top" not in refused.text
    assert (await api.get(f"{R}/get/u/admin/nothing", headers=alice)).status_code == 403


async def test_state_through_the_wmill_client_calls(api: Client, pg_pool: asyncpg.Pool) -> None:
    """``wmill.get_state``/``set_state``: the exact sequence of calls the client makes."""
    state = "u/admin/preview/state"
    # get_state on a fresh path: get_value_interpolated fails -> the client answers None.
    first = await api.get(f"{R}/get_value_interpolated/{state}")
    assert first.status_code == 404
    # set_state: get (404) -> create with type "state" (no description sent).
    assert (await api.get(f"{R}/get/{state}")).status_code == 404
    created = await api.post(
        f"{R}/create", json={"path": state, "value": {"count": 1}, "resource_type": "state"}
    )
    assert created.status_code == 201, created.text
    assert (await api.get(f"{R}/get_value_interpolated/{state}")).json() == {"count": 1}
    # set_state again: get (200) -> update_value.
    assert (await api.get(f"{R}/get/{state}")).status_code == 200
    updated = await api.post(f"{R}/update_value/{state}", json={"value": {"count": 2}})
    assert updated.status_code == 200
    assert (await api.get(f"{R}/get_value_interpolated/{state}")).json() == {"count": 2}
    # State may be any JSON, including null.
    await api.post(f"{R}/update_value/{state}", json={"value": None})
    cleared = await api.get(f"{R}/get_value_interpolated/{state}")
    assert cleared.status_code == 200
    assert cleared.content == b"null"
    # The state type was created on first use, once.
    kind = (await api.get(f"{R}/type/get/state")).json()
    assert kind["schema"] is None
    assert await pg_pool.fetchval("SELECT count(*) FROM resource_types WHERE name = 'state'") == 1


async def test_openapi_documents_the_endpoints(api: Client) -> None:
    document = (await api.get("/api/openapi.json")).json()
    paths = document["paths"]
    assert "/api/w/{workspace}/variables/get/{path}" in paths
    assert "/api/w/{workspace}/resources/get_value_interpolated/{path}" in paths
    assert set(paths["/api/w/{workspace}/resources/delete/{path}"]) >= {"delete", "post"}
