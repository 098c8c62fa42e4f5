"""The gateway serves the web UI beside the API, and the endpoints the UI relies on."""

from __future__ import annotations

import json
import time

import httpx

from tests.scripts.standalone import Standalone
from tests.ui.examples import SEED


def test_pages_and_assets_are_served_and_the_api_stays_json(
    ui_built: None, standalone: Standalone
) -> None:
    base = standalone.base_url
    index = httpx.get(f"{base}/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in index.text
    # A client route answers the same page (deep links work), without a token.
    deep = httpx.get(f"{base}/runs/0b7e2d4c-0000-4000-8000-000000000000")
    assert deep.status_code == 200
    assert deep.text == index.text
    asset = index.text.split('src="', 1)[1].split('"', 1)[0]
    script = httpx.get(f"{base}{asset}")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "immutable" in script.headers["cache-control"]
    # Nothing outside the build is reachable (the gateway's own modules sit two levels up).
    escape = httpx.get(f"{base}/assets/..%2F..%2F..%2Fwebui.py")
    assert escape.status_code == 404
    assert "spa_fallback" not in escape.text
    # Unknown API paths still answer the API's JSON errors.
    missing = httpx.get(f"{base}/api/nothing/here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/json")
    assert missing.json()["error"]["code"] == "not_found"


def test_parse_schema_reads_a_signature_without_saving(
    gristmill: httpx.Client,
) -> None:
    answer = gristmill.post(
        "/api/scripts/parse_schema", json={"language": "python3", "content": SEED}
    )
    assert answer.status_code == 200, answer.text
    schema = answer.json()["schema"]
    assert schema["order"] == ["a", "b", "c", "d", "e"]
    assert schema["properties"]["c"] == {"type": "object", "format": "resource-postgresql"}
    assert schema["properties"]["e"]["default"] == {"nested": "object"}
    broken = gristmill.post(
        "/api/scripts/parse_schema", json={"language": "python3", "content": "def main(a:\n"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["location"].startswith("line 1")
    assert gristmill.get("/api/w/main/scripts/list_paths").json() == []
    assert (
        httpx.post(
            f"{gristmill.base_url}/api/scripts/parse_schema",
            json={"language": "python3", "content": SEED},
        ).status_code
        == 401
    )


def test_the_job_stream_carries_flow_status_as_steps_finish(gristmill: httpx.Client) -> None:
    step = {
        "type": "rawscript",
        "language": "python3",
        "input_transforms": {},
    }
    value = {
        "modules": [
            {
                "id": "a",
                "value": {
                    **step,
                    "content": "import time\ndef main():\n    time.sleep(1.5)\n    return 1\n",
                },
            },
            {"id": "b", "value": {**step, "content": "def main():\n    return 2\n"}},
        ]
    }
    job_id = gristmill.post(
        "/api/w/main/jobs/run/preview_flow", json={"value": value, "args": {}}
    ).text
    states: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    with gristmill.stream(
        "GET",
        f"/api/w/main/jobs_u/getupdate_sse/{job_id}",
        params={"poll_delay_ms": 100},
        timeout=60,
    ) as stream:
        for line in stream.iter_lines():
            assert time.monotonic() < deadline
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event["type"] != "update":
                continue
            modules = (event.get("flow_status") or {}).get("modules", [])
            if modules:
                states.append((modules[0]["type"], modules[1]["type"]))
            if event["completed"]:
                break
    assert states[-1] == ("Success", "Success")
    # An update came while the first step ran and the second waited.
    assert any(b != "Success" for _, b in states[:-1]), states
