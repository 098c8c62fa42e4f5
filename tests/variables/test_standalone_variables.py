"""``gristmill up`` as a real process: Windmill's own client, jobs, and a restart."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import wmill

from tests.harness.services import GristmillProcess, free_port, wait_http

TOKEN = "variables-e2e-admin-token-0123456789"

# A job that keeps a counter in its state and reads a secret, calling the endpoints in
# the order Windmill's clients do (get_state: get_value_interpolated, 404 -> nothing;
# set_state: get, then create with type "state" or update_value).
STATEFUL_JOB = """
import json, os, urllib.error, urllib.request

BASE = os.environ["BASE_INTERNAL_URL"] + "/api/w/" + os.environ["WM_WORKSPACE"]
STATE = os.environ["WM_STATE_PATH_NEW"]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + os.environ["WM_TOKEN"])
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:
            raw = response.read()
            if "json" in response.headers.get("Content-Type", ""):
                return response.status, json.loads(raw)
            return response.status, raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, None


def main():
    status, state = call("GET", "/resources/get_value_interpolated/" + STATE)
    count = (state or {}).get("count", 0) + 1 if status == 200 else 1
    if call("GET", "/resources/get/" + STATE)[0] == 404:
        call("POST", "/resources/create",
             {"path": STATE, "value": {"count": count}, "resource_type": "state"})
    else:
        call("POST", "/resources/update_value/" + STATE, {"value": {"count": count}})
    return {"count": count, "secret": call("GET", "/variables/get_value/u/admin/job_secret")[1],
            "state_path": STATE}
"""


class Server:
    def __init__(self, spawn: Callable[..., GristmillProcess], database_url: str, data: Path):
        self._spawn = spawn
        self.database_url = database_url
        self.data = data
        self.port = free_port()
        self.process: GristmillProcess | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, args: list[str]) -> GristmillProcess:
        """``gristmill <args>`` on this deployment's database and data directory."""
        return self._spawn(
            args,
            {
                "GRISTMILL_DATABASE_URL": self.database_url,
                "GRISTMILL_HTTP_PORT": str(self.port),
                "GRISTMILL_ADMIN_TOKEN": TOKEN,
                "GRISTMILL_DATA_DIR": str(self.data),
                "GRISTMILL_WORKERS": "1",
            },
        )

    def start(self) -> None:
        self.process = self.command(["up"])
        wait_http(f"{self.base}/api/version", process=self.process)

    def stop(self) -> None:
        assert self.process is not None
        assert self.process.terminate() == 0, self.process.output()[-3000:]

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )


@pytest.fixture
def server(
    spawn: Callable[..., GristmillProcess], database_url: str, tmp_path: Path
) -> Iterator[Server]:
    running = Server(spawn, database_url, tmp_path / "data")
    running.start()
    yield running
    if running.process is not None:
        running.process.assert_alive()


def _wait_result(client: httpx.Client, job_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/w/main/jobs_u/completed/get_result_maybe/{job_id}").json()
        if body["completed"]:
            assert body["success"], body
            return body["result"]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not complete in {timeout}s")


async def _raw_secret(database_url: str, path: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        value: str = await conn.fetchval(
            "SELECT value FROM variables WHERE workspace_id = 'main' AND path = $1", path
        )
        return value
    finally:
        await conn.close()


async def test_windmill_client_against_gristmill_up(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = wmill.Windmill(base_url=server.base, token=TOKEN, workspace="main")
    try:
        await _drive_windmill_client(client, server, monkeypatch)
    finally:
        client.client.close()  # the client never closes its HTTP connection pool itself


async def _drive_windmill_client(
    client: wmill.Windmill, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.set_variable("u/admin/plain", "v1")
    client.set_variable("u/admin/plain", "v2")
    assert client.get_variable("u/admin/plain") == "v2"
    client.set_variable("u/admin/api_key", "hunter2-secret", is_secret=True)
    assert client.get_variable("u/admin/api_key") == "hunter2-secret"
    raw = await _raw_secret(server.database_url, "u/admin/api_key")
    assert raw.startswith("$gm1$")
    assert "hunter2" not in raw

    client.set_resource(
        {"host": "db", "password": "$var:u/admin/api_key"}, "u/admin/db", resource_type="any"
    )
    assert client.get_resource("u/admin/db") == {"host": "db", "password": "hunter2-secret"}
    assert client.get_resource("u/admin/db", interpolated=False)["password"] == (
        "$var:u/admin/api_key"
    )
    assert [r["path"] for r in client.list_resources(resource_type="any")] == ["u/admin/db"]

    monkeypatch.setenv("WM_STATE_PATH_NEW", "u/admin/e2e_script/state")
    assert client.get_state() is None
    client.set_state({"runs": 1})
    assert client.get_state() == {"runs": 1}
    client.set_state({"runs": 2})
    assert client.get_state() == {"runs": 2}
    with server.http() as http:
        listed = http.get("/api/w/main/variables/list").json()
    secret = next(v for v in listed if v["path"] == "u/admin/api_key")
    assert secret["value"] is None

    # Standalone mode created its master key in the data directory, private.
    key_file = server.data / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_jobs_keep_state_and_secrets_survive_a_restart(server: Server) -> None:
    with server.http() as http:
        created = http.post(
            "/api/w/main/variables/create",
            json={
                "path": "u/admin/job_secret",
                "value": "s3",
                "is_secret": True,
                "description": "",
            },
        )
        assert created.status_code == 201, created.text
        runs = []
        for _ in range(2):
            job = http.post(
                "/api/w/main/jobs/run/preview",
                json={"content": STATEFUL_JOB, "language": "python3", "args": {}},
            )
            assert job.status_code == 201, job.text
            runs.append(_wait_result(http, job.text))
    assert [r["count"] for r in runs] == [1, 2]
    assert runs[0]["secret"] == "s3"
    state_path = runs[0]["state_path"]

    server.stop()
    server.start()
    with server.http() as http:
        assert http.get("/api/w/main/variables/get_value/u/admin/job_secret").json() == "s3"
        state = http.get(f"/api/w/main/resources/get_value/{state_path}").json()
        assert state == {"count": 2}


async def test_secrets_rotate_command(server: Server) -> None:
    with server.http() as http:
        for i in range(3):
            created = http.post(
                "/api/w/main/variables/create",
                json={
                    "path": f"u/admin/r{i}",
                    "value": f"v{i}",
                    "is_secret": True,
                    "description": "",
                },
            )
            assert created.status_code == 201, created.text
    before = await _raw_secret(server.database_url, "u/admin/r0")

    server.stop()
    rotate = server.command(["secrets", "rotate"])
    assert rotate.proc.wait(timeout=120) == 0, rotate.output()[-3000:]
    assert "main: data key 2 active, 3 secret(s) re-encrypted" in rotate.output()
    after = await _raw_secret(server.database_url, "u/admin/r0")
    assert after != before
    assert after.startswith("$gm1$")

    server.start()
    with server.http() as http:
        for i in range(3):
            assert http.get(f"/api/w/main/variables/get_value/u/admin/r{i}").json() == f"v{i}"
