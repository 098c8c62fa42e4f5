"""``$res:`` and ``$var:`` arguments reach ``main`` as the values they name."""

from __future__ import annotations

import httpx

from tests.scripts.standalone import wait_result

SEED = """
from typing import TypedDict

class postgresql(TypedDict):
    host: str
    password: str

def main(c: postgresql, token: str = ""):
    return {"host": c["host"], "password": c["password"], "token": token}
"""


def test_resource_and_variable_references_are_resolved_in_the_job(
    gristmill: httpx.Client,
) -> None:
    assert (
        gristmill.post(
            "/api/w/main/variables/create",
            json={
                "path": "u/admin/pg_pw",
                "value": "hunter2",
                "is_secret": True,
                "description": "",
            },
        ).status_code
        == 201
    )
    gristmill.post(
        "/api/w/main/resources/type/create",
        json={"name": "postgresql", "schema": {"type": "object"}, "description": ""},
    )
    created = gristmill.post(
        "/api/w/main/resources/create",
        json={
            "path": "u/admin/pg",
            "resource_type": "postgresql",
            "value": {"host": "db.internal", "password": "$var:u/admin/pg_pw"},
        },
    )
    assert created.status_code == 201, created.text
    saved = gristmill.post(
        "/api/w/main/scripts/create",
        json={"path": "u/admin/uses_pg", "content": SEED, "language": "python3"},
    )
    assert saved.status_code == 201, saved.text
    run = gristmill.post(
        "/api/w/main/jobs/run/p/u/admin/uses_pg",
        json={"c": "$res:u/admin/pg", "token": "$var:u/admin/pg_pw"},
    )
    assert run.status_code == 201, run.text
    result = wait_result(gristmill, run.text)
    assert result["result"] == {"host": "db.internal", "password": "hunter2", "token": "hunter2"}
    # The stored arguments keep the references, never the secret.
    job = gristmill.get(f"/api/w/main/jobs_u/get/{run.text}").json()
    assert job["args"] == {"c": "$res:u/admin/pg", "token": "$var:u/admin/pg_pw"}

    missing = gristmill.post(
        "/api/w/main/jobs/run/p/u/admin/uses_pg", json={"c": "$res:u/admin/nope"}
    )
    error = wait_result(gristmill, missing.text)["result"]["error"]
    assert error["name"] == "ReferenceError"
    assert "argument 'c'" in error["message"]
