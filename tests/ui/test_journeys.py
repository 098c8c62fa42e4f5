"""Journeys through the web UI in a real browser against a real ``gristmill up``."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.ui.conftest import Shots
from tests.ui.examples import PNG_SCRIPT, SEED, SLOW_PRINTER


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def set_code(page: Page, text: str) -> None:
    """Replace the CodeMirror editor's content as a person pasting would."""
    editor = page.locator(".cm-content").first
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def save_script(gristmill: httpx.Client, path: str, content: str) -> None:
    answer = gristmill.post(
        "/api/w/main/scripts/create",
        json={"path": path, "content": content, "language": "python3", "summary": ""},
    )
    assert answer.status_code == 201, answer.text


def field(page: Page, control_id: str) -> Any:
    """The form group (label, control, errors) around the control ``control_id``."""
    return page.locator("fieldset#root > .form-group", has=page.locator(f"#{control_id}"))


def check_seed_form(page: Page, resource: str | None) -> None:
    """Exactly: a number input, a two-option select, a postgresql resource picker,
    a text field with its default and an object editor with its default."""
    expect(page.locator("fieldset#root > .form-group")).to_have_count(5)
    expect(page.locator("input#root_a")).to_have_attribute("type", "number")
    options = page.locator("select#root_b option")
    labels = options.evaluate_all("os => os.filter(o => o.value !== '').map(o => o.text)")
    assert labels == ["my", "enum"]
    picker = page.locator("select#root_c")
    expect(picker).to_have_attribute("data-resource-type", "postgresql")
    if resource is not None:
        expect(picker.locator(f"option[value='$res:{resource}']")).to_have_count(1)
    expect(page.locator("input#root_d")).to_have_attribute("type", "text")
    expect(page.locator("input#root_d")).to_have_value("default")
    editor = page.locator("textarea#root_e")
    expect(editor).to_be_visible()
    assert json.loads(editor.input_value()) == {"nested": "object"}


def test_sign_in_with_a_token_keeps_the_deep_link(anonymous_page: Page, shot: Shots) -> None:
    page = anonymous_page
    page.goto("/runs")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    shot(page, "sign-in")
    page.fill("input[name=token]", "not-a-token")
    page.click("button:has-text('Sign in')")
    expect(page.get_by_role("alert")).to_contain_text("invalid")
    page.fill("input[name=token]", "scripts-test-admin-token-0123456789")
    page.click("button:has-text('Sign in')")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    assert page.url.endswith("/runs")
    assert page.evaluate("localStorage.getItem('gristmill.token')")
    shot(page, "signed-in")
    page.goto("/")
    expect(page.get_by_role("heading", name="Recent runs")).to_be_visible()


def test_seed_script_from_the_editor_to_its_result(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    # A postgresql resource for the picker to offer.
    database = f"u/admin/{unique('db')}"
    gristmill.post("/api/w/main/resources/type/create", json={"name": "postgresql", "schema": None})
    created = gristmill.post(
        "/api/w/main/resources/create",
        json={
            "path": database,
            "resource_type": "postgresql",
            "value": {"host": "db", "port": 5432},
        },
    )
    assert created.status_code == 201, created.text
    path = f"u/admin/{unique('seed')}"

    page.goto("/scripts/new")
    page.fill("input[name=path]", path)
    set_code(page, SEED)
    # The preview follows the code as it is typed.
    expect(page.locator(".preview select#root_c")).to_be_visible()
    check_seed_form(page, database)
    shot(page, "editor-preview")
    page.click("button:has-text('Save')")
    expect(page.get_by_role("heading", name=path, exact=True)).to_be_visible()
    check_seed_form(page, database)
    assert gristmill.get(f"/api/w/main/scripts/get/p/{path}").json()["content"] == SEED

    # A validation message next to the field, before submitting.
    page.fill("input#root_a", "1.5")
    expect(field(page, "root_a").locator(".text-danger")).to_contain_text("integer")
    expect(field(page, "root_d").locator(".text-danger")).to_have_count(0)
    shot(page, "validation")

    page.fill("input#root_a", "7")
    page.select_option("select#root_b", "enum")
    page.select_option("select#root_c", f"$res:{database}")
    expect(field(page, "root_a").locator(".text-danger")).to_have_count(0)
    page.locator("input#root_d").press("Control+Enter")
    expect(page.locator(".job-page[data-status=success]")).to_be_visible()
    result = page.locator(".result[data-kind=json]")
    expect(result).to_contain_text('"enum"')
    expect(result).to_contain_text('"default"')
    expect(result.locator(".json-key")).to_have_text(["a: ", "b: ", "d: ", "e: ", "nested: "])
    job_id = page.url.rsplit("/", 1)[1]
    stored = gristmill.get(f"/api/w/main/jobs_u/completed/get_result/{job_id}").json()
    assert stored == {"a": 7, "b": "enum", "d": "default", "e": {"nested": "object"}}
    shot(page, "result")


def test_logs_stream_while_the_job_runs(page: Page, gristmill: httpx.Client, shot: Shots) -> None:
    path = f"u/admin/{unique('printer')}"
    save_script(gristmill, path, SLOW_PRINTER)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"/scripts/get/{path}")
    page.click("button:has-text('Run')")
    logs = page.locator("pre.logs")
    expect(logs).to_contain_text("first line", timeout=30_000)
    # Streamed with the token in a header, never in a URL (where logs would keep it).
    streams = [url for url in requested if "/getupdate_sse/" in url]
    assert streams
    assert not [url for url in requested if "token=" in url]
    # Seen live: the job still runs and has not printed its second line.
    expect(page.locator(".job-page[data-status=running]")).to_be_visible()
    assert "second line" not in logs.inner_text()
    shot(page, "live-logs")
    expect(logs).to_contain_text("second line", timeout=30_000)
    expect(page.locator(".job-page[data-status=success]")).to_be_visible()
    table = page.locator(".result[data-kind=table]")
    # Postgres (jsonb) keeps object keys in its own order.
    expect(table.locator("th")).to_have_count(2)
    assert sorted(table.locator("th").all_inner_texts()) == ["n", "name"]
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(page.locator("dd.duration")).not_to_be_empty()
    shot(page, "table-result")

    # The job has its own URL, shareable: a fresh load shows the same run.
    page.reload()
    expect(page.locator("pre.logs")).to_contain_text("second line")
    expect(page.locator(".result[data-kind=table] tbody tr")).to_have_count(2)


def test_image_results_render(page: Page, gristmill: httpx.Client, shot: Shots) -> None:
    path = f"u/admin/{unique('png')}"
    save_script(gristmill, path, PNG_SCRIPT)
    page.goto(f"/scripts/get/{path}")
    page.click("button:has-text('Run')")
    image = page.locator(".result[data-kind=image] img")
    expect(image).to_be_visible(timeout=30_000)
    assert image.evaluate("img => img.naturalWidth") == 1
    shot(page, "image")


def test_runs_list_filters_by_path_and_status(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    path = f"u/admin/{unique('listed')}"
    save_script(
        gristmill, path, "def main(fail: bool = False):\n    assert not fail\n    return 1\n"
    )
    ok = gristmill.post(f"/api/w/main/jobs/run_wait_result/p/{path}", json={})
    assert ok.status_code == 200, ok.text
    bad = gristmill.post(f"/api/w/main/jobs/run_wait_result/p/{path}", json={"fail": True})
    assert bad.status_code >= 400
    page.goto(f"/runs?path={path}")
    rows = page.locator("table.runs-table tbody tr")
    # Saving the script resolved its dependencies in a job of its own.
    expect(rows).to_have_count(3)
    page.select_option("select[name=kind]", "script")
    expect(rows).to_have_count(2)
    page.select_option("select[name=status]", "failure")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("[data-status]")).to_have_text("failure")
    assert "status=failure" in page.url
    assert "kind=script" in page.url
    shot(page, "runs-filtered")
    rows.first.locator("a.mono").click()
    expect(page.locator(".result[data-kind=error] .traceback")).to_contain_text("AssertionError")
    shot(page, "error")
    failed = page.url.rsplit("/", 1)[1]
    # Re-run with the same arguments: a new job, with the failing argument again.
    page.click("button:has-text('Re-run with the same arguments')")
    page.wait_for_url(lambda url: failed not in url)
    expect(page.locator(".job-page[data-status=failure]")).to_be_visible(timeout=30_000)
    rerun = page.url.rsplit("/", 1)[1]
    assert gristmill.get(f"/api/w/main/jobs_u/get_args/{rerun}").json() == {"fail": True}


FLOW = """summary: loop and branch
description: ""
schema:
  type: object
  properties:
    n: { type: integer, default: 3 }
value:
  modules:
    - id: numbers
      value:
        type: rawscript
        language: python3
        content: |
          import time
          def main(n: int):
              time.sleep(2)
              return list(range(1, n + 1))
        input_transforms:
          n: { type: javascript, expr: flow_input.n }
    - id: each
      value:
        type: forloopflow
        iterator: { type: javascript, expr: results.numbers }
        skip_failures: false
        modules:
          - id: square
            value:
              type: rawscript
              language: python3
              content: |
                import time
                def main(x: int):
                    time.sleep(3)
                    return x * x
              input_transforms:
                x: { type: javascript, expr: flow_input.iter.value }
    - id: size
      value:
        type: branchone
        branches:
          - summary: big
            expr: results.each.length > 2
            modules:
              - id: big
                value:
                  type: rawscript
                  language: python3
                  content: |
                    def main(squares: list):
                        return {"big": sum(squares)}
                  input_transforms:
                    squares: { type: javascript, expr: results.each }
        default:
          - id: small
            value:
              type: rawscript
              language: python3
              content: |
                def main(squares: list):
                    return {"small": sum(squares)}
              input_transforms:
                squares: { type: javascript, expr: results.each }
"""


def node_states(page: Page) -> dict[str, str]:
    states: dict[str, str] = page.locator(".flow-step").evaluate_all(
        "ns => Object.fromEntries(ns.map(n => [n.dataset.step, n.dataset.state]))"
    )
    return states


def test_flow_with_a_loop_and_a_branch_turns_green_step_by_step(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    path = f"f/ui/{unique('loop_branch')}"
    page.goto("/flows/new")
    page.fill("input[name=path]", path)
    set_code(page, FLOW)
    expect(page.locator(".flow-step")).to_have_count(6)
    page.click("button:has-text('Save')")
    expect(page.get_by_role("heading", name=path, exact=True)).to_be_visible()
    assert gristmill.get(f"/api/w/main/flows/get/{path}").status_code == 200
    shot(page, "flow-editor")
    page.click("button:has-text('Run')")
    expect(page.locator(".job-page .flow-step")).to_have_count(6)
    picker = page.locator(".iterations [data-loop=each] button.iteration")
    shown = page.locator(".flow-step[data-step=each] .flow-step-shown")
    square = page.locator(".flow-step[data-step=square]")
    seen: dict[str, set[str]] = {}
    taken = False
    inside = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = node_states(page)
        for step, state in states.items():
            seen.setdefault(step, set()).add(state)
        if page.locator(".job-page[data-status=success]").count() == 1:
            break
        if states.get("numbers") == "running" and not taken:
            shot(page, "flow-running")
            taken = True
        if not inside and picker.count() == 2:
            # Iteration 2 runs (its step sleeps): the steps inside show it, live...
            inside = True
            expect(shown).to_have_attribute("data-iteration", "2")
            assert square.get_attribute("data-state") in ("waiting", "running")
            # ...and picking iteration 1 shows its step already green, the loop still running.
            picker.nth(0).click()
            expect(picker.nth(0)).to_have_attribute("aria-pressed", "true")
            expect(square).to_have_attribute("data-state", "success")
            assert node_states(page)["each"] == "running"
            shot(page, "iteration-1-while-2-runs")
            picker.nth(1).click()
        time.sleep(0.1)
    assert inside, "the loop's second iteration was never seen running"
    final = node_states(page)
    shot(page, "flow-done")
    assert final == {
        "numbers": "success",
        "each": "success",
        "square": "success",
        "size": "success",
        "big": "success",
        "small": "skipped",
    }, final
    # Live: later steps were seen waiting (or running) before they turned green.
    assert seen["numbers"] & {"running", "waiting"}, seen
    assert seen["size"] & {"waiting", "running"}, seen
    expect(page.locator(".flow-step[data-step=each] .flow-step-detail")).to_have_text(
        "3/3 iterations"
    )
    expect(page.locator(".flow-step[data-step=size] .flow-step-detail")).to_have_text(
        "branch 1 taken"
    )
    expect(page.locator(".result[data-kind=json]")).to_contain_text("14")
    expect(picker).to_have_count(3)
    assert picker.evaluate_all("bs => bs.map(b => b.dataset.state)") == ["success"] * 3
    # Each iteration's own step: its job (from that iteration's flow_status) and result.
    flow_id = page.url.rsplit("/", 1)[1]
    flow_status = gristmill.get(f"/api/w/main/jobs_u/get/{flow_id}").json()["flow_status"]
    loop_status = next(m for m in flow_status["modules"] if m["id"] == "each")
    square_jobs = []
    for index in range(3):
        picker.nth(index).click()
        expect(shown).to_have_attribute("data-iteration", str(index + 1))
        expect(square).to_have_attribute("data-state", "success")
        opened = page.locator(".iterations [data-loop=each] a.iteration-run")
        iteration = loop_status["flow_jobs"][index]
        expect(opened).to_have_attribute("href", f"/runs/{iteration}")
        child = gristmill.get(f"/api/w/main/jobs_u/get/{iteration}").json()
        square_job = child["flow_status"]["modules"][0]["job"]
        expect(square.locator("a")).to_have_attribute("href", f"/runs/{square_job}")
        result = gristmill.get(f"/api/w/main/jobs_u/completed/get_result/{square_job}").json()
        assert result == (index + 1) ** 2
        square_jobs.append(square_job)
    assert len(set(square_jobs)) == 3
    shot(page, "iteration-3")
    # The branch taken is a child flow too: its step links to its own job.
    branch = next(m for m in flow_status["modules"] if m["id"] == "size")
    branch_status = gristmill.get(f"/api/w/main/jobs_u/get/{branch['job']}").json()["flow_status"]
    big_job = branch_status["modules"][0]["job"]
    big = page.locator(".flow-step[data-step=big] a")
    expect(big).to_have_attribute("href", f"/runs/{big_job}")


def test_flow_validation_error_names_the_module(page: Page) -> None:
    bad = FLOW.replace("expr: results.each.length > 2", "expr: results.zz.length > 2")
    page.goto("/flows/new")
    page.fill("input[name=path]", f"f/ui/{unique('bad')}")
    set_code(page, bad)
    page.click("button:has-text('Save')")
    error = page.locator(".error-box[data-kind=validation]")
    expect(error).to_contain_text("zz")
    expect(error.locator(".module")).to_contain_text("size")
    # The graph points at that module.
    expect(page.locator(".flow-step[data-flagged=true]")).to_have_attribute("data-step", "size")
    # The same document as JSON, and back.
    page.click(".segmented button:has-text('JSON')")
    expect(page.locator(".code-editor")).to_have_attribute("data-language", "json")
    expect(page.locator(".cm-content")).to_contain_text('"modules": [')
    page.click(".segmented button:has-text('YAML')")
    expect(page.locator(".cm-content")).to_contain_text("modules:")
    expect(page.locator(".flow-step")).to_have_count(6)
    # A YAML syntax error is shown with its line while typing.
    set_code(page, "summary: x\nvalue:\n  modules: [\n")
    expect(page.locator(".error-box[data-kind=syntax]")).to_contain_text("line")


APPROVAL = {
    "summary": "needs an approval",
    "description": "",
    "schema": {"type": "object", "properties": {}},
    "value": {
        "modules": [
            {
                "id": "ask",
                "value": {
                    "type": "rawscript",
                    "language": "python3",
                    "content": "def main():\n    return 'asked'\n",
                    "input_transforms": {},
                },
                "suspend": {"required_events": 1, "timeout": 120},
            },
            {
                "id": "after",
                "value": {
                    "type": "rawscript",
                    "language": "python3",
                    "content": "def main(r, a):\n    return {'resume': r, 'approvers': a}\n",
                    "input_transforms": {
                        "r": {"type": "javascript", "expr": "resume"},
                        "a": {"type": "javascript", "expr": "approvers"},
                    },
                },
            },
        ]
    },
}


def test_approve_a_suspended_step_from_its_button(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    path = f"f/ui/{unique('approval')}"
    created = gristmill.post("/api/w/main/flows/create", json={**APPROVAL, "path": path})
    assert created.status_code == 201, created.text
    page.goto(f"/flows/get/{path}")
    page.click("button:has-text('Run')")
    approve = page.get_by_role("button", name="Approve ask")
    expect(approve).to_be_visible(timeout=30_000)
    expect(page.locator(".job-page[data-status=suspended]")).to_be_visible()
    expect(page.locator(".flow-step[data-step=ask]")).to_have_attribute("data-state", "suspended")
    expect(page.locator(".flow-step[data-step=after]")).to_have_attribute("data-state", "waiting")
    shot(page, "suspended")
    approve.click()
    expect(page.locator(".job-page[data-status=success]")).to_be_visible(timeout=30_000)
    expect(page.locator(".flow-step[data-step=after]")).to_have_attribute("data-state", "success")
    expect(page.get_by_role("button", name="Approve ask")).to_have_count(0)
    job_id = page.url.rsplit("/", 1)[1]
    result = gristmill.get(f"/api/w/main/jobs_u/completed/get_result/{job_id}").json()
    assert result == {"resume": {}, "approvers": ["admin"]}
    shot(page, "approved")

    # Denied from its button: the step, and so the flow, fails.
    page.goto(f"/flows/get/{path}")
    page.click("button:has-text('Run')")
    page.get_by_role("button", name="Deny ask").click()
    expect(page.locator(".job-page[data-status=failure]")).to_be_visible(timeout=30_000)
    expect(page.locator(".result[data-kind=error] .error-title")).to_contain_text("ApprovalDenied")
    shot(page, "denied")


BRANCH_APPROVAL = {
    "summary": "an approval inside a branch",
    "description": "",
    "schema": {"type": "object", "properties": {}},
    "value": {
        "modules": [
            {
                "id": "route",
                "value": {
                    "type": "branchone",
                    "branches": [
                        {
                            "summary": "ask",
                            "expr": "true",
                            "modules": [
                                {
                                    "id": "inner_ask",
                                    "value": {
                                        "type": "rawscript",
                                        "language": "python3",
                                        "content": "def main():\n    return 'asked'\n",
                                        "input_transforms": {},
                                    },
                                    "suspend": {"required_events": 1, "timeout": 120},
                                },
                                {
                                    "id": "inner_after",
                                    "value": {
                                        "type": "rawscript",
                                        "language": "python3",
                                        "content": (
                                            "def main(r, a):\n"
                                            "    return {'resume': r, 'approvers': a}\n"
                                        ),
                                        "input_transforms": {
                                            "r": {"type": "javascript", "expr": "resume"},
                                            "a": {"type": "javascript", "expr": "approvers"},
                                        },
                                    },
                                },
                            ],
                        }
                    ],
                    "default": [],
                },
            }
        ]
    },
}


def test_approve_a_step_inside_a_branch_from_its_button(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    path = f"f/ui/{unique('branch_approval')}"
    created = gristmill.post("/api/w/main/flows/create", json={**BRANCH_APPROVAL, "path": path})
    assert created.status_code == 201, created.text
    page.goto(f"/flows/get/{path}")
    page.click("button:has-text('Run')")
    approve = page.get_by_role("button", name="Approve inner_ask")
    expect(approve).to_be_visible(timeout=30_000)
    step = page.locator(".flow-step[data-step=inner_ask]")
    expect(step).to_have_attribute("data-state", "suspended")
    expect(page.locator(".flow-step[data-step=route]")).to_have_attribute("data-state", "running")
    shot(page, "suspended-in-branch")
    approve.click()
    expect(page.locator(".job-page[data-status=success]")).to_be_visible(timeout=30_000)
    expect(page.locator(".flow-step[data-step=inner_after]")).to_have_attribute(
        "data-state", "success"
    )
    expect(page.get_by_role("button", name="Approve inner_ask")).to_have_count(0)
    job_id = page.url.rsplit("/", 1)[1]
    result = gristmill.get(f"/api/w/main/jobs_u/completed/get_result/{job_id}").json()
    assert result == {"resume": {}, "approvers": ["admin"]}


def test_create_a_schedule_and_see_its_next_fire_times(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    target = f"u/admin/{unique('scheduled')}"
    save_script(gristmill, target, "def main():\n    return 1\n")
    path = f"u/admin/{unique('nightly')}"
    page.goto(f"/schedules?script={target}")
    expect(page.locator("input[name=script_path]")).to_have_value(target)
    page.fill("input[name=schedule]", "0 61 * * * *")
    expect(page.locator(".field-error[data-field=schedule]")).to_be_visible()
    shot(page, "invalid-cron")
    page.fill("input[name=schedule]", "0 30 12 * * *")
    page.fill("input[name=timezone]", "Europe/Paris")
    times = page.locator(".fire-times time")
    expect(times).to_have_count(5)
    instants = times.evaluate_all("ts => ts.map(t => t.getAttribute('datetime'))")
    expected = gristmill.post(
        "/api/schedules/preview", json={"schedule": "0 30 12 * * *", "timezone": "Europe/Paris"}
    ).json()
    assert instants == expected
    page.fill("input[name=path]", path)
    page.click("button:has-text('Create schedule')")
    row = page.locator(f"tr[data-schedule='{path}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Europe/Paris")
    stored = gristmill.get(f"/api/w/main/schedules/get/{path}").json()
    assert stored["enabled"] is True
    assert stored["script_path"] == target
    shot(page, "created")
    row.get_by_role("switch").click()
    deadline = time.monotonic() + 10
    while gristmill.get(f"/api/w/main/schedules/get/{path}").json()["enabled"]:
        assert time.monotonic() < deadline, "the schedule was not disabled"
        time.sleep(0.1)
    expect(row.get_by_role("switch")).not_to_be_checked()


def test_every_page_has_a_url_and_an_empty_or_loaded_state(page: Page, shot: Shots) -> None:
    for url, heading in [
        ("/", "Home"),
        ("/scripts", "Scripts"),
        ("/flows", "Flows"),
        ("/runs", "Runs"),
        ("/schedules", "Schedules"),
        ("/triggers", "Triggers"),
        ("/variables", "Variables and secrets"),
        ("/resources", "Resources"),
        ("/workers", "Workers"),
    ]:
        page.goto(url)
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        expect(page.locator(".loading")).to_have_count(0)
        expect(page.get_by_role("alert")).to_have_count(0)
        shot(page, re.sub(r"\W", "", url) or "home")
    expect(page.locator("table.list tbody tr").first).to_be_visible()


def test_a_new_version_from_the_editor_and_its_changes(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    path = f"u/admin/{unique('versioned')}"
    save_script(gristmill, path, "def main(x: int = 1):\n    return x\n")
    first = gristmill.get(f"/api/w/main/scripts/get/p/{path}").json()["hash"]
    page.goto(f"/scripts/edit/{path}")
    expect(page.locator(".preview input#root_x")).to_have_value("1")
    set_code(page, "def main(x: int = 1, y: str = 'new'):\n    return [x, y]\n")
    expect(page.locator(".preview input#root_y")).to_have_value("new")
    page.click("button:has-text('Save new version')")
    expect(page.get_by_role("heading", name=path, exact=True)).to_be_visible()
    script = gristmill.get(f"/api/w/main/scripts/get/p/{path}").json()
    assert script["parent_hashes"] == [first]
    page.click("button:has-text('changes since')")
    expect(page.locator(".diff .diff-removed")).to_contain_text("return x")
    expect(page.locator(".diff .diff-added")).to_contain_text("return [x, y]")
    shot(page, "diff")


def test_the_language_picker_switches_highlighting_and_the_form(page: Page) -> None:
    page.goto("/scripts/new")
    expect(page.locator(".code-editor")).to_have_attribute("data-language", "python3")
    expect(page.locator(".preview input#root_name")).to_have_value("world")
    expect(page.locator(".preview input#root_times")).to_have_attribute("type", "number")
    page.select_option("select[name=language]", "bash")
    expect(page.locator(".code-editor")).to_have_attribute("data-language", "bash")
    # The Bash template takes one positional input; the preview follows.
    expect(page.locator(".preview input#root_times")).to_have_count(0)
    expect(page.locator(".preview input#root_name")).to_have_value("world")
    set_code(page, 'name="$1"\ncount="$3"\n')
    expect(page.locator(".parse-error")).to_contain_text("$2")


def test_secrets_and_resources_from_their_pages(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    secret = f"u/admin/{unique('secret')}"
    page.goto("/variables")
    page.fill("input[name=path]", secret)
    page.fill("input[name=value]", "hunter2-do-not-show")
    page.get_by_role("button", name="Create", exact=True).click()
    row = page.locator("tr", has=page.locator(f"td:text-is('{secret}')"))
    expect(row).to_contain_text("secret (never shown)")
    expect(page.locator("body")).not_to_contain_text("hunter2-do-not-show")
    assert gristmill.get(f"/api/w/main/variables/get_value/{secret}").json() == (
        "hunter2-do-not-show"
    )
    shot(page, "variables")
    resource = f"u/admin/{unique('warehouse')}"
    page.goto("/resources")
    page.fill("input[name=path]", resource)
    page.fill("input[name=resource_type]", "nosuchtype")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("nosuchtype")
    gristmill.post("/api/w/main/resources/type/create", json={"name": "postgresql", "schema": None})
    page.fill("input[name=path]", resource)
    page.fill("input[name=resource_type]", "postgresql")
    page.fill("textarea[name=value]", '{"host": "warehouse", "port": 5432}')
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("tr", has=page.locator(f"td:text-is('{resource}')"))).to_be_visible()
    value = gristmill.get(f"/api/w/main/resources/get_value/{resource}").json()
    assert value == {"host": "warehouse", "port": 5432}
    shot(page, "resources")


def test_edit_then_delete_a_variable(page: Page, gristmill: httpx.Client, shot: Shots) -> None:
    path = f"u/admin/{unique('setting')}"
    created = gristmill.post(
        "/api/w/main/variables/create",
        json={"path": path, "value": "v1", "is_secret": False, "description": "first"},
    )
    assert created.status_code == 201, created.text
    page.goto("/variables")
    row = page.locator(f"tr[data-variable='{path}']")
    expect(row).to_contain_text("v1")
    row.get_by_role("button", name=f"edit {path}").click()
    form = page.locator(f"form.edit-variable[data-variable='{path}']")
    expect(form.locator("input[name=edit_value]")).to_have_value("v1")
    form.locator("input[name=edit_value]").fill("v2")
    form.locator("input[name=edit_description]").fill("second")
    form.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("v2")
    expect(row).to_contain_text("second")
    assert gristmill.get(f"/api/w/main/variables/get_value/{path}").json() == "v2"
    shot(page, "edited")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"delete {path}").click()
    expect(row).to_have_count(0)
    assert gristmill.get(f"/api/w/main/variables/exists/{path}").json() is False


def test_a_secret_keeps_its_value_when_edited_without_one(
    page: Page, gristmill: httpx.Client
) -> None:
    path = f"u/admin/{unique('token')}"
    created = gristmill.post(
        "/api/w/main/variables/create",
        json={"path": path, "value": "s3cret", "is_secret": True, "description": ""},
    )
    assert created.status_code == 201, created.text
    page.goto("/variables")
    page.get_by_role("button", name=f"edit {path}").click()
    form = page.locator(f"form.edit-variable[data-variable='{path}']")
    expect(form.locator("input[name=edit_value]")).to_have_value("")
    form.locator("input[name=edit_description]").fill("rotated never")
    form.get_by_role("button", name="Save").click()
    expect(page.locator(f"tr[data-variable='{path}']")).to_contain_text("rotated never")
    assert gristmill.get(f"/api/w/main/variables/get_value/{path}").json() == "s3cret"


def test_archive_then_delete_scripts_from_their_page(page: Page, gristmill: httpx.Client) -> None:
    archived = f"u/admin/{unique('old')}"
    deleted = f"u/admin/{unique('gone')}"
    save_script(gristmill, archived, "def main():\n    return 1\n")
    save_script(gristmill, deleted, "def main():\n    return 2\n")
    page.goto(f"/scripts/get/{archived}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Archive").click()
    expect(page.get_by_role("heading", name="Scripts", exact=True)).to_be_visible()
    assert gristmill.get(f"/api/w/main/scripts/get/p/{archived}").json()["archived"] is True
    listed = [s["path"] for s in gristmill.get("/api/w/main/scripts/list").json()]
    assert archived not in listed
    page.goto(f"/scripts/get/{deleted}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Scripts", exact=True)).to_be_visible()
    assert gristmill.get(f"/api/w/main/scripts/exists/p/{deleted}").json() is False


def test_create_a_resource_type_then_a_resource_of_it(
    page: Page, gristmill: httpx.Client, shot: Shots
) -> None:
    name = unique("warehouse_db")
    page.goto("/resources")
    form = page.locator("form.new-resource-type")
    form.locator("input[name=type_name]").fill(name)
    form.locator("input[name=type_description]").fill("our warehouse")
    form.locator("textarea[name=type_schema]").fill("{not json")
    form.get_by_role("button", name="Create type").click()
    expect(form.get_by_role("alert")).to_contain_text("not JSON")
    schema = {"type": "object", "properties": {"host": {"type": "string"}}}
    form.locator("textarea[name=type_schema]").fill(json.dumps(schema))
    form.get_by_role("button", name="Create type").click()
    expect(page.locator(".resource-types")).to_contain_text(name)
    stored = gristmill.get(f"/api/w/main/resources/type/get/{name}").json()
    assert stored["schema"] == schema
    assert stored["description"] == "our warehouse"
    # The same name again: the API's conflict is shown.
    form.locator("input[name=type_name]").fill(name)
    form.get_by_role("button", name="Create type").click()
    expect(form.get_by_role("alert")).to_contain_text(name)
    shot(page, "resource-type")
