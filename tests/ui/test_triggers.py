"""The triggers page in a real browser: create and edit triggers of every kind, see
the API's validation errors next to the field they name and each trigger's state."""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.harness.services import free_port
from tests.ui.conftest import Shots
from tests.ui.test_journeys import save_script, unique

GREETER = 'def main(name: str, greeting: str = "hello"):\n    return f"{greeting} {name}"\n'


def section(page: Page, kind: str) -> Locator:
    return page.locator(f"section[data-kind={kind}]")


def open_new_form(page: Page, kind: str) -> Locator:
    part = section(page, kind)
    part.locator("h2 button").click()
    form = part.locator("form.trigger-form")
    expect(form).to_be_visible()
    return form


def ensure_resource_type(gristmill: httpx.Client, name: str) -> None:
    answer = gristmill.post("/api/w/main/resources/type/create", json={"name": name})
    assert answer.status_code in (201, 409), answer.text


def test_create_an_http_route_call_it_then_make_it_async(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    script = f"u/admin/{unique('greeter')}"
    save_script(gristmill, script, GREETER)
    path = f"u/admin/{unique('route')}"
    route = f"ui/{unique('hello')}/:name"
    page.goto(f"/triggers?script={script}")
    form = open_new_form(page, "http_triggers")
    expect(form.locator("input[name=script_path]")).to_have_value(script)
    form.locator("input[name=path]").fill(path)
    form.locator("input[name=route_path]").fill("not a route!")
    form.get_by_role("button", name="Create").click()
    # The server's error, next to the field it names.
    error = form.locator(".field-error[data-field=route_path]")
    expect(error).to_contain_text("invalid route_path segment")
    shot(page, "route-error")
    form.locator("input[name=route_path]").fill(route)
    form.locator("select[name=http_method]").select_option("post")
    expect(form.locator(".route-url")).to_have_text(f"POST /api/r/main/{route}")
    form.get_by_role("button", name="Create").click()
    row = page.locator(f"tr[data-trigger='{path}']")
    expect(row).to_be_visible()
    expect(row.locator(".source")).to_have_text(f"POST /api/r/main/{route}")
    expect(page.locator("form.trigger-form")).to_have_count(0)
    shot(page, "route-created")

    url = f"/api/r/main/{route.replace(':name', 'world')}"
    with httpx.Client(base_url=gristmill.base_url, timeout=30) as anonymous:
        answer = anonymous.post(url, json={"greeting": "hi"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == "hi world"

        # Edit it: asynchronous now, so the call answers the job's id at once.
        row.get_by_role("button", name=f"edit {path}").click()
        edit = section(page, "http_triggers").locator("form.trigger-form")
        expect(edit.locator("input[name=path]")).to_have_value(path)
        expect(edit.locator("input[name=route_path]")).to_have_value(route)
        edit.locator("select[name=request_type]").select_option("async")
        edit.get_by_role("button", name="Save").click()
        expect(page.locator("form.trigger-form")).to_have_count(0)
        stored = gristmill.get(f"/api/w/main/http_triggers/get/{path}").json()
        assert stored["request_type"] == "async"
        assert stored["script_path"] == script
        answer = anonymous.post(url, json={"greeting": "hey"})
        assert answer.status_code == 202, answer.text
        assert answer.headers["x-gristmill-job-id"] == answer.text.strip()

        # Disabled from its switch, the route no longer exists.
        row.get_by_role("switch").click()
        expect(row.get_by_role("switch")).not_to_be_checked()
        deadline = time.monotonic() + 10
        while anonymous.post(url, json={}).status_code != 404:
            assert time.monotonic() < deadline, "the disabled route still answers"
            time.sleep(0.1)


def test_a_kafka_topic_error_shows_next_to_that_topic(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    script = f"u/admin/{unique('consume')}"
    save_script(gristmill, script, "def main(value=None):\n    return value\n")
    ensure_resource_type(gristmill, "kafka")
    resource = f"u/admin/{unique('kafka')}"
    created = gristmill.post(
        "/api/w/main/resources/create",
        json={
            "path": resource,
            "value": {"brokers": [f"127.0.0.1:{free_port()}"]},
            "resource_type": "kafka",
        },
    )
    assert created.status_code == 201, created.text
    path = f"u/admin/{unique('orders')}"
    page.goto(f"/triggers?script={script}")
    form = open_new_form(page, "kafka_triggers")
    form.locator("input[name=path]").fill(path)
    form.locator("input[name=kafka_resource_path]").fill(resource)
    form.locator("input[name='topics[0]']").fill("orders")
    form.get_by_role("button", name="Add a topic").click()
    form.locator("input[name='topics[1]']").fill("no spaces allowed")
    form.get_by_role("button", name="Create").click()
    # Next to the second topic, and nowhere else.
    entry = form.locator(".entry", has=page.locator("input[name='topics[1]']"))
    expect(entry.locator(".field-error[data-field='topics[1]']")).to_contain_text(
        "invalid topic name 'no spaces allowed'"
    )
    expect(form.locator(".field-error")).to_have_count(1)
    expect(form.locator(".error-box")).to_have_count(0)
    shot(page, "topic-error")
    assert gristmill.get(f"/api/w/main/kafka_triggers/exists/{path}").json() is False
    # A resource that does not exist is named too.
    form.locator("input[name=kafka_resource_path]").fill(f"{resource}_missing")
    form.get_by_role("button", name="Create").click()
    expect(form.locator(".field-error[data-field=kafka_resource_path]")).to_contain_text(
        "not found"
    )
    form.locator("input[name=kafka_resource_path]").fill(resource)
    form.locator("input[name='topics[1]']").fill("orders.retry")
    form.get_by_role("button", name="Create").click()
    row = page.locator(f"tr[data-trigger='{path}']")
    expect(row.locator(".source")).to_have_text(f"orders, orders.retry ({resource})")
    stored = gristmill.get(f"/api/w/main/kafka_triggers/get/{path}").json()
    assert stored["topics"] == ["orders", "orders.retry"]
    assert stored["enabled"] is True
    shot(page, "kafka-created")


def test_a_websocket_trigger_shows_its_connection_error(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    script = f"u/admin/{unique('on_message')}"
    save_script(gristmill, script, "def main(msg=None):\n    return msg\n")
    path = f"u/admin/{unique('feed')}"
    nobody = f"ws://127.0.0.1:{free_port()}/feed"
    page.goto(f"/triggers?script={script}")
    form = open_new_form(page, "websocket_triggers")
    form.locator("input[name=path]").fill(path)
    form.locator("input[name=url]").fill("http://not-a-socket")
    form.get_by_role("button", name="Add a filter").click()
    form.locator("input[name='filters[0].key']").fill("type")
    form.locator("input[name='filters[0].value']").fill('"trade"')
    form.get_by_role("button", name="Create").click()
    expect(form.locator(".field-error[data-field=url]")).to_be_visible()
    form.locator("input[name=url]").fill(nobody)
    form.get_by_role("button", name="Create").click()
    row = page.locator(f"tr[data-trigger='{path}']")
    expect(row.locator(".source")).to_have_text(nobody)
    stored = gristmill.get(f"/api/w/main/websocket_triggers/get/{path}").json()
    assert stored["filters"] == [{"key": "type", "value": "trade"}]
    # Nothing listens there: the triggers service records why, and the page shows it.
    status = row.locator(".trigger-status")
    deadline = time.monotonic() + 30
    while status.get_attribute("data-state") != "error":
        assert time.monotonic() < deadline, status.inner_text()
        time.sleep(0.5)
        page.get_by_role("button", name="Refresh").click()
    expect(status).to_contain_text(
        gristmill.get(f"/api/w/main/websocket_triggers/get/{path}").json()["error"].split(" (")[0]
    )
    shot(page, "websocket-error")


def test_an_email_trigger_from_its_form(page: Page, gristmill: httpx.Client) -> None:
    script = f"u/admin/{unique('inbox')}"
    save_script(gristmill, script, "def main(**kwargs):\n    return 1\n")
    path = f"u/admin/{unique('mail')}"
    local = unique("invoices")
    page.goto(f"/triggers?script={script}")
    form = open_new_form(page, "email_triggers")
    form.locator("input[name=path]").fill(path)
    form.locator("input[name=local_part]").fill("two words")
    form.get_by_role("button", name="Create").click()
    expect(form.locator(".field-error[data-field=local_part]")).to_contain_text("local_part")
    form.locator("input[name=local_part]").fill(local)
    form.locator("input[name=workspaced_local_part]").check()
    form.get_by_role("button", name="Create").click()
    row = page.locator(f"tr[data-trigger='{path}']")
    expect(row.locator(".source")).to_have_text(f"main-{local}")
    # Deleted from its row.
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"delete {path}").click()
    expect(row).to_have_count(0)
    assert gristmill.get(f"/api/w/main/email_triggers/exists/{path}").json() is False
