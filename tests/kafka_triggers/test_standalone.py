"""Kafka triggers in ``gristmill up``: the API, and messages running scripts for real.

One ``gristmill up`` serves the module; each test uses its own scripts, resources,
topics and triggers. The triggers start from the earliest offset so that messages
sent before the consumer joined its group run too.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from gristmill.cli.broker import LocalBroker
from tests.flows.harness import py
from tests.harness.services import free_port
from tests.kafka_triggers.conftest import KafkaStandalone, json_bytes, new_topic, produce

pytestmark = pytest.mark.kafka

WS = "/api/w/main"
ECHO = (
    "def main(n: int, msg: str, key: str = None, headers: dict = None, topic: str = '',\n"
    "         partition: int = -1, offset: int = -1, value: dict = None):\n"
    "    return {'n': n, 'msg': msg, 'key': key, 'headers': headers, 'topic': topic,\n"
    "            'partition': partition, 'offset': offset, 'value': value}\n"
)
PLAIN = "def main(msg: str):\n    return msg.upper()\n"


async def _script(api: httpx.AsyncClient, path: str, content: str) -> None:
    response = await api.post(
        f"{WS}/scripts/create",
        json={"path": path, "content": content, "language": "python3", "summary": ""},
    )
    assert response.status_code == 201, response.text


async def _resource(api: httpx.AsyncClient, path: str, value: Any) -> None:
    response = await api.post(f"{WS}/resources/type/create", json={"name": "kafka"})
    assert response.status_code in (201, 409), response.text
    response = await api.post(
        f"{WS}/resources/create", json={"path": path, "value": value, "resource_type": "kafka"}
    )
    assert response.status_code == 201, response.text


async def _trigger(api: httpx.AsyncClient, path: str, **fields: Any) -> httpx.Response:
    body = {"path": path, "is_flow": False, "auto_offset_reset": "earliest"} | fields
    return await api.post(f"{WS}/kafka_triggers/create", json=body)


async def _created(api: httpx.AsyncClient, path: str, **fields: Any) -> None:
    response = await _trigger(api, path, **fields)
    assert response.status_code == 201, response.text
    assert response.text == path


async def _completed(
    system: KafkaStandalone, trigger: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """The completed jobs of ``trigger`` once there are ``count``, by offset."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await system.fetch(
            "SELECT j.args, j.trigger_source, j.idempotency_key, c.status, c.result "
            "FROM jobs j JOIN jobs_completed c ON c.id = j.id "
            "WHERE j.trigger_kind = 'kafka' AND j.meta->'kafka'->>'trigger' = $1 "
            "ORDER BY (j.meta->'kafka'->>'offset')::bigint",
            trigger,
        )
        if len(rows) >= count:
            return [
                dict(row) | {"args": json.loads(row["args"]), "result": json.loads(row["result"])}
                for row in rows
            ]
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(rows)} of {count} jobs of {trigger} completed")
        await asyncio.sleep(0.1)


async def _trigger_state(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await api.get(f"{WS}/kafka_triggers/get/{path}")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


async def test_crud_and_validation(api: httpx.AsyncClient, kafka_standalone: Any) -> None:
    await _script(api, "u/admin/kt_crud", PLAIN)
    await _resource(api, "u/admin/kt_crud_conn", {"brokers": [kafka_standalone.bootstrap]})
    base = {
        "kafka_resource_path": "u/admin/kt_crud_conn",
        "script_path": "u/admin/kt_crud",
        "topics": ["crud-topic"],
        "enabled": False,
    }
    # Validation: each error names the field at fault.
    for fields, status, location in (
        ({"topics": []}, 400, "topics"),
        ({"topics": ["bad topic"]}, 400, "topics[0]"),
        ({"topics": ["ok", "ok"]}, 400, "topics[1]"),
        ({"topics": ["a" * 250]}, 400, "topics[0]"),
        ({"script_path": "u/admin/nope"}, 404, "script_path"),
        ({"script_path": "u/admin/nope", "is_flow": True}, 404, "script_path"),
        ({"kafka_resource_path": "u/admin/missing"}, 404, "kafka_resource_path"),
        ({"auto_offset_reset": "middle"}, 400, "auto_offset_reset"),
    ):
        response = await _trigger(api, "u/admin/kt_crud_bad", **(base | fields))
        assert response.status_code == status, (fields, response.text)
        assert response.json()["error"]["location"] == location, (fields, response.text)
    await _resource(api, "u/admin/kt_not_kafka", {"host": "x"})
    response = await _trigger(
        api, "u/admin/kt_crud_bad", **(base | {"kafka_resource_path": "u/admin/kt_not_kafka"})
    )
    assert response.status_code == 400, response.text
    assert "brokers" in response.json()["error"]["message"]
    exists = await api.get(f"{WS}/kafka_triggers/exists/u/admin/kt_crud_bad")
    assert exists.json() is False

    await _created(api, "u/admin/kt_crud_a", **base)
    assert (await _trigger(api, "u/admin/kt_crud_a", **base)).status_code == 409
    assert (await api.get(f"{WS}/kafka_triggers/exists/u/admin/kt_crud_a")).json() is True
    got = await _trigger_state(api, "u/admin/kt_crud_a")
    assert got["topics"] == ["crud-topic"]
    assert got["group_id"] == "gristmill-main-u__admin__kt_crud_a"
    assert got["enabled"] is False
    assert got["error"] is None
    assert got["kafka_resource_path"] == "u/admin/kt_crud_conn"

    # Update (with a rename), set enabled, list, delete.
    response = await api.post(
        f"{WS}/kafka_triggers/update/u/admin/kt_crud_a",
        json=base | {"path": "u/admin/kt_crud_b", "topics": ["t1", "t2"], "group_id": "g-crud"},
    )
    assert response.status_code == 200, response.text
    assert response.text == "u/admin/kt_crud_b"
    assert (await api.get(f"{WS}/kafka_triggers/get/u/admin/kt_crud_a")).status_code == 404
    got = await _trigger_state(api, "u/admin/kt_crud_b")
    assert (got["topics"], got["group_id"], got["enabled"]) == (["t1", "t2"], "g-crud", False)
    response = await api.post(
        f"{WS}/kafka_triggers/update/u/admin/kt_crud_b", json=base | {"topics": ["x y"]}
    )
    assert response.status_code == 400
    assert (await _trigger_state(api, "u/admin/kt_crud_b"))["topics"] == ["t1", "t2"]
    response = await api.post(
        f"{WS}/kafka_triggers/setenabled/u/admin/kt_crud_b", json={"enabled": False}
    )
    assert response.status_code == 200, response.text
    listed = (await api.get(f"{WS}/kafka_triggers/list")).json()
    assert "u/admin/kt_crud_b" in [t["path"] for t in listed]
    assert (await api.delete(f"{WS}/kafka_triggers/delete/u/admin/kt_crud_b")).status_code == 200
    assert (await api.delete(f"{WS}/kafka_triggers/delete/u/admin/kt_crud_b")).status_code == 404
    assert (await api.get(f"{WS}/kafka_triggers/exists/u/admin/kt_crud_b")).json() is False
    paths = (await api.get("/api/openapi.json")).json()["paths"]
    for name in (
        "create",
        "update/{path}",
        "get/{path}",
        "list",
        "delete/{path}",
        "exists/{path}",
        "setenabled/{path}",
        "parked/{path}",
    ):
        assert f"/api/w/{{workspace}}/kafka_triggers/{name}" in paths, name


async def test_message_runs_script_with_args_and_poison_is_parked(
    api: httpx.AsyncClient, kafka_standalone: KafkaStandalone
) -> None:
    topic = await new_topic(kafka_standalone.bootstrap, "kt_echo")
    await _script(api, "u/admin/kt_echo", ECHO)
    await _resource(api, "u/admin/kt_echo_conn", {"brokers": kafka_standalone.bootstrap})
    await _created(
        api,
        "u/admin/kt_echo_t",
        kafka_resource_path="u/admin/kt_echo_conn",
        script_path="u/admin/kt_echo",
        topics=[topic],
    )
    # One key: one partition, in this order. The second message cannot run (n must be
    # an integer): it is parked, and the third still runs.
    await produce(
        kafka_standalone.bootstrap,
        topic,
        [
            (b"k1", json_bytes({"n": 1, "extra": "x"}), [("h1", b"v1")]),
            (b"k1", json_bytes({"n": "oops"}), []),
            (b"k1", json_bytes({"n": 3}), []),
        ],
    )
    jobs = await _completed(kafka_standalone, "u/admin/kt_echo_t", 2)
    assert [job["status"] for job in jobs] == ["success", "success"]
    first, third = jobs[0]["result"], jobs[1]["result"]
    assert first["n"] == 1
    assert first["msg"] == '{"n": 1, "extra": "x"}'
    assert first["value"] == {"n": 1, "extra": "x"}
    assert first["key"] == "k1"
    assert first["headers"] == {"h1": "v1"}
    assert first["topic"] == topic
    partition, offset = first["partition"], first["offset"]
    assert third["n"] == 3
    assert (third["partition"], third["offset"]) == (partition, offset + 2)
    assert jobs[0]["trigger_source"] == f"{topic}/{partition}/{offset}"
    assert jobs[0]["idempotency_key"] == (
        f"kafka:main:u/admin/kt_echo_t:{topic}:{partition}:{offset}"
    )
    parked = (await api.get(f"{WS}/kafka_triggers/parked/u/admin/kt_echo_t")).json()
    assert len(parked) == 1
    assert (parked[0]["partition"], parked[0]["offset"]) == (partition, offset + 1)
    assert parked[0]["value"] == '{"n": "oops"}'
    assert parked[0]["error"]["location"] == "args.n"
    assert "integer" in parked[0]["error"]["message"]
    state = await _trigger_state(api, "u/admin/kt_echo_t")
    assert state["error"] is None
    assert state["server_id"]


async def test_message_runs_a_flow(
    api: httpx.AsyncClient, kafka_standalone: KafkaStandalone
) -> None:
    topic = await new_topic(kafka_standalone.bootstrap, "kt_flow", partitions=1)
    flow = {
        "path": "u/admin/kt_flow",
        "summary": "",
        "value": {
            "modules": [py("double", "def main(x: int):\n    return x * 2\n", x="flow_input.n")]
        },
        "schema": {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "topic": {"type": "string"}},
            "required": ["n"],
        },
    }
    response = await api.post(f"{WS}/flows/create", json=flow)
    assert response.status_code == 201, response.text
    await _resource(api, "u/admin/kt_flow_conn", {"brokers": [kafka_standalone.bootstrap]})
    await _created(
        api,
        "u/admin/kt_flow_t",
        kafka_resource_path="u/admin/kt_flow_conn",
        script_path="u/admin/kt_flow",
        is_flow=True,
        topics=[topic],
    )
    await produce(kafka_standalone.bootstrap, topic, [(None, json_bytes({"n": 21}), [])])
    jobs = await _completed(kafka_standalone, "u/admin/kt_flow_t", 1)
    assert jobs[0]["args"] == {"n": 21, "topic": topic}
    assert (jobs[0]["status"], jobs[0]["result"]) == ("success", 42)


async def test_disable_stops_and_enable_resumes_without_restart(
    api: httpx.AsyncClient, kafka_standalone: KafkaStandalone
) -> None:
    topic = await new_topic(kafka_standalone.bootstrap, "kt_toggle", partitions=1)
    await _script(api, "u/admin/kt_toggle", PLAIN)
    await _resource(api, "u/admin/kt_toggle_conn", {"brokers": [kafka_standalone.bootstrap]})
    await _created(
        api,
        "u/admin/kt_toggle_t",
        kafka_resource_path="u/admin/kt_toggle_conn",
        script_path="u/admin/kt_toggle",
        topics=[topic],
    )
    await produce(kafka_standalone.bootstrap, topic, [(None, b"one", [])])
    jobs = await _completed(kafka_standalone, "u/admin/kt_toggle_t", 1)
    assert jobs[0]["result"] == "ONE"

    response = await api.post(
        f"{WS}/kafka_triggers/setenabled/u/admin/kt_toggle_t", json={"enabled": False}
    )
    assert response.status_code == 200
    # The consumer is gone once it no longer reports (its group is empty), then a
    # message sent while disabled does not run...
    await asyncio.sleep(3)
    await produce(kafka_standalone.bootstrap, topic, [(None, b"two", [])])
    await asyncio.sleep(4)
    rows = await kafka_standalone.fetch(
        "SELECT count(*) AS n FROM jobs WHERE meta->'kafka'->>'trigger' = $1",
        "u/admin/kt_toggle_t",
    )
    assert rows[0]["n"] == 1
    # ... until the trigger is enabled again: it resumes from its committed offset.
    response = await api.post(
        f"{WS}/kafka_triggers/setenabled/u/admin/kt_toggle_t", json={"enabled": True}
    )
    assert response.status_code == 200
    jobs = await _completed(kafka_standalone, "u/admin/kt_toggle_t", 2)
    assert [job["result"] for job in jobs] == ["ONE", "TWO"]
    # A new consumer group (an update, applied without a restart) reads the partition
    # again from the start: the messages already run make no second job.
    response = await api.post(
        f"{WS}/kafka_triggers/update/u/admin/kt_toggle_t",
        json={
            "kafka_resource_path": "u/admin/kt_toggle_conn",
            "script_path": "u/admin/kt_toggle",
            "topics": [topic],
            "group_id": f"{topic}-second-group",
            "auto_offset_reset": "earliest",
        },
    )
    assert response.status_code == 200, response.text
    await produce(kafka_standalone.bootstrap, topic, [(None, b"three", [])])
    jobs = await _completed(kafka_standalone, "u/admin/kt_toggle_t", 3)
    assert [job["result"] for job in jobs] == ["ONE", "TWO", "THREE"]
    await asyncio.sleep(1)
    rows = await kafka_standalone.fetch(
        "SELECT count(*) AS n FROM jobs WHERE meta->'kafka'->>'trigger' = $1",
        "u/admin/kt_toggle_t",
    )
    assert rows[0]["n"] == 3


async def test_unreachable_broker_is_reported_while_others_work(
    api: httpx.AsyncClient, kafka_standalone: KafkaStandalone
) -> None:
    await _script(api, "u/admin/kt_reach", PLAIN)
    dead = f"127.0.0.1:{free_port()}"
    await _resource(api, "u/admin/kt_dead_conn", {"brokers": [dead]})
    await _resource(api, "u/admin/kt_live_conn", {"brokers": [kafka_standalone.bootstrap]})
    topic = await new_topic(kafka_standalone.bootstrap, "kt_live", partitions=1)
    dead_topic = await new_topic(kafka_standalone.bootstrap, "kt_dead", partitions=1)
    await _created(
        api,
        "u/admin/kt_dead_t",
        kafka_resource_path="u/admin/kt_dead_conn",
        script_path="u/admin/kt_reach",
        topics=[dead_topic],
    )
    await _created(
        api,
        "u/admin/kt_live_t",
        kafka_resource_path="u/admin/kt_live_conn",
        script_path="u/admin/kt_reach",
        topics=[topic],
    )
    deadline = time.monotonic() + 30
    while True:
        state = await _trigger_state(api, "u/admin/kt_dead_t")
        if state["error"]:
            break
        assert time.monotonic() < deadline, "no error reported for the unreachable broker"
        await asyncio.sleep(0.2)
    assert dead in state["error"]
    assert state["error_at"] is not None
    await produce(kafka_standalone.bootstrap, topic, [(None, b"still here", [])])
    jobs = await _completed(kafka_standalone, "u/admin/kt_live_t", 1)
    assert jobs[0]["result"] == "STILL HERE"
    assert (await _trigger_state(api, "u/admin/kt_live_t"))["error"] is None
    # Fixing the resource clears the error (the consumer is restarted with the new value).
    response = await api.post(
        f"{WS}/resources/update/u/admin/kt_dead_conn",
        json={"value": {"brokers": [kafka_standalone.bootstrap]}},
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while (await _trigger_state(api, "u/admin/kt_dead_t"))["error"] is not None:
        assert time.monotonic() < deadline, "the error stayed after the resource was fixed"
        await asyncio.sleep(0.2)
    for path in ("u/admin/kt_dead_t", "u/admin/kt_live_t"):
        assert (await api.delete(f"{WS}/kafka_triggers/delete/{path}")).status_code == 200
    kafka_standalone.process.assert_alive()


async def test_broker_lost_while_consuming_is_reported(
    api: httpx.AsyncClient, kafka_standalone: KafkaStandalone
) -> None:
    await _script(api, "u/admin/kt_lost", PLAIN)
    async with LocalBroker() as private:
        bootstrap = private.bootstrap
        topic = await new_topic(bootstrap, "kt_lost", partitions=1)
        await _resource(api, "u/admin/kt_lost_conn", {"brokers": [private.bootstrap]})
        await _created(
            api,
            "u/admin/kt_lost_t",
            kafka_resource_path="u/admin/kt_lost_conn",
            script_path="u/admin/kt_lost",
            topics=[topic],
        )
        await produce(private.bootstrap, topic, [(None, b"before", [])])
        jobs = await _completed(kafka_standalone, "u/admin/kt_lost_t", 1)
        assert jobs[0]["result"] == "BEFORE"
        state = await _trigger_state(api, "u/admin/kt_lost_t")
        assert state["error"] is None
        assert state["last_server_ping"] is not None
    # The broker is gone: the consumer notices at its next check and says so.
    deadline = time.monotonic() + 30
    while not (state := await _trigger_state(api, "u/admin/kt_lost_t"))["error"]:
        assert time.monotonic() < deadline, "no error reported after the broker stopped"
        await asyncio.sleep(0.2)
    assert bootstrap in state["error"]
    assert (await api.delete(f"{WS}/kafka_triggers/delete/u/admin/kt_lost_t")).status_code == 200
    kafka_standalone.process.assert_alive()
