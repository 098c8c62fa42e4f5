"""``gristmill up`` runs Python jobs that import third-party packages (real uv, real PyPI).

The network tests are ``slow``. That a cached run starts no uv at all is proven
in-process, where every process is counted (``tests/worker/test_dependencies.py``);
here the job's log says what happened and the worker's canonical line says how long
preparing took apart from running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.services import GristmillProcess, free_port, wait_http

TOKEN = "test-admin-token-0123456789"
SIX_VERSION = "import six\n\ndef main():\n    return six.__version__\n"
#: The first run resolves and downloads: allow for a slow link.
FIRST_RUN_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class Standalone:
    client: httpx.Client
    process: GristmillProcess
    data_dir: Path

    def run(self, content: str, **body: Any) -> str:
        response = self.client.post(
            "/api/w/main/jobs/run/preview",
            json={"content": content, "language": "python3", **body},
        )
        assert response.status_code == 201, response.text
        return response.text

    def wait(self, job_id: str, timeout: float = FIRST_RUN_TIMEOUT_S) -> dict[str, Any]:
        """The completed job (result, logs, ...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.client.get(f"/api/w/main/jobs_u/get/{job_id}").json()
            if job.get("type") == "CompletedJob":
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not complete in {timeout}s")

    def finished_line(self, job_id: str) -> dict[str, Any]:
        """The worker's canonical "job finished" log line for ``job_id``."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in self.process.output().splitlines():
                if job_id in line and '"job finished"' in line:
                    entry: dict[str, Any] = json.loads(line)
                    return entry
            time.sleep(0.05)
        raise AssertionError(f"no 'job finished' line for {job_id}")


@pytest.fixture
def standalone(
    spawn: Callable[..., GristmillProcess], database_url: str, tmp_path: Path
) -> Iterator[Standalone]:
    port = free_port()
    data_dir = tmp_path / "data"
    process = spawn(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": database_url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": TOKEN,
            "GRISTMILL_DATA_DIR": str(data_dir),
            "GRISTMILL_WORKERS": "2",
        },
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/version", process=process)
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        yield Standalone(client=client, process=process, data_dir=data_dir)
    process.assert_alive()


def test_stdlib_only_job_needs_no_environment(standalone: Standalone) -> None:
    job_id = standalone.run("import json\n\ndef main():\n    return json.dumps({'a': 1})\n")
    job = standalone.wait(job_id, timeout=30)
    assert job["success"] is True, job
    assert job["result"] == '{"a": 1}'
    assert "[gristmill]" not in (job["logs"] or "")  # no log at all, or none of ours
    # Neither resolved nor installed: nothing was ever written to the Python cache.
    assert not (standalone.data_dir / "cache" / "python").exists()
    assert standalone.finished_line(job_id)["prepare_ms"] < 1000


@pytest.mark.slow
def test_third_party_import_installs_once_then_runs_from_cache(standalone: Standalone) -> None:
    first_id = standalone.run(SIX_VERSION)
    first = standalone.wait(first_id)
    assert first["success"] is True, first
    version = first["result"]
    assert isinstance(version, str)
    assert version.split(".")[0].isdigit()
    assert "[gristmill] resolved 1 package in " in first["logs"]
    assert "[gristmill] environment ready in " in first["logs"]

    second_id = standalone.run(SIX_VERSION)
    second = standalone.wait(second_id, timeout=30)
    assert second["success"] is True, second
    assert second["result"] == version
    assert "[gristmill] lockfile cached (1 package)" in second["logs"]
    assert "[gristmill] environment ready (cached)" in second["logs"]
    assert "resolved" not in second["logs"]

    for job_id in (first_id, second_id):
        line = standalone.finished_line(job_id)
        assert line["success"] is True
        assert isinstance(line["prepare_ms"], int)
        assert isinstance(line["duration_ms"], int)


@pytest.mark.slow
def test_nonexistent_package_is_a_dependency_error(standalone: Standalone) -> None:
    name = "gristmill-surely-nonexistent-package-7f3a"
    job_id = standalone.run(f"# requirements:\n# {name}>=1\n\ndef main():\n    return 1\n")
    job = standalone.wait(job_id)
    assert job["success"] is False
    error = job["result"]["error"]
    assert error["name"] == "DependencyError"
    assert f"{name} was not found in the package registry" in error["message"]
    assert "[gristmill] DependencyError: resolving the script's dependencies failed" in job["logs"]


@pytest.mark.slow
def test_explicit_lock_is_used_as_is(standalone: Standalone) -> None:
    job_id = standalone.run(SIX_VERSION, lock="six==1.16.0\n")
    job = standalone.wait(job_id)
    assert job["success"] is True, job
    assert job["result"] == "1.16.0"
    assert "[gristmill] using the job's lockfile (1 package)" in job["logs"]
    assert "resolved" not in job["logs"]
