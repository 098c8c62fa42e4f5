"""The schedules API: Windmill's paths and shapes, and clear errors for bad input."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gristmill.common.queue import Queue
from gristmill.common.tokens import create_token
from gristmill.gateway.app import create_app
from gristmill.gateway.context import GatewayContext
from tests.scheduler.conftest import ADMIN_TOKEN, HANDLER, SCRIPT, System

BOB_TOKEN = "schedules-bob-token-0123456789"
BASE = "/api/w/main/schedules"


def new_schedule(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": "u/admin/nightly",
        "schedule": "0 0 3 * * *",
        "timezone": "Europe/Paris",
        "script_path": SCRIPT,
        "is_flow": False,
        "args": {"n": 7},
    }
    body.update(fields)
    return body


@pytest.fixture
async def api(system: System) -> AsyncIterator[httpx.AsyncClient]:
    await system.pool.execute("INSERT INTO users (id, email) VALUES ('bob', 'bob@example.com')")
    await create_token(system.pool, user_id="bob", token=BOB_TOKEN)
    context = GatewayContext(pool=system.pool, queue=Queue(system.pool), bus=system.bus)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = create_app(context)
    ours = [str(w.message) for w in caught if "schedules" in str(w.message)]
    assert not ours, ours  # no deprecated parameter style in these handlers
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gateway.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield client


async def test_create_get_list_update_enable_delete(api: httpx.AsyncClient) -> None:
    created = await api.post(f"{BASE}/create", json=new_schedule(summary="nightly run"))
    assert created.status_code == 201, created.text
    assert created.text == "u/admin/nightly"
    assert (await api.get(f"{BASE}/exists/u/admin/nightly")).json() is True
    assert (await api.get(f"{BASE}/exists/u/admin/other")).json() is False

    got = (await api.get(f"{BASE}/get/u/admin/nightly")).json()
    assert {k: got[k] for k in ("path", "schedule", "timezone", "script_path", "is_flow")} == {
        "path": "u/admin/nightly",
        "schedule": "0 0 3 * * *",
        "timezone": "Europe/Paris",
        "script_path": SCRIPT,
        "is_flow": False,
    }
    assert got["args"] == {"n": 7}
    assert got["enabled"] is True
    assert got["summary"] == "nightly run"
    assert got["edited_by"] == "admin"
    assert got["email"] == "admin@localhost"
    assert got["extra_perms"] == {}
    assert got["catch_up"] == "skip"
    assert got["next_fire_at"].endswith(("T01:00:00Z", "T02:00:00Z"))  # 03:00 in Paris

    await api.post(f"{BASE}/create", json=new_schedule(path="f/ops/hourly", schedule="@hourly"))
    listed = (await api.get(f"{BASE}/list")).json()
    assert [s["path"] for s in listed] == ["f/ops/hourly", "u/admin/nightly"]
    assert [s["path"] for s in (await api.get(f"{BASE}/list?path_start=f/")).json()] == [
        "f/ops/hourly"
    ]
    by_args = await api.get(f"{BASE}/list", params={"args": '{"n": 7}'})
    assert len(by_args.json()) == 2
    assert (await api.get(f"{BASE}/list", params={"args": '{"n": 8}'})).json() == []
    assert (await api.get(f"{BASE}/list?is_flow=true")).json() == []
    assert len((await api.get(f"{BASE}/list?per_page=1&page=2")).json()) == 1

    edit = new_schedule(schedule="*/5 * * * *", timezone="UTC", catch_up="all")
    del edit["path"]
    updated = await api.post(f"{BASE}/update/u/admin/nightly", json=edit)
    assert updated.status_code == 200, updated.text
    got = (await api.get(f"{BASE}/get/u/admin/nightly")).json()
    assert (got["schedule"], got["timezone"], got["catch_up"]) == ("*/5 * * * *", "UTC", "all")

    disabled = await api.post(f"{BASE}/setenabled/u/admin/nightly", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    assert (await api.get(f"{BASE}/get/u/admin/nightly")).json()["enabled"] is False
    await api.post(f"{BASE}/setenabled/u/admin/nightly", json={"enabled": True})
    assert (await api.get(f"{BASE}/get/u/admin/nightly")).json()["enabled"] is True

    deleted = await api.delete(f"{BASE}/delete/u/admin/nightly")
    assert deleted.status_code == 200, deleted.text
    assert (await api.get(f"{BASE}/get/u/admin/nightly")).status_code == 404
    assert (await api.delete(f"{BASE}/delete/u/admin/nightly")).status_code == 404


async def test_windmill_nulls_and_handlers_are_accepted(api: httpx.AsyncClient) -> None:
    body = new_schedule(
        on_failure=f"script/{HANDLER}",
        on_failure_times=3,
        on_failure_exact=None,
        on_recovery=HANDLER,
        on_recovery_times=None,
        on_success=None,
        retry={"constant": {"attempts": 2, "seconds": 5}},
        no_flow_overlap=True,
        tag=None,
        summary=None,
        cron_version="v2",
        paused_until=None,
        ws_error_handler_muted=False,
    )
    created = await api.post(f"{BASE}/create", json=body)
    assert created.status_code == 201, created.text
    got = (await api.get(f"{BASE}/get/u/admin/nightly")).json()
    assert (got["on_failure"], got["on_failure_times"], got["on_failure_exact"]) == (
        f"script/{HANDLER}",
        3,
        False,
    )
    assert (got["on_recovery"], got["on_recovery_times"]) == (HANDLER, 1)
    assert got["retry"] == {"constant": {"attempts": 2, "seconds": 5}}
    assert got["no_flow_overlap"] is True


@pytest.mark.parametrize(
    ("fields", "status", "location", "message"),
    [
        ({"schedule": "0 0 25 * * *"}, 400, "schedule", "hour field '25'"),
        ({"schedule": "every day"}, 400, "schedule", "has 2"),
        ({"timezone": "Mars/Olympus"}, 400, "timezone", "unknown time zone"),
        ({"cron_version": "v9"}, 400, "cron_version", "v9"),
        ({"script_path": "u/admin/missing"}, 404, "script_path", "not found"),
        ({"script_path": "u/admin/missing", "is_flow": True}, 404, "script_path", "flow"),
        ({"script_path": "nope"}, 400, "script_path", "invalid script path"),
        ({"path": "nightly"}, 400, "path", "u/<user>/"),
        ({"on_failure": "script/u/admin/gone"}, 404, "on_failure", "not found"),
        ({"on_recovery_times": 0}, 400, "on_recovery_times", "at least 1"),
        ({"on_failure_times": 1.5}, 400, "on_failure_times", "whole number"),
        ({"catch_up": "maybe"}, 400, "catch_up", "skip"),
        ({"catch_up_max": 0}, 400, "catch_up_max", "between"),
        ({"tag": "bad tag"}, 400, "tag", "invalid tag"),
        ({"retry": {"constant": {"attempts": -1}}}, 400, "retry.constant.attempts", "non-neg"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    api: httpx.AsyncClient, fields: dict[str, Any], status: int, location: str, message: str
) -> None:
    response = await api.post(f"{BASE}/create", json=new_schedule(**fields))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["location"] == location
    assert message in error["message"]
    assert (await api.get(f"{BASE}/list")).json() == []


async def test_malformed_bodies_are_400(api: httpx.AsyncClient) -> None:
    missing = new_schedule()
    del missing["timezone"]
    response = await api.post(f"{BASE}/create", json=missing)
    assert response.status_code == 400
    assert "timezone" in response.text
    wrong_type = await api.post(f"{BASE}/create", json=new_schedule(args=[1, 2]))
    assert wrong_type.status_code == 400


async def test_a_path_is_taken_once(api: httpx.AsyncClient) -> None:
    assert (await api.post(f"{BASE}/create", json=new_schedule())).status_code == 201
    again = await api.post(f"{BASE}/create", json=new_schedule())
    assert again.status_code == 409
    assert again.json()["error"]["location"] == "path"


async def test_updating_an_unknown_schedule_is_404(api: httpx.AsyncClient) -> None:
    edit = new_schedule()
    del edit["path"]
    response = await api.post(f"{BASE}/update/u/admin/nothing", json=edit)
    assert response.status_code == 404
    enable = await api.post(f"{BASE}/setenabled/u/admin/nothing", json={"enabled": True})
    assert enable.status_code == 404


async def test_users_manage_only_their_own_schedules(api: httpx.AsyncClient) -> None:
    await api.post(f"{BASE}/create", json=new_schedule())
    bob = {"Authorization": f"Bearer {BOB_TOKEN}"}
    forbidden = await api.get(f"{BASE}/get/u/admin/nightly", headers=bob)
    assert forbidden.status_code == 403
    mine = await api.post(f"{BASE}/create", json=new_schedule(path="u/bob/mine"), headers=bob)
    assert mine.status_code == 201, mine.text
    theirs = await api.post(f"{BASE}/create", json=new_schedule(path="u/alice/x"), headers=bob)
    assert theirs.status_code == 403
    listed = (await api.get(f"{BASE}/list", headers=bob)).json()
    assert [s["path"] for s in listed] == ["u/bob/mine"]
    assert listed[0]["email"] == "bob@example.com"


async def test_preview_answers_the_next_instants_in_utc(api: httpx.AsyncClient) -> None:
    # Daily at 02:30 in Paris across the spring change: 03:30 CEST on the day of the change.
    response = await api.post(
        "/api/schedules/preview",
        params={"after": "2024-03-29T12:00:00Z", "count": 3},
        json={"schedule": "0 30 2 * * *", "timezone": "Europe/Paris"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == [
        "2024-03-30T01:30:00Z",
        "2024-03-31T01:30:00Z",
        "2024-04-01T00:30:00Z",
    ]
    default = await api.post(
        "/api/schedules/preview", json={"schedule": "*/10 * * * * *", "timezone": "UTC"}
    )
    assert len(default.json()) == 5


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"schedule": "* * *", "timezone": "UTC"}, "schedule"),
        ({"schedule": "* * * * *", "timezone": "Nowhere/City"}, "timezone"),
    ],
)
async def test_preview_of_bad_input_is_400(
    api: httpx.AsyncClient, body: dict[str, str], location: str
) -> None:
    response = await api.post("/api/schedules/preview", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["location"] == location


async def test_preview_count_is_bounded(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/schedules/preview",
        params={"count": 1000},
        json={"schedule": "* * * * *", "timezone": "UTC"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["location"] == "count"
