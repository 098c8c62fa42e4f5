"""HTTP routes to flows, workspaced routes, body options, encrypted signature secrets,
and the webhook extras of the run endpoints (``?raw=true``, ``?include_header=``), all
against a real ``gristmill up``."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx

from gristmill.common.db.pool import create_pool
from gristmill.common.keystore import load_master_keyring, rotate_secrets
from tests.scripts.standalone import Standalone, wait_result

ECHO_ALL = (
    "def main(body=None, raw_string: str = '', x_request_id: str = '', a: int = 0):\n"
    "    return {'body': body, 'raw': raw_string, 'rid': x_request_id, 'a': a}\n"
)


def _script(client: httpx.Client, path: str, content: str) -> None:
    response = client.post(
        "/api/w/main/scripts/create",
        json={"path": path, "content": content, "language": "python3", "summary": ""},
    )
    assert response.status_code == 201, response.text


def _flow(client: httpx.Client, path: str) -> None:
    """A flow returning what it was given: ``{"got": x, "raw": raw_string}``."""
    response = client.post(
        "/api/w/main/flows/create",
        json={
            "path": path,
            "summary": "echo",
            "value": {
                "modules": [
                    {
                        "id": "a",
                        "value": {
                            "type": "rawscript",
                            "language": "python3",
                            "content": "def main(x, raw):\n    return {'got': x, 'raw': raw}\n",
                            "input_transforms": {
                                "x": {"type": "javascript", "expr": "flow_input.x"},
                                "raw": {"type": "javascript", "expr": "flow_input.raw_string"},
                            },
                        },
                    }
                ]
            },
            "schema": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer"},
                    "raw_string": {"type": "string", "default": ""},
                    "x_request_id": {"type": "string", "default": ""},
                },
                "required": ["x"],
            },
        },
    )
    assert response.status_code == 201, response.text


def _route(client: httpx.Client, path: str, **fields: Any) -> httpx.Response:
    body = {"path": path, "http_method": "post", "is_flow": False} | fields
    return client.post("/api/w/main/http_triggers/create", json=body)


def test_a_route_runs_a_flow_sync_and_async(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    _flow(gristmill, "f/routes/echo_flow")
    made = _route(
        gristmill,
        "f/routes/flow_sync",
        route_path="flows/:x",
        script_path="f/routes/echo_flow",
        is_flow=True,
    )
    assert made.status_code == 201, made.text
    response = httpx.post(f"{standalone.base_url}/api/r/flows/7", json={}, timeout=60)
    assert response.status_code == 400, response.text  # "7" is not an integer
    assert "x" in response.text
    typed = httpx.post(
        f"{standalone.base_url}/api/r/flows/7",
        json={"x": 5},
        timeout=60,
    )
    # Path parameters come last and win: the route's :x is a string, the schema says integer.
    assert typed.status_code == 400, typed.text

    made = _route(
        gristmill,
        "f/routes/flow_body",
        route_path="flowbody",
        script_path="f/routes/echo_flow",
        is_flow=True,
    )
    assert made.status_code == 201, made.text
    sync = httpx.post(f"{standalone.base_url}/api/r/flowbody", json={"x": 5}, timeout=60)
    assert sync.status_code == 200, sync.text
    assert sync.json() == {"got": 5, "raw": ""}
    assert sync.headers["x-gristmill-job-id"]

    made = _route(
        gristmill,
        "f/routes/flow_async",
        route_path="flowlater",
        script_path="f/routes/echo_flow",
        is_flow=True,
        request_type="async",
    )
    assert made.status_code == 201, made.text
    later = httpx.post(f"{standalone.base_url}/api/r/flowlater", json={"x": 9}, timeout=60)
    assert later.status_code == 202, later.text
    assert wait_result(gristmill, later.text)["result"] == {"got": 9, "raw": ""}

    missing = _route(
        gristmill,
        "f/routes/flow_none",
        route_path="noflow",
        script_path="f/routes/nope",
        is_flow=True,
    )
    assert missing.status_code == 404, missing.text


async def test_workspaced_routes_and_who_may_claim_a_global_one(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    _script(gristmill, "f/routes/echo_all", ECHO_ALL)
    token = await standalone.token_for("route_writer")
    with httpx.Client(
        base_url=standalone.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as writer:
        refused = _route(
            writer, "f/routes/global_claim", route_path="mine", script_path="f/routes/echo_all"
        )
        assert refused.status_code == 403, refused.text
        assert "workspaced_route" in refused.text
        made = _route(
            writer,
            "f/routes/ws_claim",
            route_path="mine",
            script_path="f/routes/echo_all",
            workspaced_route=True,
        )
        assert made.status_code == 201, made.text
    view = gristmill.get("/api/w/main/http_triggers/get/f/routes/ws_claim").json()
    assert view["workspaced_route"] is True
    served = httpx.post(f"{standalone.base_url}/api/r/main/mine", json={"a": 2}, timeout=60)
    assert served.status_code == 200, served.text
    assert served.json()["a"] == 2
    assert httpx.post(f"{standalone.base_url}/api/r/mine", json={}, timeout=60).status_code == 404
    # The admin's instance-wide 'main/mine' would be the same URL: refused.
    clash = _route(
        gristmill, "f/routes/clash", route_path="main/mine", script_path="f/routes/echo_all"
    )
    assert clash.status_code == 409, clash.text


def test_wrap_body_and_raw_string(gristmill: httpx.Client, standalone: Standalone) -> None:
    _script(gristmill, "f/routes/echo_opts", ECHO_ALL)
    made = _route(
        gristmill,
        "f/routes/wrapped",
        route_path="wrapped",
        script_path="f/routes/echo_opts",
        wrap_body=True,
        raw_string=True,
    )
    assert made.status_code == 201, made.text
    body = b'{"a": 3, "nested": {"k": [1, 2]}}'
    response = httpx.post(
        f"{standalone.base_url}/api/r/wrapped",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "body": {"a": 3, "nested": {"k": [1, 2]}},
        "raw": body.decode(),
        "rid": "",
        "a": 0,  # wrapped: not spread into arguments
    }


async def test_signature_secrets_are_encrypted_at_rest_and_rotate(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    secret = "route-hmac-secret-never-stored-plain"
    _script(gristmill, "f/routes/signed_target", ECHO_ALL)
    made = _route(
        gristmill,
        "f/routes/signed",
        route_path="signedhook",
        script_path="f/routes/signed_target",
        authentication_method="signature",
        signature_secret=secret,
    )
    assert made.status_code == 201, made.text
    stored = await standalone.fetchval(
        "SELECT signature_secret FROM http_triggers WHERE path = 'f/routes/signed'"
    )
    assert secret not in stored
    assert stored.startswith("$gm1$")

    def call() -> httpx.Response:
        body = b'{"a": 1}'
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return httpx.post(
            f"{standalone.base_url}/api/r/signedhook",
            content=body,
            headers={"content-type": "application/json", "X-Signature": f"sha256={digest}"},
            timeout=60,
        )

    assert call().status_code == 200

    # A data-key rotation re-encrypts it with the new key; the route keeps working.
    assert standalone.data_dir is not None
    keyring = load_master_keyring({}, standalone.data_dir, create=False)
    pool = await create_pool(standalone.database_url, min_size=1, max_size=2)
    try:
        await rotate_secrets(pool, keyring, workspace="main")
    finally:
        await pool.close()
    rotated = await standalone.fetchval(
        "SELECT signature_secret FROM http_triggers WHERE path = 'f/routes/signed'"
    )
    assert rotated != stored
    assert secret not in rotated
    response = call()
    assert response.status_code == 200, response.text
    assert response.json()["a"] == 1


def test_webhook_raw_body_and_headers_for_scripts(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    _script(gristmill, "f/routes/hook", ECHO_ALL)
    xml = b"<event><id>1</id></event>"
    response = gristmill.post(
        "/api/w/main/jobs/run_wait_result/p/f/routes/hook?raw=true&include_header=X-Request-Id",
        content=xml,
        headers={"content-type": "application/xml", "X-Request-Id": "req-77"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"body": None, "raw": xml.decode(), "rid": "req-77", "a": 0}

    # JSON with raw=true: the fields are arguments and the text is raw_string as well.
    both = gristmill.post(
        "/api/w/main/jobs/run_wait_result/p/f/routes/hook?raw=true", json={"a": 4}
    )
    assert both.status_code == 200, both.text
    assert both.json()["a"] == 4
    assert both.json()["raw"] == '{"a":4}'

    # Without raw, a body that is not a JSON object is refused, saying how to send it.
    refused = gristmill.post(
        "/api/w/main/jobs/run/p/f/routes/hook",
        content=xml,
        headers={"content-type": "application/xml"},
    )
    assert refused.status_code == 400, refused.text
    assert "raw=true" in refused.text

    # Credentials are never copied into a job's arguments.
    leak = gristmill.post(
        "/api/w/main/jobs/run/p/f/routes/hook?include_header=Authorization", json={}
    )
    assert leak.status_code == 400, leak.text
    assert "credentials" in leak.text

    # Asynchronous run: the same extras.
    job = gristmill.post(
        "/api/w/main/jobs/run/p/f/routes/hook?include_header=x-request-id",
        json={"a": 1},
        headers={"X-Request-Id": "async-1"},
    )
    assert job.status_code == 201, job.text
    assert wait_result(gristmill, job.text)["result"]["rid"] == "async-1"


def test_webhook_raw_body_and_headers_for_flows(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    _flow(gristmill, "f/routes/hook_flow")
    response = gristmill.post(
        "/api/w/main/jobs/run_wait_result/f/f/routes/hook_flow?raw=true",
        json={"x": 3},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"got": 3, "raw": '{"x":3}'}
