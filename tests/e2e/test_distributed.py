"""The distributed shape: gateway, dispatcher and worker as separate processes over Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.harness.services import GristmillProcess, free_port, wait_http

TOKEN = "distributed-token-0123456789"

pytestmark = pytest.mark.kafka


def test_job_submitted_over_http_runs_through_kafka(
    spawn: Callable[..., GristmillProcess], kafka_broker: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    common = {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_KAFKA_BOOTSTRAP": kafka_broker,
        "GRISTMILL_KAFKA_TOPIC_PREFIX": prefix,
        "GRISTMILL_KAFKA_PARTITIONS": "2",
        "GRISTMILL_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "GRISTMILL_DATA_DIR": str(tmp_path / "data"),
    }
    gateway = spawn(
        ["gateway"], {**common, "GRISTMILL_HTTP_PORT": str(port), "GRISTMILL_ADMIN_TOKEN": TOKEN}
    )
    dispatcher = spawn(["dispatcher"], common)
    worker = spawn(["worker"], common)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/version", process=gateway)

    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        job_ids = []
        for n in range(5):
            response = client.post(
                "/api/w/main/jobs/run/preview",
                json={
                    "language": "python3",
                    "content": (
                        "import os\ndef main(n: int):\n    return {'n': n, 'pid': os.getpid()}\n"
                    ),
                    "args": {"n": n},
                },
            )
            assert response.status_code == 201, response.text
            job_ids.append(response.text)
        results = {}
        deadline = time.monotonic() + 90
        while len(results) < len(job_ids) and time.monotonic() < deadline:
            for job_id in job_ids:
                if job_id in results:
                    continue
                body = client.get(f"/api/w/main/jobs_u/completed/get_result_maybe/{job_id}").json()
                if body["completed"]:
                    results[job_id] = body
            for process in (gateway, dispatcher, worker):
                process.assert_alive()
            time.sleep(0.1)
    assert len(results) == 5, f"only {len(results)} of 5 jobs completed"
    assert sorted(r["result"]["n"] for r in results.values()) == [0, 1, 2, 3, 4]
    assert all(r["success"] for r in results.values())
