"""Running saved scripts over HTTP on a real ``gristmill up``: by path and by hash,
asynchronously and run-and-wait, with their arguments checked before anything runs."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.scripts import standalone as harness

standalone = harness.standalone
gristmill = harness.gristmill
wait_result = harness.wait_result

ADD = "def main(a: int, b: int = 2):\n    print('adding', a, b)\n    return a + b\n"
FAILS = "def main(x: int):\n    y = x - x\n    return x / y\n"
SLOW = "import time\n\ndef main(seconds: float):\n    time.sleep(seconds)\n    return 'slept'\n"
GREET = 'name="$1"\ngreeting="${2:-hello}"\necho "$greeting $name"\n'


def save(client: httpx.Client, path: str, content: str, language: str = "python3") -> str:
    response = client.post(
        "/api/w/main/scripts/create",
        json={
            "path": path,
            "content": content,
            "language": language,
            "summary": "",
            "description": "",
        },
    )
    assert response.status_code == 201, response.text
    return response.text


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/w/main/jobs_u/get/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def jobs_count(server: harness.Standalone) -> Any:
    return server.fetchval("SELECT count(*) FROM jobs")


# -- asynchronous -----------------------------------------------------------------------------


def test_run_by_path_answers_a_job_id(gristmill: httpx.Client) -> None:
    digest = save(gristmill, "u/admin/run_add", ADD)
    response = gristmill.post("/api/w/main/jobs/run/p/u/admin/run_add", json={"a": 40})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/plain")
    job_id = str(uuid.UUID(response.text))
    assert wait_result(gristmill, job_id) == {
        "completed": True,
        "started": True,
        "success": True,
        "result": 42,
    }
    ran = job(gristmill, job_id)
    assert (ran["job_kind"], ran["script_path"], ran["script_hash"]) == (
        "script",
        "u/admin/run_add",
        digest,
    )
    assert ran["args"] == {"a": 40, "b": 2}  # the default is recorded with the job
    assert "adding 40 2" in ran["logs"]


def test_run_by_hash_runs_that_version(gristmill: httpx.Client) -> None:
    old = save(gristmill, "u/admin/run_versions", "def main():\n    return 'old'\n")
    save(gristmill, "u/admin/run_versions", "def main():\n    return 'new'\n")
    by_hash = gristmill.post(f"/api/w/main/jobs/run/h/{old}", json={})
    assert by_hash.status_code == 201, by_hash.text
    assert wait_result(gristmill, by_hash.text)["result"] == "old"
    # No body at all is no arguments.
    by_path = gristmill.post("/api/w/main/jobs/run/p/u/admin/run_versions")
    assert by_path.status_code == 201, by_path.text
    assert wait_result(gristmill, by_path.text)["result"] == "new"


def test_bash_script_by_path(gristmill: httpx.Client) -> None:
    save(gristmill, "f/run/greet", GREET, language="bash")
    job_id = gristmill.post("/api/w/main/jobs/run/p/f/run/greet", json={"name": "ann"}).text
    assert wait_result(gristmill, job_id)["result"] == "hello ann"


def test_query_options(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/run_options", ADD)
    wanted = str(uuid.uuid4())
    later = datetime.now(UTC) + timedelta(hours=1)
    response = gristmill.post(
        "/api/w/main/jobs/run/p/u/admin/run_options",
        params={
            "job_id": wanted,
            "scheduled_for": later.isoformat(),
            "tag": "python3",
            "invisible_to_owner": "true",
        },
        json={"a": 1},
    )
    assert (response.status_code, response.text) == (201, wanted)
    queued = job(gristmill, wanted)
    assert queued["type"] == "QueuedJob"
    assert not queued["running"]
    assert abs(datetime.fromisoformat(queued["scheduled_for"]) - later) < timedelta(seconds=1)
    in_secs = gristmill.post(
        "/api/w/main/jobs/run/p/u/admin/run_options",
        params={"scheduled_in_secs": 3600},
        json={"a": 1},
    ).text
    scheduled = datetime.fromisoformat(job(gristmill, in_secs)["scheduled_for"])
    assert scheduled > datetime.now(UTC) + timedelta(minutes=59)
    bad_tag = gristmill.post(
        "/api/w/main/jobs/run/p/u/admin/run_options", params={"tag": "no spaces"}, json={"a": 1}
    )
    assert bad_tag.status_code == 400
    assert bad_tag.json()["error"]["location"] == "tag"


def test_idempotency_key_names_one_job(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/run_once", ADD)
    url = "/api/w/main/jobs/run/p/u/admin/run_once"
    first = gristmill.post(url, params={"idempotency_key": "order-1"}, json={"a": 1}).text
    second = gristmill.post(url, params={"idempotency_key": "order-1"}, json={"a": 1}).text
    assert first == second
    assert wait_result(gristmill, first)["result"] == 3


# -- refused before anything runs ---------------------------------------------------------------


async def test_unknown_scripts_are_404_and_publish_nothing(
    gristmill: httpx.Client, standalone: harness.Standalone
) -> None:
    before = await jobs_count(standalone)
    for url in (
        "/api/w/main/jobs/run/p/u/admin/no_such_script",
        "/api/w/main/jobs/run_wait_result/p/u/admin/no_such_script",
    ):
        response = gristmill.post(url, json={})
        assert response.status_code == 404, response.text
        assert "'u/admin/no_such_script'" in response.json()["error"]["message"]
    for url in (
        "/api/w/main/jobs/run/h/00000000deadbeef",
        "/api/w/main/jobs/run_wait_result/h/00000000deadbeef",
    ):
        response = gristmill.post(url, json={})
        assert response.status_code == 404, response.text
        assert "'00000000deadbeef'" in response.json()["error"]["message"]
    bad_path = gristmill.post("/api/w/main/jobs/run/p/nowhere", json={})
    assert bad_path.status_code == 400
    assert bad_path.json()["error"]["location"] == "path"
    assert await jobs_count(standalone) == before


@pytest.mark.parametrize(
    ("args", "location", "message"),
    [
        ({"a": "x"}, "args.a", "expected integer, got string 'x'"),
        ({"a": 1, "b": [2]}, "args.b", "expected integer, got array of 1 items"),
        ({"b": 1}, "args.a", "missing required argument"),
        ({"a": 1, "c": 3}, "args.c", "unknown argument; the script takes: a, b"),
    ],
)
async def test_wrong_arguments_are_400_naming_the_argument(
    gristmill: httpx.Client,
    standalone: harness.Standalone,
    args: dict[str, Any],
    location: str,
    message: str,
) -> None:
    digest = save(gristmill, "u/admin/run_typed", ADD)
    before = await jobs_count(standalone)
    for url in (
        "/api/w/main/jobs/run/p/u/admin/run_typed",
        f"/api/w/main/jobs/run/h/{digest}",
        "/api/w/main/jobs/run_wait_result/p/u/admin/run_typed",
        f"/api/w/main/jobs/run_wait_result/h/{digest}",
    ):
        response = gristmill.post(url, json=args)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["location"], error["message"]) == (location, message)
    assert await jobs_count(standalone) == before


def test_nul_characters_are_400_naming_the_argument(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/run_nul", "def main(s: str):\n    return s\n")
    for url in ("/api/w/main/jobs/run/p/u/admin/run_nul", "/api/w/main/jobs/run/preview"):
        body: dict[str, Any] = {"s": "a\u0000b"}
        if url.endswith("preview"):
            body = {
                "content": "def main(s: str):\n    return s\n",
                "language": "python3",
                "args": body,
            }
        response = gristmill.post(url, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["location"] == "args.s"


def test_a_body_that_is_not_an_object_is_400(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/run_body", ADD)
    response = gristmill.post(
        "/api/w/main/jobs/run/p/u/admin/run_body",
        content=b"[1, 2]",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400


def test_archived_scripts_run_by_hash_only(gristmill: httpx.Client) -> None:
    digest = save(gristmill, "u/admin/run_archived", ADD)
    assert gristmill.post("/api/w/main/scripts/archive/p/u/admin/run_archived").status_code == 200
    by_path = gristmill.post("/api/w/main/jobs/run/p/u/admin/run_archived", json={"a": 1})
    assert by_path.status_code == 404
    assert "archived" in by_path.json()["error"]["message"]
    by_hash = gristmill.post(f"/api/w/main/jobs/run_wait_result/h/{digest}", json={"a": 1})
    assert (by_hash.status_code, by_hash.json()) == (200, 3)


# -- run and wait ---------------------------------------------------------------------------------


def test_run_wait_result_by_path_and_hash(gristmill: httpx.Client) -> None:
    digest = save(gristmill, "u/admin/wait_add", ADD)
    response = gristmill.post("/api/w/main/jobs/run_wait_result/p/u/admin/wait_add", json={"a": 1})
    assert (response.status_code, response.json()) == (200, 3)
    assert response.headers["content-type"].startswith("application/json")
    job_id = response.headers["x-gristmill-job-id"]
    assert job(gristmill, job_id)["type"] == "CompletedJob"
    by_hash = gristmill.post(f"/api/w/main/jobs/run_wait_result/h/{digest}", json={"a": 5, "b": 5})
    assert (by_hash.status_code, by_hash.json()) == (200, 10)


def test_run_wait_result_answers_any_json(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/wait_json", "def main(v):\n    return v\n")
    for value in ("text", None, [1, "two"], {"nested": {"ok": True}}, 1.5):
        response = gristmill.post(
            "/api/w/main/jobs/run_wait_result/p/u/admin/wait_json", json={"v": value}
        )
        assert (response.status_code, response.json()) == (200, value)


def test_run_wait_result_with_get_and_a_payload(gristmill: httpx.Client) -> None:
    save(gristmill, "f/run/get_add", ADD)
    payload = base64.b64encode(json.dumps({"a": 20, "b": 22}).encode()).decode()
    response = gristmill.get(
        "/api/w/main/jobs/run_wait_result/p/f/run/get_add", params={"payload": payload}
    )
    assert (response.status_code, response.json()) == (200, 42)
    # URL-safe and unpadded base64 is accepted too.
    urlsafe = base64.urlsafe_b64encode(json.dumps({"a": 1, "b": 1}).encode()).decode().rstrip("=")
    response = gristmill.get(
        "/api/w/main/jobs/run_wait_result/p/f/run/get_add", params={"payload": urlsafe}
    )
    assert (response.status_code, response.json()) == (200, 2)
    for bad in ("%%%", base64.b64encode(b"[1]").decode(), base64.b64encode(b"{nope").decode()):
        response = gristmill.get(
            "/api/w/main/jobs/run_wait_result/p/f/run/get_add", params={"payload": bad}
        )
        assert response.status_code == 400, bad
        assert response.json()["error"]["location"] == "payload"


def test_a_failed_run_answers_its_error_with_the_traceback(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/wait_fails", FAILS)
    response = gristmill.post(
        "/api/w/main/jobs/run_wait_result/p/u/admin/wait_fails", json={"x": 1}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["name"] == "ZeroDivisionError"
    assert "division by zero" in error["message"]
    assert "line 3" in error["stack"]
    assert error["job_id"] == response.headers["x-gristmill-job-id"]
    assert wait_result(gristmill, error["job_id"])["success"] is False


def test_a_slow_run_answers_a_timeout_naming_the_job_which_keeps_running(
    gristmill: httpx.Client,
) -> None:
    save(gristmill, "u/admin/wait_slow", SLOW)
    started = time.monotonic()
    response = gristmill.post(
        "/api/w/main/jobs/run_wait_result/p/u/admin/wait_slow",
        params={"wait_timeout_s": 0.5},
        json={"seconds": 2},
    )
    assert time.monotonic() - started < 2
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    job_id = error["data"]["job_id"]
    assert error["code"] == "wait_timeout"
    assert job_id in error["message"]
    assert response.headers["x-gristmill-job-id"] == job_id
    # Not canceled: it finishes on its own.
    assert wait_result(gristmill, job_id)["result"] == "slept"


def test_a_retry_with_the_same_idempotency_key_waits_for_the_same_job(
    gristmill: httpx.Client,
) -> None:
    save(gristmill, "u/admin/wait_retry", SLOW)
    url = "/api/w/main/jobs/run_wait_result/p/u/admin/wait_retry"
    params: dict[str, Any] = {"idempotency_key": "slow-1", "wait_timeout_s": 0.2}
    first = gristmill.post(url, params=params, json={"seconds": 1})
    assert first.status_code == 504
    params["wait_timeout_s"] = 30
    second = gristmill.post(url, params=params, json={"seconds": 1})
    assert (second.status_code, second.json()) == (200, "slept")
    assert second.headers["x-gristmill-job-id"] == first.json()["error"]["data"]["job_id"]


def test_wait_timeout_is_bounded(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/wait_bounded", ADD)
    for bad in (0, -1, 10_000):
        response = gristmill.post(
            "/api/w/main/jobs/run_wait_result/p/u/admin/wait_bounded",
            params={"wait_timeout_s": bad},
            json={"a": 1},
        )
        assert response.status_code == 400, bad


def test_run_wait_result_preview(gristmill: httpx.Client) -> None:
    ok = gristmill.post(
        "/api/w/main/jobs/run_wait_result/preview",
        json={"content": ADD, "language": "python3", "args": {"a": 2}},
    )
    assert (ok.status_code, ok.json()) == (200, 4)
    failed = gristmill.post(
        "/api/w/main/jobs/run_wait_result/preview",
        json={"content": FAILS, "language": "python3", "args": {"x": 2}},
    )
    assert failed.status_code == 422
    assert failed.json()["error"]["name"] == "ZeroDivisionError"
    bash = gristmill.post(
        "/api/w/main/jobs/run_wait_result/preview",
        json={"content": GREET, "language": "bash", "args": {"name": "bo", "greeting": "hey"}},
    )
    assert (bash.status_code, bash.json()) == (200, "hey bo")
    bad = gristmill.post(
        "/api/w/main/jobs/run_wait_result/preview", json={"content": "x", "language": "cobol"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["location"] == "runnable.language"


def test_the_endpoints_need_a_token(standalone: harness.Standalone) -> None:
    response = httpx.post(f"{standalone.base_url}/api/w/main/jobs/run/p/u/admin/x", json={})
    assert response.status_code == 401
