"""Flows over HTTP against a real ``gristmill up``: save, run, approve, user states."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import httpx
import msgspec
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from gristmill.common.flows.view import flow_status_json
from tests.flows.harness import py
from tests.scripts import standalone as harness
from tests.scripts.standalone import Standalone, wait_result

standalone = harness.standalone
gristmill = harness.gristmill

ADD = "def main(x, y=1):\n    return x + y\n"


def document(path: str, *modules: dict[str, Any], **value: Any) -> dict[str, Any]:
    return {
        "path": path,
        "summary": "a flow",
        "description": "",
        "value": {"modules": list(modules), **value},
        "schema": {
            "type": "object",
            "properties": {"n": {"type": "integer", "default": 1}},
        },
    }


def test_save_read_update_list_archive_delete(gristmill: httpx.Client) -> None:
    doc = document("f/api/crud", py("a", ADD, x="flow_input.n"))
    doc["future_top_level"] = {"kept": [1, 2]}
    doc["value"]["modules"][0]["unknown_module_field"] = "kept"
    created = gristmill.post("/api/w/main/flows/create", json=doc)
    assert created.status_code == 201, created.text
    assert created.text == "f/api/crud"
    assert gristmill.post("/api/w/main/flows/create", json=doc).status_code == 409
    got = gristmill.get("/api/w/main/flows/get/f/api/crud").json()
    assert got["value"] == doc["value"]
    assert got["future_top_level"] == {"kept": [1, 2]}
    assert got["summary"] == "a flow"
    assert got["edited_by"] == "admin" or got["edited_by"]
    doc["summary"] = "renamed"
    assert gristmill.post("/api/w/main/flows/update/f/api/crud", json=doc).status_code == 200
    assert gristmill.get("/api/w/main/flows/get/f/api/crud").json()["version"] == 2
    listed = gristmill.get("/api/w/main/flows/list", params={"path_start": "f/api/"}).json()
    assert [f["path"] for f in listed] == ["f/api/crud"]
    assert gristmill.get("/api/w/main/flows/exists/f/api/crud").json() is True
    archived = gristmill.post("/api/w/main/flows/archive/f/api/crud", json={"archived": True})
    assert archived.status_code == 200
    assert gristmill.get("/api/w/main/flows/list", params={"path_start": "f/api/"}).json() == []
    assert gristmill.post("/api/w/main/jobs/run/f/f/api/crud", json={}).status_code == 404
    assert gristmill.delete("/api/w/main/flows/delete/f/api/crud").status_code == 200
    assert gristmill.get("/api/w/main/flows/get/f/api/crud").status_code == 404


def test_yaml_in_and_out(gristmill: httpx.Client) -> None:
    doc = document("f/api/yaml", py("a", ADD, x="flow_input.n"))
    body = yaml.safe_dump(doc, sort_keys=False)
    created = gristmill.post(
        "/api/w/main/flows/create", content=body, headers={"content-type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    answer = gristmill.get(
        "/api/w/main/flows/get/f/api/yaml", headers={"accept": "application/yaml"}
    )
    assert answer.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(answer.text)["value"] == doc["value"]
    result = gristmill.post(
        "/api/w/main/jobs/run_wait_result/f/f/api/yaml",
        content="n: 41\n",
        headers={"content-type": "application/yaml"},
    )
    assert result.status_code == 200, result.text
    assert result.json() == 42


def test_invalid_flow_is_refused_naming_the_module(gristmill: httpx.Client) -> None:
    doc = document("f/api/bad", py("a", ADD, x="1"), py("b", ADD, x="results.zz"))
    answer = gristmill.post("/api/w/main/flows/create", json=doc)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["location"] == "value.modules[1].value.input_transforms.x.expr"
    assert "no step 'zz'" in error["message"]
    preview = gristmill.post(
        "/api/w/main/jobs/run/preview_flow",
        json={"value": {"modules": [py("a", ADD, x="((")]}, "args": {}},
    )
    assert preview.status_code == 400
    assert "SyntaxError" in preview.json()["error"]["message"]


async def test_run_by_path_and_the_job_view(
    gristmill: httpx.Client, standalone: Standalone
) -> None:
    doc = document(
        "f/api/run",
        py("a", ADD, x="flow_input.n"),
        {
            "id": "l",
            "value": {
                "type": "forloopflow",
                "iterator": {"type": "javascript", "expr": "[1, 2, 3]"},
                "skip_failures": False,
                "parallel": True,
                "modules": [py("m", ADD, x="flow_input.iter.value", y="results.a")],
            },
        },
    )
    assert gristmill.post("/api/w/main/flows/create", json=doc).status_code == 201
    answer = gristmill.post("/api/w/main/jobs/run_wait_result/f/f/api/run", json={"n": 9})
    assert answer.status_code == 200, answer.text
    assert answer.json() == [11, 12, 13]
    job_id = uuid.UUID(answer.headers["X-Gristmill-Job-Id"])
    conn = await asyncpg.connect(standalone.database_url)
    try:
        from gristmill.common.db.pool import init_connection

        await init_connection(conn)
        status = await flow_status_json(conn, "main", job_id)
    finally:
        await conn.close()
    assert status is not None
    first, loop = status["modules"]
    assert (first["id"], first["type"], first["result"]) == ("a", "Success", 10)
    assert first["job"]
    assert first["duration_ms"] is not None
    assert loop["type"] == "Success"
    assert loop["result"] == [11, 12, 13]
    assert len(loop["flow_jobs"]) == 3
    assert loop["flow_jobs_success"] == [True, True, True]
    # Defaults of the schema apply; bad arguments are refused before anything runs.
    assert gristmill.post("/api/w/main/jobs/run_wait_result/f/f/api/run", json={}).json() == [
        3,
        4,
        5,
    ]
    bad = gristmill.post("/api/w/main/jobs/run/f/f/api/run", json={"n": "x"})
    assert bad.status_code == 400
    failed = gristmill.post(
        "/api/w/main/jobs/run/preview_flow",
        json={"value": {"modules": [py("a", "def main():\n    raise ValueError('no')\n")]}},
    )
    assert failed.status_code == 201
    outcome = wait_result(gristmill, failed.text)
    assert outcome["success"] is False
    assert outcome["result"]["error"]["step_id"] == "a"


def test_preview_and_early_return(gristmill: httpx.Client) -> None:
    value = {
        "modules": [
            py("a", ADD, x="flow_input.n"),
            {**py("b", "import time\ndef main():\n    time.sleep(3)\n    return 'late'\n")},
        ],
        "early_return": "a",
    }
    assert (
        gristmill.post(
            "/api/w/main/flows/create", json={**document("f/api/early"), "value": value}
        ).status_code
        == 201
    )
    started = time.monotonic()
    answer = gristmill.post("/api/w/main/jobs/run_wait_result/f/f/api/early", json={"n": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json() == 2
    assert time.monotonic() - started < 2.5
    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow",
        json={"value": {"modules": value["modules"]}, "args": {"n": 5}},
    ).text
    assert wait_result(gristmill, job_id)["result"] == "late"


def test_user_states(gristmill: httpx.Client) -> None:
    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow",
        json={"value": {"modules": [py("a", ADD, x="1")]}, "args": {}},
    ).text
    wait_result(gristmill, job_id)
    base = f"/api/w/main/jobs/flow/user_states/{job_id}"
    assert gristmill.get(f"{base}/counter").json() is None
    assert gristmill.post(f"{base}/counter", json={"n": 3}).status_code == 200
    assert gristmill.get(f"{base}/counter").json() == {"n": 3}
    assert gristmill.get(f"/api/w/main/jobs/flow/user_states/{uuid.uuid4()}/x").status_code == 404


def _suspended_step(gristmill: httpx.Client, job_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = gristmill.get("/api/w/main/jobs/list", params={"parent_job": job_id}).json()
        done = [j for j in job if j.get("flow_step_id") == "ask" and j["type"] == "CompletedJob"]
        if done:
            return str(done[0]["id"])
        time.sleep(0.05)
    raise AssertionError("the approval step did not run")


def _approval_flow(**suspend: Any) -> dict[str, Any]:
    return {
        "modules": [
            {
                **py("ask", "def main():\n    return 'asked'\n"),
                "suspend": {"required_events": 1, **suspend},
            },
            py("after", "def main(r, a):\n    return [r, a]\n", r="resume", a="approvers"),
        ]
    }


def test_approval_with_signed_urls(gristmill: httpx.Client) -> None:
    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow", json={"value": _approval_flow(), "args": {}}
    ).text
    step = _suspended_step(gristmill, job_id)
    urls = gristmill.get(
        f"/api/w/main/jobs/resume_urls/{step}/7", params={"approver": "carol"}
    ).json()
    assert set(urls) == {"approvalPage", "resume", "cancel"}
    forged = urls["resume"].replace("/7/", "/8/")
    assert httpx.post(forged, json={}, headers=gristmill.headers).status_code == 403
    time.sleep(0.3)
    assert (
        gristmill.get(f"/api/w/main/jobs_u/completed/get_result_maybe/{job_id}").json()["completed"]
        is False
    )
    resumed = httpx.post(urls["resume"], json={"ok": True}, headers=gristmill.headers)
    assert resumed.status_code == 200, resumed.text
    outcome = wait_result(gristmill, job_id)
    assert outcome["result"] == [{"ok": True}, ["carol"]]
    again = httpx.post(urls["resume"], json={"ok": True}, headers=gristmill.headers)
    assert again.status_code == 409


def test_denial_and_timeout_fail_the_step(gristmill: httpx.Client) -> None:
    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow", json={"value": _approval_flow(), "args": {}}
    ).text
    step = _suspended_step(gristmill, job_id)
    urls = gristmill.get(f"/api/w/main/jobs/resume_urls/{step}/1").json()
    assert httpx.get(urls["cancel"], headers=gristmill.headers).status_code == 200
    outcome = wait_result(gristmill, job_id)
    assert outcome["success"] is False
    assert outcome["result"]["error"]["name"] == "ApprovalDenied"

    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow", json={"value": _approval_flow(timeout=1), "args": {}}
    ).text
    outcome = wait_result(gristmill, job_id, timeout=30)
    assert outcome["success"] is False
    assert outcome["result"]["error"]["name"] == "Timeout"
    assert msgspec.json.encode(outcome)


def test_approval_rules(gristmill: httpx.Client, standalone: Standalone) -> None:
    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow",
        json={"value": _approval_flow(user_auth_required=True, self_approval_disabled=True)},
    ).text
    step = _suspended_step(gristmill, job_id)
    urls = gristmill.get(f"/api/w/main/jobs/resume_urls/{step}/3").json()
    # A signed URL is not an authenticated approval; the author may not approve.
    assert httpx.post(urls["resume"], json={}, headers=gristmill.headers).status_code == 403
    own = gristmill.post(f"/api/w/main/jobs/flow/resume/{step}", json={"by": "author"})
    assert own.status_code == 403
    import asyncio

    token = asyncio.run(standalone.token_for("bob"))
    other = httpx.post(
        f"{standalone.base_url}/api/w/main/jobs/flow/resume/{step}",
        json={"by": "bob"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert other.status_code == 200, other.text
    assert wait_result(gristmill, job_id)["result"] == [{"by": "bob"}, ["bob"]]


def test_steps_use_flow_user_states_through_wmill(gristmill: httpx.Client) -> None:
    setter = (
        "import wmill\n\ndef main():\n    wmill.set_flow_user_state('seen', {'n': 7})\n"
        "    return 1\n"
    )
    getter = "import wmill\n\ndef main():\n    return wmill.get_flow_user_state('seen')\n"
    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow",
        json={"value": {"modules": [py("a", setter), py("b", getter)]}},
    ).text
    outcome = wait_result(gristmill, job_id, timeout=60)
    assert outcome["result"] == {"n": 7}, outcome
    assert gristmill.get(f"/api/w/main/jobs/flow/user_states/{job_id}/seen").json() == {"n": 7}


def test_a_step_asks_for_its_own_resume_urls(gristmill: httpx.Client) -> None:
    ask = "import wmill\n\ndef main():\n    return wmill.get_resume_urls(approver='dana')\n"
    value = {
        "modules": [
            {**py("ask", ask), "suspend": {"required_events": 1, "timeout": 60}},
            py("after", "def main(r):\n    return r\n", r="resume"),
        ]
    }
    job_id = gristmill.post("/api/w/main/jobs/run/preview_flow", json={"value": value}).text
    step = _suspended_step(gristmill, job_id)
    urls = gristmill.get(f"/api/w/main/jobs_u/completed/get_result/{step}").json()
    assert set(urls) == {"approvalPage", "resume", "cancel"}, urls
    page = httpx.get(urls["approvalPage"], headers=gristmill.headers).json()
    assert page["job_id"] == job_id
    assert page["flow_status"]["modules"][0]["type"] == "WaitingForEvents"
    assert httpx.post(urls["resume"], json={"go": 1}, headers=gristmill.headers).status_code == 200
    assert wait_result(gristmill, job_id)["result"] == {"go": 1}


SLOW_DOUBLE = "import time\ndef main(v):\n    time.sleep(0.2)\n    return v * 2\n"


def test_job_view_shows_each_step_and_cached_steps(gristmill: httpx.Client) -> None:
    doc = document(
        "f/api/view",
        {**py("a", ADD, x="flow_input.n"), "cache_ttl": 600},
        py("b", SLOW_DOUBLE, v="results.a"),
    )
    assert gristmill.post("/api/w/main/flows/create", json=doc).status_code == 201
    views = []
    for _ in range(2):
        served_id = gristmill.post("/api/w/main/jobs/run/f/f/api/view", json={"n": 4}).text
        assert wait_result(gristmill, served_id)["result"] == 10
        job = gristmill.get(f"/api/w/main/jobs_u/get/{served_id}").json()
        views.append(job["flow_status"]["modules"])
    computed, served = views
    for module in computed:
        assert module["type"] == "Success"
        uuid.UUID(module["job"])
        assert module["started_at"]
        assert module["duration_ms"] is not None
    assert [m["result"] for m in computed] == [5, 10]
    assert computed[1]["duration_ms"] >= 200
    # The second run took step a from the cache: no job, the job that computed it.
    assert served[0]["cached"] is True
    assert served[0]["cached_from"] == computed[0]["job"]
    assert served[0]["result"] == 5
    assert "job" not in served[0]
    assert served[1]["job"] != computed[1]["job"]
    step = gristmill.get(f"/api/w/main/jobs_u/get/{served[1]['job']}").json()
    assert step["parent_job"] == served_id
    assert step["result"] == 10


def test_settings_kept_but_not_applied_are_reported_on_save(gristmill: httpx.Client) -> None:
    doc = document(
        "f/api/kept", py("a", ADD, x="flow_input.n"), same_worker=True, flow_env={"A": "1"}
    )
    created = gristmill.post("/api/w/main/flows/create", json=doc)
    assert created.status_code == 201, created.text
    assert created.text == "f/api/kept"
    warning = created.headers["x-gristmill-warning"]
    # same_worker is applied (tests/flows/test_same_worker.py): only flow_env is reported.
    assert warning.startswith("value.flow_env: flow_env is not passed to the steps")
    assert "same_worker" not in warning
    # Kept as sent, and the flow runs.
    saved = gristmill.get("/api/w/main/flows/get/f/api/kept").json()["value"]
    assert saved["same_worker"] is True
    assert saved["flow_env"] == {"A": "1"}
    answer = gristmill.post("/api/w/main/jobs/run_wait_result/f/f/api/kept", json={})
    assert answer.json() == 2
    del doc["value"]["flow_env"]
    updated = gristmill.post("/api/w/main/flows/update/f/api/kept", json=doc)
    assert updated.status_code == 200
    assert "x-gristmill-warning" not in updated.headers
