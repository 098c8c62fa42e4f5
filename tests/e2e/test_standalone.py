"""``gristmill up``: one process, every service, a real HTTP client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.services import GristmillProcess, free_port, wait_http
from tests.scripts.standalone import wait_result

TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def gristmill(
    spawn: Callable[..., GristmillProcess], database_url: str, tmp_path: Path
) -> Iterator[httpx.Client]:
    port = free_port()
    process = spawn(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": database_url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": TOKEN,
            "GRISTMILL_DATA_DIR": str(tmp_path / "data"),
            "GRISTMILL_WORKERS": "2",
        },
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/version", process=process)
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        yield client
    process.assert_alive()


def run_preview(client: httpx.Client, content: str, language: str = "python3", **args: Any) -> str:
    response = client.post(
        "/api/w/main/jobs/run/preview",
        json={"content": content, "language": language, "args": args},
    )
    assert response.status_code == 201, response.text
    return response.text


def test_version_is_public_and_everything_else_needs_a_token(gristmill: httpx.Client) -> None:
    assert gristmill.get("/api/version").text.startswith("Gristmill v")
    anonymous = httpx.get(f"{gristmill.base_url}/api/users/whoami")
    assert anonymous.status_code == 401
    assert "missing token" in anonymous.json()["error"]["message"]
    wrong = httpx.get(
        f"{gristmill.base_url}/api/users/whoami", headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    me = gristmill.get("/api/users/whoami")
    assert me.status_code == 200
    assert me.json()["username"] == "admin"
    via_query = httpx.get(f"{gristmill.base_url}/api/users/whoami?token={TOKEN}")
    assert via_query.status_code == 200


def test_python_job_runs_and_returns_its_result(gristmill: httpx.Client) -> None:
    job_id = run_preview(
        gristmill,
        "def main(name: str, n: int):\n    print('hello', name)\n    return {'double': n * 2}\n",
        name="world",
        n=21,
    )
    result = wait_result(gristmill, job_id)
    assert result == {"completed": True, "started": True, "success": True, "result": {"double": 42}}
    job = gristmill.get(f"/api/w/main/jobs_u/get/{job_id}").json()
    assert job["type"] == "CompletedJob"
    assert job["success"] is True
    assert "hello world" in job["logs"]
    assert job["args"] == {"name": "world", "n": 21}


def test_bash_job_runs(gristmill: httpx.Client) -> None:
    job_id = run_preview(
        gristmill, 'name="$1"\necho "starting"\necho "hi $name"\n', language="bash", name="ann"
    )
    result = wait_result(gristmill, job_id)
    assert result["success"] is True
    assert result["result"] == "hi ann"


def test_failing_job_reports_a_structured_error(gristmill: httpx.Client) -> None:
    job_id = run_preview(gristmill, "def main():\n    return 1 / 0\n")
    result = wait_result(gristmill, job_id)
    assert result["success"] is False
    error = result["result"]["error"]
    assert error["name"] == "ZeroDivisionError"
    assert "division by zero" in error["message"]
    assert "line 2" in error["stack"]


def test_logs_stream_while_the_job_runs(gristmill: httpx.Client) -> None:
    code = (
        "import time\n"
        "def main():\n"
        "    print('first', flush=True)\n"
        "    time.sleep(3)\n"
        "    print('second', flush=True)\n"
        "    return 'done'\n"
    )
    job_id = run_preview(gristmill, code)
    deadline = time.monotonic() + 20
    seen_running_with_logs = False
    offset = 0
    logs = ""
    while time.monotonic() < deadline:
        update = gristmill.get(
            f"/api/w/main/jobs_u/getupdate/{job_id}", params={"log_offset": offset}
        ).json()
        logs += update["new_logs"]
        offset = update["log_offset"]
        if update["running"] and "first" in logs and "second" not in logs:
            seen_running_with_logs = True
        if update["completed"]:
            break
        time.sleep(0.1)
    assert seen_running_with_logs, f"no log arrived before the job ended: {logs!r}"
    assert "second" in logs
    assert wait_result(gristmill, job_id)["result"] == "done"


def test_cancel_queued_and_running_jobs(gristmill: httpx.Client) -> None:
    running = run_preview(gristmill, "import time\ndef main():\n    time.sleep(60)\n")
    deadline = time.monotonic() + 20
    while not gristmill.get(f"/api/w/main/jobs_u/get/{running}").json().get("running"):
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.05)
    response = gristmill.post(f"/api/w/main/jobs_u/queue/cancel/{running}", json={"reason": "test"})
    assert response.status_code == 200
    result = wait_result(gristmill, running, timeout=20)
    assert result["success"] is False
    job = gristmill.get(f"/api/w/main/jobs_u/get/{running}").json()
    assert job["canceled"] is True
    assert job["canceled_by"] == "admin"

    scheduled = gristmill.post(
        "/api/w/main/jobs/run/preview",
        params={"scheduled_in_secs": 3600},
        json={"content": "def main():\n    return 1\n", "language": "python3"},
    ).text
    gristmill.post(f"/api/w/main/jobs_u/queue/cancel/{scheduled}")
    job = gristmill.get(f"/api/w/main/jobs_u/get/{scheduled}").json()
    assert job["type"] == "CompletedJob"
    assert job["canceled"] is True


def test_bad_requests_get_clear_errors(gristmill: httpx.Client) -> None:
    unknown_language = gristmill.post(
        "/api/w/main/jobs/run/preview", json={"content": "x", "language": "cobol"}
    )
    assert unknown_language.status_code == 400
    assert unknown_language.json()["error"]["location"] == "runnable.language"
    malformed = gristmill.post(
        "/api/w/main/jobs/run/preview",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    missing_field = gristmill.post("/api/w/main/jobs/run/preview", json={"language": "python3"})
    assert missing_field.status_code == 400
    assert "content" in missing_field.text
    bad_tag = gristmill.post(
        "/api/w/main/jobs/run/preview",
        json={"content": "def main(): pass", "language": "python3", "tag": "bad tag"},
    )
    assert bad_tag.status_code == 400
    assert bad_tag.json()["error"]["location"] == "tag"
    unknown_job = gristmill.get("/api/w/main/jobs_u/get/00000000-0000-0000-0000-000000000000")
    assert unknown_job.status_code == 404
    unknown_path = gristmill.get("/api/w/main/no/such/thing")
    assert unknown_path.status_code == 404
    huge = gristmill.post(
        "/api/w/main/jobs/run/preview",
        json={
            "content": "def main(): pass",
            "language": "python3",
            "args": {"x": "y" * (11 << 20)},
        },
    )
    assert huge.status_code == 413
    # And the service keeps working.
    assert (
        wait_result(gristmill, run_preview(gristmill, "def main():\n    return 7\n"))["result"] == 7
    )


def test_idempotency_key_names_one_job(gristmill: httpx.Client) -> None:
    body = {"content": "def main():\n    return 'once'\n", "language": "python3"}
    first = gristmill.post(
        "/api/w/main/jobs/run/preview", params={"idempotency_key": "k-1"}, json=body
    ).text
    second = gristmill.post(
        "/api/w/main/jobs/run/preview", params={"idempotency_key": "k-1"}, json=body
    ).text
    assert first == second
    assert wait_result(gristmill, first)["result"] == "once"


JOB_CALLS_BACK = """
import json, os, urllib.request

def main():
    request = urllib.request.Request(
        os.environ["BASE_INTERNAL_URL"] + "/api/users/whoami",
        headers={"Authorization": "Bearer " + os.environ["WM_TOKEN"]},
    )
    me = json.load(urllib.request.urlopen(request))
    return {
        "me": me["username"],
        "token": os.environ["WM_TOKEN"],
        "workspace": os.environ["WM_WORKSPACE"],
        "job": os.environ["WM_JOB_ID"],
        "state_path": os.environ["WM_STATE_PATH_NEW"],
        "leaked": sorted(k for k in os.environ if k.startswith("GRISTMILL_DATABASE")),
    }
"""


def test_job_token_works_during_the_job_and_dies_with_it(gristmill: httpx.Client) -> None:
    job_id = run_preview(gristmill, JOB_CALLS_BACK)
    result = wait_result(gristmill, job_id)
    assert result["success"], result
    value = result["result"]
    assert value["me"] == "admin"
    assert value["workspace"] == "main"
    assert value["job"] == job_id
    assert value["state_path"] == "u/admin/preview/state"
    assert value["leaked"] == []
    assert value["token"] != TOKEN
    after = httpx.get(
        f"{gristmill.base_url}/api/users/whoami",
        headers={"Authorization": f"Bearer {value['token']}"},
    )
    assert after.status_code == 401


def test_in_job_client_library_is_importable(gristmill: httpx.Client) -> None:
    code = (
        "import gristmill\n"
        "def main():\n"
        "    me = gristmill.whoami()\n"
        "    gristmill.set_variable('u/admin/from_job', 'hello')\n"
        "    previous = gristmill.get_state()\n"
        "    gristmill.set_state((previous or 0) + 1)\n"
        "    return {'me': me['username'], 'var': gristmill.get_variable('u/admin/from_job'),\n"
        "            'state': gristmill.get_state()}\n"
    )
    first = wait_result(gristmill, run_preview(gristmill, code))
    assert first["success"], first
    assert first["result"] == {"me": "admin", "var": "hello", "state": 1}
    second = wait_result(gristmill, run_preview(gristmill, code))
    assert second["result"]["state"] == 2


def test_huge_logs_and_unserializable_results_fail_cleanly(gristmill: httpx.Client) -> None:
    noisy = run_preview(
        gristmill,
        "import sys\ndef main():\n"
        "    for _ in range(10 * 1024):\n"
        "        sys.stdout.write('x' * 1023 + '\\n')\n"
        "    return 'survived'\n",
    )
    result = wait_result(gristmill, noisy, timeout=60)
    assert result["result"] == "survived"
    logs = gristmill.get(f"/api/w/main/jobs_u/get_logs/{noisy}").text
    assert "log truncated" in logs
    assert len(logs) < 3 * 1024 * 1024  # capped, not 10 MB

    weird = run_preview(gristmill, "def main():\n    return {1, 2, 3}\n")
    error = wait_result(gristmill, weird)["result"]["error"]
    assert "not JSON serializable" in error["message"]
    # The service keeps working.
    assert (
        wait_result(gristmill, run_preview(gristmill, "def main():\n    return 3\n"))["result"] == 3
    )
