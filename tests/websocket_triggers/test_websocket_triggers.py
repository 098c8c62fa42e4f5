"""WebSocket triggers against a real ``gristmill up`` and real ``websockets`` servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from gristmill.common.websocket_triggers import (
    Filter,
    InitialMessage,
    RunnableRef,
    UrlRunnable,
    WebsocketTrigger,
    matches,
    parse_url,
)
from tests.flows.harness import py
from tests.harness.services import free_port, wait_until
from tests.websocket_triggers.feed import feed

ECHO = (
    "def main(msg: str, seq: int = -1, kind: str = '', trigger_path: str = ''):\n"
    "    return {'seq': seq, 'kind': kind, 'msg': msg, 'trigger_path': trigger_path}\n"
)
REPLY = "def main(seq: int):\n    return {'echo': seq}\n"
RAW = "def main(msg: str):\n    return msg.upper()\n"


async def _script(api: httpx.AsyncClient, path: str, content: str) -> None:
    response = await api.post(
        "/api/w/main/scripts/create",
        json={"path": path, "content": content, "language": "python3", "summary": ""},
    )
    assert response.status_code == 201, response.text


async def _create(api: httpx.AsyncClient, path: str, **fields: Any) -> httpx.Response:
    body = {"path": path, "is_flow": False, "filters": []} | fields
    return await api.post("/api/w/main/websocket_triggers/create", json=body)


async def _created(api: httpx.AsyncClient, path: str, **fields: Any) -> None:
    response = await _create(api, path, **fields)
    assert response.status_code == 201, response.text
    assert response.text == path


async def _runs(db: asyncpg.Pool, trigger: str) -> list[asyncpg.Record]:
    """Jobs the trigger made, with their outcome (``status`` NULL while not ended)."""
    return await db.fetch(
        "SELECT j.id, j.args, c.status, c.result FROM jobs j "
        "LEFT JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.trigger_kind = 'websocket' AND j.trigger_source = $1 ORDER BY j.created_at",
        trigger,
    )


async def _completed(db: asyncpg.Pool, trigger: str, count: int) -> list[asyncpg.Record]:
    async def done() -> list[asyncpg.Record] | None:
        runs = await _runs(db, trigger)
        finished = [run for run in runs if run["status"] is not None]
        return finished if len(finished) >= count else None

    return await wait_until(done, timeout=60, what=f"{count} completed runs of {trigger}")


async def test_each_message_runs_and_the_trigger_reconnects_after_a_drop(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    await _script(api, "u/admin/ws_echo", ECHO)
    async with feed() as server:
        await _created(
            api,
            "u/admin/ws_ticks",
            url=server.url,
            script_path="u/admin/ws_echo",
            initial_messages=[{"raw_message": "subscribe ticks"}],
        )
        await server.wait_connected(1)
        await server.wait_for(lambda: server.received == ["subscribe ticks"])
        sent = []
        for seq in range(5):
            sent.append(json.dumps({"seq": seq, "kind": "tick"}))
            await server.push(sent[-1])
        runs = await _completed(db, "u/admin/ws_ticks", 5)
        assert [run["status"] for run in runs] == ["success"] * 5
        assert [run["result"] for run in runs] == [
            {"seq": seq, "kind": "tick", "msg": sent[seq], "trigger_path": "u/admin/ws_ticks"}
            for seq in range(5)
        ]

        # The server drops the connection: the trigger connects again, says hello again,
        # and the next messages run too.
        await server.open[0].close(code=1011, reason="restarting")
        await server.wait_connected(2)
        await server.wait_for(lambda: server.received == ["subscribe ticks"] * 2)
        for seq in range(5, 8):
            await server.push(json.dumps({"seq": seq, "kind": "tick"}))
        runs = await _completed(db, "u/admin/ws_ticks", 8)
        assert sorted(run["result"]["seq"] for run in runs) == list(range(8))
        assert server.most_open == 1

        trigger = (await api.get("/api/w/main/websocket_triggers/get/u/admin/ws_ticks")).json()
        assert trigger["error"] is None
        assert trigger["server_id"]
        assert trigger["initial_messages"] == [{"raw_message": "subscribe ticks"}]
        await api.delete("/api/w/main/websocket_triggers/delete/u/admin/ws_ticks")
        await server.wait_for(lambda: not server.open)


async def test_filters_and_results_sent_back(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    await _script(api, "u/admin/ws_reply", REPLY)
    async with feed() as server:
        await _created(
            api,
            "u/admin/ws_orders",
            url=server.url,
            script_path="u/admin/ws_reply",
            filters=[{"key": "kind", "value": "order"}, {"key": "meta", "value": {"ok": True}}],
            can_return_message=True,
        )
        await server.wait_connected(1)
        for message in (
            {"kind": "noise", "seq": 1, "meta": {"ok": True}},
            {"kind": "order", "seq": 2, "meta": {"ok": True, "extra": 1}},
            {"kind": "order", "seq": 3, "meta": {"ok": False}},
        ):
            await server.push(json.dumps(message))
        await server.push("not json at all")
        await server.push(json.dumps({"kind": "order", "seq": 4, "meta": {"ok": True}}))
        await server.wait_for(lambda: len(server.received) >= 2, timeout=60)
        assert sorted(json.loads(text)["echo"] for text in server.received) == [2, 4]
        # Messages are handled in order: once seq 4 ran, every earlier message was judged.
        runs = await _completed(db, "u/admin/ws_orders", 2)
        assert sorted(run["args"]["seq"] for run in runs) == [2, 4]
        assert len(await _runs(db, "u/admin/ws_orders")) == 2
        await api.post(
            "/api/w/main/websocket_triggers/setenabled/u/admin/ws_orders", json={"enabled": False}
        )
        await server.wait_for(lambda: not server.open)


async def test_bad_urls_show_errors_and_other_triggers_keep_running(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    await _script(api, "u/admin/ws_raw", RAW)
    for url, status, where in (
        ("http://127.0.0.1:1/x", 400, "url"),
        ("ws://", 400, "url"),
        ("ws://127.0.0.1:99999/x", 400, "url"),
        ("", 400, "url"),
        ("$script:u/admin/no_such_script", 404, "url"),
    ):
        response = await _create(api, "u/admin/ws_bad", url=url, script_path="u/admin/ws_raw")
        assert response.status_code == status, (url, response.text)
        assert response.json()["error"]["location"] == where, response.text

    dead_port = free_port()  # nothing listens there
    await _created(
        api, "u/admin/ws_dead", url=f"ws://127.0.0.1:{dead_port}/x", script_path="u/admin/ws_raw"
    )
    async with feed() as server:
        await _created(api, "u/admin/ws_alive", url=server.url, script_path="u/admin/ws_raw")
        await server.wait_connected(1)

        async def dead_error() -> str | None:
            body = (await api.get("/api/w/main/websocket_triggers/get/u/admin/ws_dead")).json()
            error: str | None = body["error"]
            return error

        error = await wait_until(dead_error, timeout=30, what="the dead trigger's error")
        assert f"127.0.0.1:{dead_port}" in error
        assert "reconnecting" in error
        await server.push("hello")
        runs = await _completed(db, "u/admin/ws_alive", 1)
        assert runs[0]["result"] == "HELLO"
        assert runs[0]["args"] == {"msg": "hello"}

        # A URL produced by a script: the trigger runs it, then connects where it says.
        url_script = "def main(port: int):\n    return 'ws://127.0.0.1:%d/from-script' % port\n"
        await _script(api, "u/admin/ws_url", url_script)
        response = await api.post(
            "/api/w/main/websocket_triggers/update/u/admin/ws_dead",
            json={
                "url": "$script:u/admin/ws_url",
                "url_runnable_args": {"port": server.port},
                "script_path": "u/admin/ws_raw",
                "is_flow": False,
            },
        )
        assert response.status_code == 200, response.text
        await server.wait_for(lambda: server.connections >= 2 and len(server.open) == 2)
        assert {conn.request.path for conn in server.open if conn.request} == {
            "/feed",
            "/from-script",
        }
        await wait_until(
            lambda: _no_error(api, "u/admin/ws_dead"), timeout=30, what="the error cleared"
        )
        for path in ("u/admin/ws_dead", "u/admin/ws_alive"):
            await api.delete(f"/api/w/main/websocket_triggers/delete/{path}")


async def _no_error(api: httpx.AsyncClient, path: str) -> bool:
    body = (await api.get(f"/api/w/main/websocket_triggers/get/{path}")).json()
    return body["error"] is None


async def test_api_crud_and_validation(api: httpx.AsyncClient) -> None:
    await _script(api, "u/admin/ws_crud", RAW)
    base = "/api/w/main/websocket_triggers"
    for fields, status, where in (
        ({"script_path": "u/admin/missing"}, 404, "script_path"),
        ({"filter_logic": "xor"}, 400, "filter_logic"),
        ({"filters": [{"key": "", "value": 1}]}, 400, "filters[0].key"),
        ({"initial_messages": [{}]}, 400, "initial_messages[0]"),
        (
            {"initial_messages": [{"runnable_result": {"path": "u/admin/nope", "args": {}}}]},
            404,
            "initial_messages[0].runnable_result.path",
        ),
        ({"mode": "sometimes"}, 400, "mode"),
    ):
        body = {"url": "ws://127.0.0.1:1/x", "script_path": "u/admin/ws_crud"} | fields
        response = await _create(api, "u/admin/ws_crud_bad", **body)
        assert response.status_code == status, (fields, response.text)
        assert response.json()["error"]["location"] == where, response.text
    assert (await api.get(f"{base}/exists/u/admin/ws_crud_bad")).json() is False

    await _created(
        api,
        "u/admin/ws_crud",
        url="ws://127.0.0.1:1/x",
        script_path="u/admin/ws_crud",
        mode="disabled",
        filters=[{"key": "kind", "value": ["a"]}],
        filter_logic="or",
    )
    duplicate = await _create(
        api, "u/admin/ws_crud", url="ws://127.0.0.1:1/y", script_path="u/admin/ws_crud"
    )
    assert duplicate.status_code == 409, duplicate.text
    assert (await api.get(f"{base}/exists/u/admin/ws_crud")).json() is True
    got = (await api.get(f"{base}/get/u/admin/ws_crud")).json()
    assert (got["enabled"], got["mode"], got["filter_logic"]) == (False, "disabled", "or")
    assert got["filters"] == [{"key": "kind", "value": ["a"]}]
    assert got["server_id"] is None  # disabled: nobody connects it

    response = await api.post(
        f"{base}/update/u/admin/ws_crud",
        json={"url": "wss://127.0.0.1:1/feed", "script_path": "u/admin/ws_crud"},
    )
    assert response.status_code == 200, response.text
    got = (await api.get(f"{base}/get/u/admin/ws_crud")).json()
    assert (got["url"], got["enabled"], got["filters"]) == ("wss://127.0.0.1:1/feed", False, [])
    listed = (await api.get(f"{base}/list")).json()
    assert "u/admin/ws_crud" in [item["path"] for item in listed]
    response = await api.post(f"{base}/setenabled/u/admin/ws_crud", json={"mode": "enabled"})
    assert response.status_code == 200, response.text
    assert (await api.get(f"{base}/get/u/admin/ws_crud")).json()["enabled"] is True
    assert (await api.delete(f"{base}/delete/u/admin/ws_crud")).status_code == 200
    assert (await api.get(f"{base}/get/u/admin/ws_crud")).status_code == 404
    assert (await api.delete(f"{base}/delete/u/admin/ws_crud")).status_code == 404


async def test_messages_run_a_flow(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    doc = {
        "path": "f/ws/doubler",
        "summary": "doubles the message's seq",
        "value": {
            "modules": [
                py(
                    "a",
                    "def main(x, m):\n    return {'double': x * 2, 'm': m}\n",
                    x="flow_input.seq",
                    m="flow_input.msg",
                )
            ]
        },
        "schema": {
            "type": "object",
            "properties": {"seq": {"type": "integer"}, "msg": {"type": "string"}},
            "required": ["seq"],
        },
    }
    response = await api.post("/api/w/main/flows/create", json=doc)
    assert response.status_code == 201, response.text
    async with feed() as server:
        await _created(
            api, "f/ws/to_flow", url=server.url, script_path="f/ws/doubler", is_flow=True
        )
        await server.wait_connected(1)
        await server.push(json.dumps({"seq": 21, "unused": True}))
        runs = await _completed(db, "f/ws/to_flow", 1)
        assert runs[0]["args"] == {"seq": 21, "msg": json.dumps({"seq": 21, "unused": True})}
        assert (runs[0]["status"], runs[0]["result"]) == (
            "success",
            {"double": 42, "m": json.dumps({"seq": 21, "unused": True})},
        )
        await api.delete("/api/w/main/websocket_triggers/delete/f/ws/to_flow")


def test_filters_match_json_objects_by_containment() -> None:
    kind = [Filter(key="kind", value="order")]
    assert matches([], "and", "anything")
    assert matches(kind, "and", {"kind": "order", "x": 1})
    assert not matches(kind, "and", {"kind": "orders"})
    assert not matches(kind, "and", "order")  # not a JSON object
    assert not matches(kind, "and", {"other": "order"})
    nested = [Filter(key="meta", value={"tags": ["a"], "ok": True})]
    assert matches(nested, "and", {"meta": {"tags": ["b", "a"], "ok": True, "n": 2}})
    assert not matches(nested, "and", {"meta": {"tags": ["b"], "ok": True}})
    assert not matches([Filter(key="n", value=1)], "and", {"n": True})  # 1 is not true
    both = [Filter(key="a", value=1), Filter(key="b", value=2)]
    assert not matches(both, "and", {"a": 1, "b": 3})
    assert matches(both, "or", {"a": 1, "b": 3})


async def test_errors_sent_back_when_asked(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    await _script(api, "u/admin/ws_strict", REPLY)
    async with feed() as server:
        await _created(
            api,
            "u/admin/ws_strict",
            url=server.url,
            script_path="u/admin/ws_strict",
            can_return_message=True,
            can_return_error_result=True,
        )
        await server.wait_connected(1)
        await server.push(json.dumps({"seq": "not a number"}))
        await server.wait_for(lambda: len(server.received) >= 1, timeout=60)
        await server.push(json.dumps({"seq": 5}))
        await server.wait_for(lambda: len(server.received) >= 2, timeout=60)
        failed, answered = (json.loads(text) for text in server.received)
        assert failed["error"]["location"] == "args.seq", failed
        assert answered == {"echo": 5}
        runs = await _completed(db, "u/admin/ws_strict", 2)
        assert [run["status"] for run in runs] == ["failure", "success"]
        await api.delete("/api/w/main/websocket_triggers/delete/u/admin/ws_strict")


def test_rows_written_by_the_first_version_keep_decoding() -> None:
    stored = Path(__file__).parent / "stored" / "websocket_trigger_v1.json"
    trigger = msgspec.json.decode(stored.read_bytes(), type=WebsocketTrigger)
    assert parse_url(trigger.url) == UrlRunnable(is_flow=False, path="u/admin/feed_url")
    assert trigger.initial_messages == [
        InitialMessage(raw_message="subscribe"),
        InitialMessage(runnable_result=RunnableRef(path="u/admin/hello", args={"n": 1})),
    ]
    assert matches(trigger.filters, trigger.filter_logic, {"kind": {"tags": ["b", "a"]}})
