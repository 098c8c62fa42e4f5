"""HTTP routes against a real ``gristmill up``: the management API and ``/api/r/...``."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import pytest

from gristmill.common.db.pool import create_pool
from gristmill.common.errors import InvalidRequest
from gristmill.common.http_triggers import parse_route
from gristmill.common.tokens import create_token
from tests.scripts.standalone import Standalone, wait_result

ECHO = (
    "def main(id: str, name: str = 'x', n: str = '0'):\n"
    "    return {'id': id, 'name': name, 'n': n}\n"
)
CUSTOM = (
    "def main(kind: str):\n"
    "    return {'windmill_status_code': 201, 'windmill_headers': {'x-kind': kind},\n"
    "            'result': {'made': kind}}\n"
)
RAW = "def main(raw_body: str, headers: dict):\n    return [raw_body, headers.get('x-test')]\n"
SECRET = "s3cret"


def _script(client: httpx.Client, path: str, content: str) -> None:
    response = client.post(
        "/api/w/main/scripts/create",
        json={
            "path": path,
            "content": content,
            "language": "python3",
            "summary": "",
            "description": "",
        },
    )
    assert response.status_code == 201, response.text


def _trigger(client: httpx.Client, path: str, **fields: Any) -> httpx.Response:
    body = {"path": path, "http_method": "post", "is_flow": False} | fields
    return client.post("/api/w/main/http_triggers/create", json=body)


def _created(client: httpx.Client, path: str, **fields: Any) -> None:
    response = _trigger(client, path, **fields)
    assert response.status_code == 201, response.text
    assert response.text == path


def test_parse_route() -> None:
    assert parse_route("/orders/:id/")[1:] == ([None, "id"], "orders/:")
    assert parse_route("orders/{id}")[2] == "orders/:"
    for bad in ("", "a//b", "a/:1x", "a/:x/:x", "a/b c", "a/{x"):
        with pytest.raises(InvalidRequest):
            parse_route(bad)


def test_path_params_sync_and_management(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "u/admin/ht_echo", ECHO)
    _created(
        gristmill,
        "u/admin/ht_orders",
        route_path="orders/:id",
        script_path="u/admin/ht_echo",
        authentication_method="none",
    )
    with httpx.Client(base_url=standalone.base_url, timeout=60) as anonymous:
        _check_orders(gristmill, anonymous)


def _check_orders(gristmill: httpx.Client, anonymous: httpx.Client) -> None:
    response = anonymous.post("/api/r/orders/42?n=7", json={"name": "bob"})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "42", "name": "bob", "n": "7"}
    assert response.headers["x-gristmill-job-id"]

    view = gristmill.get("/api/w/main/http_triggers/get/u/admin/ht_orders").json()
    assert view["route_path"] == "orders/:id"
    assert view["http_method"] == "post"
    assert view["authentication_method"] == "none"
    assert "signature_secret" not in view
    paths = [t["path"] for t in gristmill.get("/api/w/main/http_triggers/list").json()]
    assert "u/admin/ht_orders" in paths

    # Wrong method: 405. Unknown route: 404.
    assert anonymous.get("/api/r/orders/42").status_code == 405
    assert anonymous.post("/api/r/nothing/here").status_code == 404

    # Disabled: 404; enabled again: served.
    off = gristmill.post(
        "/api/w/main/http_triggers/setenabled/u/admin/ht_orders", json={"enabled": False}
    )
    assert off.status_code == 200, off.text
    assert anonymous.post("/api/r/orders/1", json={}).status_code == 404
    gristmill.post("/api/w/main/http_triggers/setenabled/u/admin/ht_orders", json={"enabled": True})
    assert anonymous.post("/api/r/orders/1", json={}).status_code == 200

    # Update: a new pattern in '{}' syntax and method.
    updated = gristmill.post(
        "/api/w/main/http_triggers/update/u/admin/ht_orders",
        json={
            "route_path": "orders/{id}/v2",
            "http_method": "put",
            "script_path": "u/admin/ht_echo",
            "is_flow": False,
        },
    )
    assert updated.status_code == 200, updated.text
    assert anonymous.put("/api/r/orders/9/v2").json()["id"] == "9"
    assert anonymous.post("/api/r/orders/9").status_code == 404

    deleted = gristmill.delete("/api/w/main/http_triggers/delete/u/admin/ht_orders")
    assert deleted.status_code == 200, deleted.text
    assert anonymous.put("/api/r/orders/9/v2").status_code == 404
    assert gristmill.get("/api/w/main/http_triggers/get/u/admin/ht_orders").status_code == 404


def test_custom_status_and_headers(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "u/admin/ht_custom", CUSTOM)
    _created(
        gristmill,
        "u/admin/ht_custom",
        route_path="custom",
        script_path="u/admin/ht_custom",
        http_method="get",
    )
    response = httpx.get(f"{standalone.base_url}/api/r/custom?kind=box", timeout=60)
    assert response.status_code == 201, response.text
    assert response.headers["x-kind"] == "box"
    assert response.json() == {"made": "box"}


def test_async_route(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "u/admin/ht_async", ECHO)
    _created(
        gristmill,
        "u/admin/ht_async",
        route_path="later/:id",
        script_path="u/admin/ht_async",
        request_type="async",
    )
    view = gristmill.get("/api/w/main/http_triggers/get/u/admin/ht_async").json()
    assert view["is_async"] is True
    assert view["request_type"] == "async"
    response = httpx.post(f"{standalone.base_url}/api/r/later/5", json={"name": "al"}, timeout=60)
    assert response.status_code == 202, response.text
    outcome = wait_result(gristmill, response.text)
    assert outcome["result"] == {"id": "5", "name": "al", "n": "0"}


def test_token_auth(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "u/admin/ht_token", ECHO)
    _created(
        gristmill,
        "u/admin/ht_token",
        route_path="private/:id",
        script_path="u/admin/ht_token",
        authentication_method="windmill",
    )
    url = f"{standalone.base_url}/api/r/private/1"
    assert httpx.post(url, json={}, timeout=60).status_code == 401
    bad = httpx.post(url, json={}, headers={"Authorization": "Bearer nope"}, timeout=60)
    assert bad.status_code == 401
    good = gristmill.post("/api/r/private/1", json={})
    assert good.status_code == 200, good.text
    assert good.json()["id"] == "1"


def test_signature_auth(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "u/admin/ht_signed", RAW)
    missing = _trigger(
        gristmill,
        "u/admin/ht_signed",
        route_path="hooks/signed",
        script_path="u/admin/ht_signed",
        authentication_method="signature",
    )
    assert missing.status_code == 400, missing.text
    _created(
        gristmill,
        "u/admin/ht_signed",
        route_path="hooks/signed",
        script_path="u/admin/ht_signed",
        authentication_method="signature",
        signature_secret=SECRET,
    )
    view = gristmill.get("/api/w/main/http_triggers/get/u/admin/ht_signed").json()
    assert view["has_signature_secret"] is True
    body = b'{"event": "paid"}'
    url = f"{standalone.base_url}/api/r/hooks/signed"
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "x-test": "yes"}
    good = httpx.post(url, content=body, headers=headers | {"X-Signature": digest}, timeout=60)
    assert good.status_code == 200, good.text
    assert good.json() == [body.decode(), "yes"]
    wrong = hmac.new(b"other", body, hashlib.sha256).hexdigest()
    bad = httpx.post(url, content=body, headers=headers | {"X-Signature": wrong}, timeout=60)
    assert bad.status_code == 401
    assert httpx.post(url, content=body, headers=headers, timeout=60).status_code == 401


def test_collisions_and_bad_patterns(gristmill: httpx.Client) -> None:
    _script(gristmill, "u/admin/ht_col", ECHO)
    _created(gristmill, "u/admin/ht_col_a", route_path="col/:x", script_path="u/admin/ht_col")
    clash = _trigger(
        gristmill, "u/admin/ht_col_b", route_path="col/{y}", script_path="u/admin/ht_col"
    )
    assert clash.status_code == 409, clash.text
    assert "u/admin/ht_col_a" in clash.text
    # Another method is another route.
    _created(
        gristmill,
        "u/admin/ht_col_c",
        route_path="col/:y",
        script_path="u/admin/ht_col",
        http_method="get",
    )
    for pattern in ("col//x", "col/:1", "col/a b", "col/:x/:x"):
        bad = _trigger(
            gristmill, "u/admin/ht_col_d", route_path=pattern, script_path="u/admin/ht_col"
        )
        assert bad.status_code == 400, (pattern, bad.text)
    bad_method = _trigger(
        gristmill,
        "u/admin/ht_col_d",
        route_path="col2",
        script_path="u/admin/ht_col",
        http_method="trace",
    )
    assert bad_method.status_code == 400
    no_script = _trigger(
        gristmill, "u/admin/ht_col_d", route_path="col3", script_path="u/admin/nope"
    )
    assert no_script.status_code == 404
    taken = _trigger(gristmill, "u/admin/ht_col_a", route_path="col4", script_path="u/admin/ht_col")
    assert taken.status_code == 409


FAIL = "def main(body: str = ''):\n    raise ValueError('bad ' + body)\n"


def test_text_body_and_failure(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "u/admin/ht_fail", FAIL)
    _created(gristmill, "u/admin/ht_fail", route_path="fail", script_path="u/admin/ht_fail")
    response = httpx.post(
        f"{standalone.base_url}/api/r/fail",
        content=b"thing",
        headers={"content-type": "text/plain"},
        timeout=60,
    )
    assert response.status_code == 500, response.text
    assert "bad thing" in response.json()["error"]["message"]
    unsupported = _trigger(
        gristmill,
        "u/admin/ht_fail2",
        route_path="fail2",
        script_path="u/admin/ht_fail",
        is_static_website=True,
    )
    assert unsupported.status_code == 400, unsupported.text


async def test_token_of_another_workspace(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "u/admin/ht_ws", ECHO)
    _created(
        gristmill,
        "u/admin/ht_ws",
        route_path="ws/:id",
        script_path="u/admin/ht_ws",
        authentication_method="windmill",
    )
    await standalone.fetchval(
        "INSERT INTO workspaces (id, name) VALUES ('ht-other', 'other') ON CONFLICT DO NOTHING"
    )
    pool = await create_pool(standalone.database_url, min_size=1, max_size=1)
    try:
        token = await create_token(pool, user_id="admin", workspace="ht-other")
    finally:
        await pool.close()
    async with httpx.AsyncClient(base_url=standalone.base_url, timeout=60) as client:
        response = await client.post(
            "/api/r/ws/3", json={}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 403, response.text
