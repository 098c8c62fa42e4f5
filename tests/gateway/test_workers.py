"""The workers API and job accounting, against a real ``gristmill up``.

The up's worker process registers itself, heart-beats (ping, current job, jobs done,
resident memory) and is listed by ``/api/workers/list``. Jobs that end record their
duration, peak memory (when the sandbox measures it) and why they stopped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.scripts import standalone as harness
from tests.scripts.standalone import Standalone, wait_result

standalone = harness.standalone
gristmill = harness.gristmill

#: Keys Windmill's OpenAPI document marks required in ``WorkerPing`` (bar ``ping_at``,
#: which its own server sends as ``last_ping``).
WORKER_PING_REQUIRED = {
    "worker",
    "worker_instance",
    "started_at",
    "ip",
    "jobs_executed",
    "worker_group",
    "wm_version",
}
SLEEPER = "import time\n\ndef main():\n    time.sleep(60)\n    return 'woke'\n"


def workers(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/workers/list", params=params)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def eventually(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """``check()``'s first truthy answer, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s")


def preview(client: httpx.Client, content: str, **args: Any) -> str:
    response = client.post(
        "/api/w/main/jobs/run/preview",
        json={"language": "python3", "content": content, "args": args},
    )
    assert response.status_code == 201, response.text
    return response.text


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/w/main/jobs_u/get/{job_id}", params={"no_logs": True})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def completed(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    wait_result(client, job_id, timeout)
    body = job(client, job_id)
    assert body["type"] == "CompletedJob", body
    return body


# -- the list -------------------------------------------------------------------------------


def test_list_shows_the_running_worker(gristmill: httpx.Client) -> None:
    listed = workers(gristmill)
    assert len(listed) == 1, listed
    worker = listed[0]
    assert worker.keys() >= WORKER_PING_REQUIRED
    assert worker["worker"].startswith("wk-")
    assert worker["worker_instance"] == socket.gethostname()
    assert worker["worker_group"] == "default"
    for tag in ("python3", "bash", "flow", "dependency"):
        assert tag in worker["custom_tags"]
    assert worker["tags"] == worker["custom_tags"]
    assert 0 <= worker["last_ping"] < 10
    assert worker["memory_kb"] > 0
    assert worker["memory_usage"] == worker["memory_kb"] * 1024
    assert worker["wm_memory_usage"] == worker["memory_usage"]
    assert worker["wm_version"]
    assert "sandbox" in worker
    assert worker["started_at"] <= worker["last_ping_at"]


def test_jobs_executed_and_current_job(gristmill: httpx.Client) -> None:
    before = workers(gristmill)[0]["jobs_executed"]
    assert wait_result(gristmill, preview(gristmill, "def main():\n    return 1\n"))["success"]
    eventually(
        lambda: workers(gristmill)[0]["jobs_executed"] >= max(1, before + 1),
        what="jobs_executed counted at a heartbeat",
    )

    # While a job runs, the worker shows it (at its next heartbeat).
    job_id = preview(gristmill, SLEEPER)
    try:
        shown = eventually(
            lambda: [w for w in workers(gristmill) if w["current_job_id"] == job_id],
            what="the running job on the worker",
        )
        assert shown[0]["last_job_id"] == job_id
        assert shown[0]["current_job_workspace_id"] == "main"
        assert shown[0]["last_job_workspace_id"] == "main"
    finally:
        gristmill.post(f"/api/w/main/jobs_u/queue/cancel/{job_id}", json={})
    completed(gristmill, job_id)


async def test_ping_since_and_pages(gristmill: httpx.Client, standalone: Standalone) -> None:
    # A worker that crashed an hour ago leaves its row; it ages out of the list.
    await standalone.fetchval(
        """
        INSERT INTO workers (id, worker_group, tags, hostname, started_at, last_ping)
        VALUES ('wk-crashed', 'gpu', ARRAY['crashed-tag'], 'elsewhere',
                now() - interval '2 hours', now() - interval '1 hour')
        """
    )
    try:
        live = workers(gristmill)
        assert [w["worker"] for w in live if w["worker"] == "wk-crashed"] == []
        assert [w["worker"] for w in workers(gristmill, ping_since=60)] == [
            w["worker"] for w in live
        ]

        old = workers(gristmill, ping_since=7200)
        ids = [w["worker"] for w in old]
        assert "wk-crashed" in ids
        assert len(ids) == len(live) + 1
        crashed = next(w for w in old if w["worker"] == "wk-crashed")
        assert 3500 < crashed["last_ping"] < 3700
        assert crashed["worker_group"] == "gpu"
        assert crashed["jobs_executed"] == 0
        assert crashed["memory_usage"] is None
        assert crashed["current_job_id"] is None

        # Pages: most recently started first, so the crashed worker comes last.
        first = workers(gristmill, ping_since=7200, per_page=1, page=1)
        last = workers(gristmill, ping_since=7200, per_page=1, page=len(ids))
        beyond = workers(gristmill, ping_since=7200, per_page=1, page=len(ids) + 1)
        assert [w["worker"] for w in first] == [ids[0]]
        assert [w["worker"] for w in last] == ["wk-crashed"]
        assert beyond == []

        assert exists(gristmill, "crashed-tag") is False
        assert exists(gristmill, "crashed-tag", ping_since=7200) is True
    finally:
        await standalone.fetchval("DELETE FROM workers WHERE id = 'wk-crashed'")


def test_bad_list_parameters(gristmill: httpx.Client) -> None:
    for params in ({"page": 0}, {"per_page": 0}, {"per_page": 100_000}, {"ping_since": -1}):
        response = gristmill.get("/api/workers/list", params=params)
        assert response.status_code == 400, (params, response.text)


# -- tags and counts --------------------------------------------------------------------------


def exists(client: httpx.Client, tag: str, **params: Any) -> bool:
    response = client.get("/api/workers/exists_worker_with_tag", params={"tag": tag, **params})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer, bool)
    return answer


def test_exists_worker_with_tag(gristmill: httpx.Client) -> None:
    assert exists(gristmill, "python3") is True
    assert exists(gristmill, "bash") is True
    assert exists(gristmill, "no-such-tag") is False
    assert gristmill.get("/api/workers/exists_worker_with_tag").status_code == 400


def test_queue_counts(gristmill: httpx.Client) -> None:
    response = gristmill.post(
        "/api/w/main/jobs/run/preview",
        params={"scheduled_in_secs": 3600},
        json={"language": "python3", "content": "def main():\n    return 1\n", "tag": "nobody"},
    )
    assert response.status_code == 201, response.text
    job_id = response.text
    try:
        # Scheduled for later: not waiting yet.
        counts = gristmill.get("/api/workers/queue_counts").json()
        assert "nobody" not in counts
    finally:
        gristmill.post(f"/api/w/main/jobs_u/queue/cancel/{job_id}", json={})
    response = gristmill.post(
        "/api/w/main/jobs/run/preview",
        json={"language": "python3", "content": "def main():\n    return 1\n", "tag": "nobody"},
    )
    job_id = response.text
    try:
        assert gristmill.get("/api/workers/queue_counts").json()["nobody"] == 1
    finally:
        gristmill.post(f"/api/w/main/jobs_u/queue/cancel/{job_id}", json={})


async def test_any_user_may_read_and_tokens_are_required(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    bob = await standalone.token_for("worker-reader")
    headers = {"Authorization": f"Bearer {bob}"}
    with httpx.Client(base_url=standalone.base_url, timeout=30) as anonymous:
        for path in (
            "/api/workers/list",
            "/api/workers/exists_worker_with_tag?tag=python3",
            "/api/workers/queue_counts",
        ):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.get("/api/workers/queue_counts", headers=headers).status_code == 200
        assert anonymous.get("/api/workers/list", headers=headers).status_code == 200
        answer = anonymous.get(
            "/api/workers/exists_worker_with_tag", params={"tag": "python3"}, headers=headers
        )
        assert answer.json() is True


# -- accounting -------------------------------------------------------------------------------


async def test_successful_job_accounting(gristmill: httpx.Client, standalone: Standalone) -> None:
    job_id = preview(gristmill, "import time\n\ndef main():\n    time.sleep(0.2)\n    return 2\n")
    body = completed(gristmill, job_id)
    assert body["success"] is True
    assert body["exit_reason"] == "ok"
    assert body["status"] == "success"
    assert body["duration_ms"] >= 200
    # Peak memory is measured only where the sandbox has a memory cgroup.
    stored = await standalone.fetchval(
        "SELECT memory_peak_kb FROM jobs_completed WHERE id = $1::uuid", job_id
    )
    assert body["mem_peak"] == stored
    assert stored is None or stored > 0


def test_failed_job_accounting(gristmill: httpx.Client) -> None:
    body = completed(gristmill, preview(gristmill, "def main():\n    raise ValueError('no')\n"))
    assert body["success"] is False
    assert body["exit_reason"] == "error"
    assert body["duration_ms"] > 0


def test_timed_out_job_shows_timeout(gristmill: httpx.Client) -> None:
    path = "u/admin/workers_test_sleeper"
    response = gristmill.post(
        "/api/w/main/scripts/create",
        json={
            "path": path,
            "content": SLEEPER,
            "language": "python3",
            "summary": "",
            "description": "",
            "timeout": 1,
        },
    )
    assert response.status_code == 201, response.text
    response = gristmill.post(f"/api/w/main/jobs/run/p/{path}", json={})
    assert response.status_code == 201, response.text
    body = completed(gristmill, response.text, timeout=60)
    assert body["success"] is False
    assert body["status"] == "failure"
    assert body["exit_reason"] == "timeout"
    assert 1000 <= body["duration_ms"] < 30_000
    assert body["result"]["error"]["exit_reason"] == "timeout"


def test_canceled_job_shows_canceled(gristmill: httpx.Client) -> None:
    job_id = preview(gristmill, SLEEPER)
    eventually(lambda: job(gristmill, job_id).get("running"), what="the job running")
    response = gristmill.post(
        f"/api/w/main/jobs_u/queue/cancel/{job_id}", json={"reason": "enough"}
    )
    assert response.status_code == 200, response.text
    body = completed(gristmill, job_id)
    assert body["success"] is False
    assert body["status"] == "canceled"
    assert body["canceled"] is True
    assert body["exit_reason"] == "canceled"
    assert body["duration_ms"] < 30_000
