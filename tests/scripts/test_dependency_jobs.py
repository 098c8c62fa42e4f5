"""Saving a Python script resolves its dependencies once, in a dependency job."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.scripts.standalone import wait_result


def save(client: httpx.Client, path: str, content: str, **fields: Any) -> str:
    response = client.post(
        "/api/w/main/scripts/create",
        json={
            "path": path,
            "content": content,
            "language": "python3",
            "summary": "",
            "description": "",
            **fields,
        },
    )
    assert response.status_code == 201, response.text
    return response.text


def wait_lock(client: httpx.Client, path: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        script: dict[str, Any] = client.get(f"/api/w/main/scripts/get/p/{path}").json()
        if script["lock"] is not None or script["lock_error_logs"] is not None:
            return script
        time.sleep(0.1)
    raise AssertionError(f"no dependency outcome for {path} after {timeout}s")


def dependency_jobs(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = client.get(
        "/api/w/main/jobs/list", params={"script_path_exact": path, "job_kinds": "dependencies"}
    ).json()
    return jobs


def test_stdlib_script_gets_an_empty_lock(gristmill: httpx.Client) -> None:
    save(gristmill, "u/admin/deps_stdlib", "import json\ndef main():\n    return json.dumps(1)\n")
    script = wait_lock(gristmill, "u/admin/deps_stdlib")
    assert script["lock"] == ""
    assert script["lock_error_logs"] is None
    [job] = dependency_jobs(gristmill, "u/admin/deps_stdlib")
    assert job["success"] is True


@pytest.mark.slow
def test_third_party_script_is_locked_at_save_and_runs_from_its_lock(
    gristmill: httpx.Client,
) -> None:
    code = "import six\ndef main():\n    return six.__version__\n"
    saved = save(gristmill, "u/admin/deps_six", code)
    script = wait_lock(gristmill, "u/admin/deps_six")
    assert script["hash"] == saved
    assert script["lock"].startswith("six==")
    run = gristmill.post("/api/w/main/jobs/run/p/u/admin/deps_six", json={})
    assert run.status_code == 201, run.text
    result = wait_result(gristmill, run.text)
    assert result["success"], result
    assert script["lock"] == f"six=={result['result']}\n" or script["lock"].strip() == (
        f"six=={result['result']}"
    )
    logs = gristmill.get(f"/api/w/main/jobs_u/get_logs/{run.text}").text
    assert "using the job's lockfile" in logs  # no inference or resolution at run time


@pytest.mark.slow
def test_unresolvable_dependency_is_shown_on_the_script(gristmill: httpx.Client) -> None:
    code = "import gristmill_no_such_package_xyz\ndef main():\n    return 1\n"
    save(gristmill, "u/admin/deps_missing", code)
    script = wait_lock(gristmill, "u/admin/deps_missing")
    assert script["lock"] is None
    assert "gristmill-no-such-package-xyz" in script["lock_error_logs"].lower().replace("_", "-")
    [job] = dependency_jobs(gristmill, "u/admin/deps_missing")
    assert job["success"] is False


def test_a_script_imports_another_workspace_script(gristmill: httpx.Client) -> None:
    library = {"schema": {"type": "object", "properties": {}}}  # a module, no main()
    save(
        gristmill,
        "f/shared/helpers",
        "def shout(text):\n    return text.upper() + '!'\n",
        **library,
    )
    save(
        gristmill,
        "u/admin/uses_helper",
        "from f.shared.helpers import shout\ndef main(name: str):\n    return shout(name)\n",
    )
    run = gristmill.post("/api/w/main/jobs/run/p/u/admin/uses_helper", json={"name": "hi"})
    assert run.status_code == 201, run.text
    result = wait_result(gristmill, run.text)
    assert result == {"completed": True, "started": True, "success": True, "result": "HI!"}
    # A new version of the helper is what the next run imports.
    save(
        gristmill,
        "f/shared/helpers",
        "def shout(text):\n    return text.lower() + '?'\n",
        **library,
    )
    run = gristmill.post("/api/w/main/jobs/run/p/u/admin/uses_helper", json={"name": "HI"})
    assert wait_result(gristmill, run.text)["result"] == "hi?"
