"""Windmill's own Python client (``wmill`` from PyPI) drives Gristmill unmodified."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import wmill

from tests.scripts.standalone import TOKEN, Standalone

pytestmark = pytest.mark.slow

DOUBLE = "def main(x: int):\n    return x * 2\n"
SLOW = "import time\ndef main():\n    time.sleep(60)\n"
# A job that uses the client itself: variables, resources, state, and another script.
USES_WMILL = """
import wmill

def main():
    previous = wmill.get_state()
    count = (previous or 0) + 1
    wmill.set_state(count)
    return {
        "variable": wmill.get_variable("u/admin/greeting"),
        "secret": wmill.get_variable("u/admin/api_key"),
        "resource": wmill.get_resource("u/admin/db"),
        "state": count,
        "doubled": wmill.run_script_by_path("u/admin/double", args={"x": count}),
    }
"""


@pytest.fixture
def client(standalone: Standalone) -> Iterator[wmill.Windmill]:
    windmill = wmill.Windmill(base_url=standalone.base_url, token=TOKEN, workspace="main")
    yield windmill
    windmill.client.close()


def save(gristmill: httpx.Client, path: str, content: str) -> None:
    response = gristmill.post(
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


def test_variables_secrets_and_resources(client: wmill.Windmill, gristmill: httpx.Client) -> None:
    client.set_variable("u/admin/plain", "hello")
    client.set_variable("u/admin/token", "s3cr3t", is_secret=True)
    assert client.get_variable("u/admin/plain") == "hello"
    assert client.get_variable("u/admin/token") == "s3cr3t"
    client.set_variable("u/admin/plain", "changed")
    assert client.get_variable("u/admin/plain") == "changed"
    listed = gristmill.get("/api/w/main/variables/list").json()
    secret = next(v for v in listed if v["path"] == "u/admin/token")
    assert secret["value"] is None  # never listed in clear
    client.set_resource({"host": "db.local", "port": 5432}, "u/admin/pg", "any")
    assert client.get_resource("u/admin/pg") == {"host": "db.local", "port": 5432}
    assert client.get_resource("u/admin/missing", none_if_undefined=True) is None


def test_run_scripts_sync_and_async_read_status_and_cancel(
    client: wmill.Windmill, gristmill: httpx.Client
) -> None:
    save(gristmill, "u/admin/double", DOUBLE)
    assert client.run_script_by_path("u/admin/double", args={"x": 21}) == 42
    job_id = client.run_script_by_path_async("u/admin/double", args={"x": 5})
    assert client.wait_job(job_id, timeout=30) == 10
    assert client.get_result(job_id) == 10
    assert client.get_job_status(job_id) == "COMPLETED"
    assert client.get_root_job_id(job_id) == job_id

    save(gristmill, "u/admin/slow", SLOW)
    slow = client.run_script_by_path_async("u/admin/slow")
    deadline = time.monotonic() + 30
    while client.get_job_status(slow) != "RUNNING":
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.05)
    client.cancel_job(slow)
    deadline = time.monotonic() + 30
    while client.get_job_status(slow) != "COMPLETED":
        assert time.monotonic() < deadline, "the canceled job never ended"
        time.sleep(0.05)
    job = client.get_job(slow)
    assert job["canceled"] is True
    assert job["success"] is False


def test_failed_script_raises_with_its_error(
    client: wmill.Windmill, gristmill: httpx.Client
) -> None:
    save(gristmill, "u/admin/boom", "def main():\n    raise ValueError('bad input')\n")
    with pytest.raises(Exception, match="bad input"):
        client.run_script_by_path("u/admin/boom", args={})


def test_a_job_using_the_client_inside_itself(
    client: wmill.Windmill, gristmill: httpx.Client
) -> None:
    save(gristmill, "u/admin/double", DOUBLE)
    client.set_variable("u/admin/greeting", "bonjour")
    client.set_variable("u/admin/api_key", "k-123", is_secret=True)
    client.set_resource({"host": "h", "password": "$var:u/admin/api_key"}, "u/admin/db", "any")
    save(gristmill, "u/admin/uses_wmill", USES_WMILL)
    first = client.run_script_by_path("u/admin/uses_wmill", args={}, timeout=180)
    assert first == {
        "variable": "bonjour",
        "secret": "k-123",
        "resource": {"host": "h", "password": "k-123"},
        "state": 1,
        "doubled": 2,
    }
    second = client.run_script_by_path("u/admin/uses_wmill", args={}, timeout=180)
    assert second["state"] == 2  # state kept across runs of the same script
    assert second["doubled"] == 4
