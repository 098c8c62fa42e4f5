"""A script's own ``sandbox`` setting, saved through the API and applied to its jobs by
a real ``gristmill up`` (sandboxed workers)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.scripts.standalone import Standalone, gristmill, standalone

__all__ = ["gristmill", "standalone"]

PROBE = """
import socket

def main(port: int):
    cpu = next(line.split()[3] for line in open("/proc/self/limits") if line.startswith("Max cpu"))
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        reached = True
    except OSError:
        reached = False
    return {"reached_gateway": reached, "cpu_s": cpu}
"""


def _save(client: httpx.Client, path: str, **settings: object) -> httpx.Response:
    body = {"path": path, "content": PROBE, "language": "python3", "summary": ""} | settings
    return client.post("/api/w/main/scripts/create", json=body)


def test_bad_sandbox_settings_are_refused_naming_the_field(gristmill: httpx.Client) -> None:
    for setting, where in (
        ({"network": "lan"}, "sandbox.network"),
        ({"memory_mb": 0}, "sandbox"),
        ({"disk_gb": 1}, "sandbox"),
        ({"cpu_s": "ten"}, "sandbox.cpu_s"),
    ):
        response = _save(gristmill, "f/sandbox/bad", sandbox=setting)
        assert response.status_code == 400, (setting, response.text)
        error = response.json()["error"]
        assert error["location"] == where, (setting, error)


def test_a_script_runs_with_its_own_network_and_limits(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    port = urlsplit(standalone.base_url).port
    saved = _save(gristmill, "f/sandbox/offline", sandbox={"network": "none", "cpu_s": 11})
    assert saved.status_code == 201, saved.text
    view = gristmill.get("/api/w/main/scripts/get/p/f/sandbox/offline").json()
    assert view["sandbox"] == {"network": "none", "cpu_s": 11}
    assert _save(gristmill, "f/sandbox/online").status_code == 201

    offline = gristmill.post(
        "/api/w/main/jobs/run_wait_result/p/f/sandbox/offline", json={"port": port}
    )
    assert offline.status_code == 200, offline.text
    assert offline.json() == {"reached_gateway": False, "cpu_s": "11"}

    online = gristmill.post(
        "/api/w/main/jobs/run_wait_result/p/f/sandbox/online", json={"port": port}
    )
    assert online.status_code == 200, online.text
    assert online.json()["reached_gateway"] is True
    assert online.json()["cpu_s"] != "11"
