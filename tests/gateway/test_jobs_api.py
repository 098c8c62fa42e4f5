"""The jobs read API over real HTTP: shapes, lists, log offsets, live streams, cancel.

The gateway runs in-process behind uvicorn on a real socket, on a real Postgres, with
the in-process bus and a real dispatcher. Jobs are driven through their life with the
queue module itself (claim, log, complete), so each state is reached on purpose; one
test at the end follows a job a real worker runs under ``gristmill up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from litestar import Litestar
from litestar.exceptions import LitestarDeprecationWarning

from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.contracts.jobs import JobError
from gristmill.common.contracts.topics import Topic
from gristmill.common.queue import ClaimedJob, Completion, NewJob, Queue
from gristmill.common.tokens import create_token, ensure_bootstrap
from gristmill.dispatcher.service import Dispatcher
from gristmill.gateway.app import create_app
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes import jobs as jobs_routes
from gristmill.gateway.routes import run as run_routes
from gristmill.gateway.routes import system as system_routes
from gristmill.gateway.routes import users as users_routes
from tests.harness.services import GristmillProcess, free_port, wait_http

WORKER = "test-worker"


#: Keys Windmill's OpenAPI document marks required, per job type.
QUEUED_REQUIRED = {
    "id",
    "running",
    "canceled",
    "job_kind",
    "permissioned_as",
    "is_flow_step",
    "email",
    "visible_to_owner",
    "tag",
}
COMPLETED_REQUIRED = {
    "id",
    "created_by",
    "duration_ms",
    "created_at",
    "started_at",
    "success",
    "canceled",
    "job_kind",
    "permissioned_as",
    "is_flow_step",
    "is_skipped",
    "email",
    "visible_to_owner",
    "tag",
}


class _Server(uvicorn.Server):
    """uvicorn without signal handlers of its own (the test runner keeps them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Api:
    client: httpx.AsyncClient
    queue: Queue
    pool: asyncpg.Pool
    token: str
    base_url: str
    context: GatewayContext

    async def enqueue(self, **overrides: Any) -> NewJob:
        job = new_job(**overrides)
        assert await self.queue.enqueue([job]) == [job.id]
        return job

    async def claim(self, job: NewJob) -> ClaimedJob:
        claimed = await self.queue.claim(WORKER, [job.tag], limit=1)
        assert [c.id for c in claimed] == [job.id], "claim the job under test"
        return claimed[0]

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"/api/w/main{path}", params=params)

    async def job(self, job_id: uuid.UUID, **params: Any) -> dict[str, Any]:
        response = await self.get(f"/jobs_u/get/{job_id}", **params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def new_job(**overrides: Any) -> NewJob:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "workspace": "main",
        "kind": "preview",
        "tag": f"t-{secrets.token_hex(4)}",
        "created_by": "admin",
        "trigger_kind": "api",
        "language": "python3",
        "code": "def main():\n    return 1\n",
    }
    values.update(overrides)
    return NewJob(**values)


def quiet_app(context: GatewayContext) -> Litestar:
    """The whole app, built without failing on other modules' deprecated Litestar styles.

    This suite's own handlers are held to the current style by
    ``test_handlers_use_current_litestar_style``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=LitestarDeprecationWarning)
        return create_app(context)


@contextlib.asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free local port, on this event loop; yield its URL."""
    port = free_port()
    server = _Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="none"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


def test_handlers_use_current_litestar_style() -> None:
    # Registering a handler is what warns (as an error, in this suite).
    Litestar(route_handlers=[*jobs_routes.ROUTES, *users_routes.ROUTES, *system_routes.ROUTES])


@pytest_asyncio.fixture(loop_scope="session")
async def api(pg_pool: asyncpg.Pool) -> AsyncIterator[Api]:
    token = f"jobs-api-{secrets.token_hex(12)}"
    await ensure_bootstrap(pg_pool, admin_token=token)
    queue = Queue(pg_pool, notify=False)
    bus = InProcessBus()
    dispatcher = Dispatcher(pg_pool, queue)
    stop = asyncio.Event()
    consumer = asyncio.create_task(
        bus.consume(Topic.RUN_REQUESTS, "dispatcher", dispatcher.handle, stop=stop)
    )
    context = GatewayContext(pool=pg_pool, queue=queue, bus=bus)
    app = quiet_app(context)
    try:
        async with (
            serve(app) as base_url,
            httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            ) as client,
        ):
            yield Api(
                client=client,
                queue=queue,
                pool=pg_pool,
                token=token,
                base_url=base_url,
                context=context,
            )
    finally:
        stop.set()
        await consumer


# -- one job ------------------------------------------------------------------------------


async def test_a_job_through_its_life_has_windmills_shapes(api: Api) -> None:
    job = await api.enqueue(
        runnable_path="u/admin/shape",
        runnable_hash="abc123",
        args={"x": 1},
        priority=3,
        trigger_kind="schedule",
        trigger_source="u/admin/every_minute",
    )

    queued = await api.job(job.id)
    assert queued.keys() >= QUEUED_REQUIRED
    assert queued["type"] == "QueuedJob"
    assert queued["id"] == str(job.id)
    assert queued["running"] is False
    assert queued["canceled"] is False
    assert queued["started_at"] is None
    assert queued["job_kind"] == "preview"
    assert queued["script_path"] == "u/admin/shape"
    assert queued["script_hash"] == "abc123"
    assert queued["raw_code"] == job.code
    assert queued["args"] == {"x": 1}
    assert queued["priority"] == 3
    assert queued["tag"] == job.tag
    assert queued["permissioned_as"] == "u/admin"
    assert queued["email"] == "admin@localhost"
    assert queued["is_flow_step"] is False
    assert queued["visible_to_owner"] is True
    assert queued["flow_status"] is None
    assert queued["schedule_path"] == "u/admin/every_minute"
    assert queued["trigger_kind"] == "schedule"
    assert queued["workspace_id"] == "main"
    assert queued["logs"] is None
    datetime.fromisoformat(queued["created_at"])
    datetime.fromisoformat(queued["scheduled_for"])

    claimed = await api.claim(job)
    await api.queue.append_log(job.id, "hello\n")
    running = await api.job(job.id)
    assert running["type"] == "QueuedJob"
    assert running["running"] is True
    assert running["started_at"] is not None
    assert running["last_ping"] is not None
    assert running["worker"] == WORKER
    assert running["attempt"] == 1
    assert running["logs"] == "hello\n"

    await api.queue.append_log(job.id, "world\n")
    assert await api.queue.complete(claimed, {"answer": 42}, duration_ms=17, memory_peak_kb=2048)
    done = await api.job(job.id)
    assert done.keys() >= COMPLETED_REQUIRED
    assert done["type"] == "CompletedJob"
    assert done["success"] is True
    assert done["result"] == {"answer": 42}
    assert done["duration_ms"] == 17
    assert done["mem_peak"] == 2048
    assert done["canceled"] is False
    assert done["is_skipped"] is False
    assert done["deleted"] is False
    assert done["logs"] == "hello\nworld\n"
    assert done["exit_reason"] == "ok"
    assert done["status"] == "success"
    assert done["worker"] == WORKER
    assert datetime.fromisoformat(done["completed_at"]) >= datetime.fromisoformat(
        done["started_at"]
    )
    assert "running" not in done

    without_logs = await api.job(job.id, no_logs="true")
    assert without_logs["logs"] is None
    completed = await api.get(f"/jobs_u/completed/get/{job.id}")
    assert completed.json()["result"] == {"answer": 42}


async def test_a_failed_job_reports_its_error_object(api: Api) -> None:
    job = await api.enqueue()
    claimed = await api.claim(job)
    error = JobError(name="ZeroDivisionError", message="division by zero", stack="line 2")
    await api.queue.fail(claimed, error, retryable=False)

    body = await api.job(job.id)
    assert body["success"] is False
    assert body["result"]["error"]["name"] == "ZeroDivisionError"
    assert body["result"]["error"]["message"] == "division by zero"
    assert body["result"]["error"]["stack"] == "line 2"
    assert body["exit_reason"] == "error"

    result = await api.get(f"/jobs_u/completed/get_result/{job.id}")
    assert result.status_code == 200
    assert result.json() == body["result"]
    maybe = (await api.get(f"/jobs_u/completed/get_result_maybe/{job.id}")).json()
    assert maybe == {"completed": True, "started": True, "success": False, "result": body["result"]}


async def test_results_before_and_after_completion(api: Api) -> None:
    job = await api.enqueue(args={"name": "ann"})
    maybe = (await api.get(f"/jobs_u/completed/get_result_maybe/{job.id}")).json()
    assert maybe == {"completed": False, "started": False, "success": None, "result": None}
    not_yet = await api.get(f"/jobs_u/completed/get_result/{job.id}")
    assert not_yet.status_code == 404
    assert "not completed" in not_yet.json()["error"]["message"]
    assert (await api.get(f"/jobs_u/completed/get/{job.id}")).status_code == 404
    assert (await api.get(f"/jobs_u/get_args/{job.id}")).json() == {"name": "ann"}

    claimed = await api.claim(job)
    maybe = (await api.get(f"/jobs_u/completed/get_result_maybe/{job.id}")).json()
    assert maybe["started"] is True
    assert maybe["completed"] is False

    await api.queue.complete(claimed, None)
    result = await api.get(f"/jobs_u/completed/get_result/{job.id}")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.content == b"null"
    maybe = (await api.get(f"/jobs_u/completed/get_result_maybe/{job.id}")).json()
    assert maybe == {"completed": True, "started": True, "success": True, "result": None}


async def test_logs_root_job_and_unknown_jobs(api: Api) -> None:
    job = await api.enqueue()
    logs = await api.get(f"/jobs_u/get_logs/{job.id}")
    assert logs.status_code == 200
    assert logs.text == ""
    await api.queue.append_log(job.id, "a\n")
    await api.queue.append_log(job.id, "b\n")
    logs = await api.get(f"/jobs_u/get_logs/{job.id}")
    assert logs.headers["content-type"].startswith("text/plain")
    assert logs.text == "a\nb\n"

    assert (await api.get(f"/jobs_u/get_root_job_id/{job.id}")).json() == str(job.id)
    child = await api.enqueue(parent_job=job.id)
    assert (await api.get(f"/jobs_u/get_root_job_id/{child.id}")).json() == str(job.id)
    root = uuid.uuid4()
    step = await api.enqueue(parent_job=job.id, root_job=root, flow_step="a")
    assert (await api.get(f"/jobs_u/get_root_job_id/{step.id}")).json() == str(root)
    assert (await api.job(step.id))["is_flow_step"] is True

    unknown = uuid.uuid4()
    for path in (
        f"/jobs_u/get/{unknown}",
        f"/jobs_u/get_logs/{unknown}",
        f"/jobs_u/get_args/{unknown}",
        f"/jobs_u/getupdate/{unknown}",
        f"/jobs_u/getupdate_sse/{unknown}",
        f"/jobs_u/get_root_job_id/{unknown}",
        f"/jobs_u/completed/get_result/{unknown}",
        f"/jobs_u/completed/get_result_maybe/{unknown}",
    ):
        response = await api.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    # A job is found only in its own workspace.
    other = await api.client.get(f"/api/w/other/jobs_u/get/{job.id}")
    assert other.status_code == 404


async def test_a_workspace_token_reads_only_its_workspace(api: Api) -> None:
    job = await api.enqueue()
    await api.pool.execute("INSERT INTO workspaces (id, name) VALUES ('other', 'other')")
    limited = await create_token(api.pool, user_id="admin", workspace="other")
    headers = {"Authorization": f"Bearer {limited}"}
    response = await api.client.get(f"/api/w/main/jobs_u/get/{job.id}", headers=headers)
    assert response.status_code == 403
    assert "limited to workspace 'other'" in response.json()["error"]["message"]
    listed = await api.client.get("/api/w/other/jobs/list", headers=headers)
    assert listed.status_code == 200
    assert listed.json() == []


# -- following logs -------------------------------------------------------------------------


async def test_getupdate_offsets_are_characters_across_chunks(api: Api) -> None:
    job = await api.enqueue()
    claimed = await api.claim(job)
    chunks = ["héllo\n", "wörld 🌍\n", "", "end\n"]
    for chunk in chunks:
        if chunk:
            await api.queue.append_log(job.id, chunk)
    whole = "".join(chunks)

    async def update(offset: int) -> dict[str, Any]:
        response = await api.get(f"/jobs_u/getupdate/{job.id}", log_offset=offset, running="true")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = await update(0)
    assert first["new_logs"] == whole
    assert first["log_offset"] == len(whole)
    assert first["running"] is True
    assert first["completed"] is False
    assert {"running", "completed", "new_logs", "log_offset", "mem_peak", "flow_status"} <= (
        first.keys()
    )
    # Every offset, including those inside a chunk and inside multi-byte characters.
    for offset in range(len(whole) + 1):
        body = await update(offset)
        assert body["new_logs"] == whole[offset:], offset
        assert body["log_offset"] == len(whole)
    past_the_end = await update(len(whole) + 10)
    assert past_the_end["new_logs"] == ""
    assert past_the_end["log_offset"] == len(whole)
    negative = await api.get(f"/jobs_u/getupdate/{job.id}", log_offset=-1)
    assert negative.status_code == 400

    # A client polling with the offsets it is given rebuilds the log exactly.
    seen, offset = "", 0
    more = ["a line\n", "ünïcode 🌍🌍\n", "tail"]
    for chunk in more:
        body = await update(offset)
        seen += body["new_logs"]
        offset = body["log_offset"]
        await api.queue.append_log(job.id, chunk)
    await api.queue.complete(claimed, "done")
    body = await update(offset)
    seen += body["new_logs"]
    assert seen == whole + "".join(more)
    assert body["completed"] is True
    assert body["running"] is False
    no_logs = (await api.get(f"/jobs_u/getupdate/{job.id}", no_logs="true")).json()
    assert no_logs["new_logs"] is None
    assert no_logs["log_offset"] == len(seen)


@dataclass
class Event:
    data: dict[str, Any]
    id: str | None


async def sse_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parse a ``text/event-stream`` body into events as the lines arrive."""
    data: list[str] = []
    event_id: str | None = None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Event(data=json.loads("\n".join(data)), id=event_id)
            data, event_id = [], None
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("id:"):
            event_id = line[3:].strip()


async def next_event(events: AsyncIterator[Event], timeout: float = 10) -> Event:
    return await asyncio.wait_for(anext(events), timeout)


async def test_sse_streams_logs_as_they_arrive_then_the_completed_job(api: Api) -> None:
    job = await api.enqueue()
    claimed = await api.claim(job)
    await api.queue.append_log(job.id, "before\n")
    url = f"/api/w/main/jobs_u/getupdate_sse/{job.id}"
    async with api.client.stream("GET", url, params={"log_offset": 2}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)

        hello = await next_event(events)
        assert hello.data["type"] == "update"
        assert hello.data["running"] is True
        assert hello.data["completed"] is False
        assert hello.data["new_logs"] == "fore\n"
        assert hello.data["log_offset"] == len("before\n")
        assert hello.id == str(len("before\n"))

        await api.queue.append_log(job.id, "first chunk\n")
        first = await next_event(events)
        assert first.data["completed"] is False
        assert first.data["new_logs"] == "first chunk\n"
        assert first.data["log_offset"] == len("before\nfirst chunk\n")

        await api.queue.append_log(job.id, "second chunk\n")
        await api.queue.complete(claimed, {"ok": True})
        seen = ""
        while True:
            event = await next_event(events)
            if event.data["type"] != "update":
                continue
            seen += event.data.get("new_logs", "")
            if event.data["completed"]:
                break
        assert seen == "second chunk\n"
        assert event.data["running"] is False
        assert event.data["log_offset"] == len("before\nfirst chunk\nsecond chunk\n")
        assert event.data["job"]["type"] == "CompletedJob"
        assert event.data["job"]["result"] == {"ok": True}
        assert event.data["job"]["success"] is True
        # The stream ends after the completed event.
        with pytest.raises(StopAsyncIteration):
            await next_event(events)


async def test_sse_options_resume_and_only_result(api: Api) -> None:
    job = await api.enqueue()
    claimed = await api.claim(job)
    await api.queue.append_log(job.id, "0123456789")
    url = f"/api/w/main/jobs_u/getupdate_sse/{job.id}"
    # Reconnecting: Last-Event-ID (the offset sent as event id) wins over log_offset.
    async with api.client.stream(
        "GET", url, params={"log_offset": 0}, headers={"Last-Event-ID": "7"}
    ) as response:
        first = await next_event(sse_events(response))
        assert first.data["new_logs"] == "789"

    async with api.client.stream("GET", url, params={"no_logs": "true"}) as response:
        first = await next_event(sse_events(response))
        assert "new_logs" not in first.data
        assert first.data["log_offset"] == 10

    async with api.client.stream("GET", url, params={"only_result": "true"}) as response:
        events = sse_events(response)
        assert (await next_event(events)).data["completed"] is False
        await api.queue.append_log(job.id, "more")
        await api.queue.complete(claimed, [1, 2])
        last = await next_event(events)
        while not last.data.get("completed"):
            last = await next_event(events)
        assert last.data["only_result"] == [1, 2]
        assert "job" not in last.data
        assert "new_logs" not in last.data

    # A completed job: one event, at once.
    async with api.client.stream("GET", url) as response:
        events = [event async for event in sse_events(response)]
    assert [e.data["completed"] for e in events] == [True]
    assert events[0].data["new_logs"] == "0123456789more"


async def test_sse_pings_a_quiet_stream_and_ends_at_its_lifetime(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_routes, "SSE_PING_INTERVAL_S", 0.2)
    monkeypatch.setattr(jobs_routes, "SSE_MAX_LIFETIME_S", 1.0)
    job = await api.enqueue()
    started = time.monotonic()
    async with api.client.stream(
        "GET", f"/api/w/main/jobs_u/getupdate_sse/{job.id}", params={"poll_delay_ms": 100}
    ) as response:
        kinds = [event.data["type"] async for event in sse_events(response)]
    assert time.monotonic() - started < 5
    assert kinds[0] == "update"
    assert "ping" in kinds
    assert kinds[-1] == "timeout"


async def test_sse_ends_with_an_error_event_when_the_database_fails(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise asyncpg.InterfaceError("connection is closed")

    monkeypatch.setattr(jobs_routes, "read_update_after", failing)
    job = await api.enqueue()
    async with api.client.stream("GET", f"/api/w/main/jobs_u/getupdate_sse/{job.id}") as response:
        kinds = [event.data["type"] async for event in sse_events(response)]
    assert kinds == ["update", "error"]


async def test_sse_stops_polling_when_the_client_goes_away(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls: list[float] = []
    read_update_after = jobs_routes.read_update_after

    async def counting(*args: Any, **kwargs: Any) -> Any:
        polls.append(time.monotonic())
        return await read_update_after(*args, **kwargs)

    monkeypatch.setattr(jobs_routes, "read_update_after", counting)
    job = await api.enqueue()
    url = f"{api.base_url}/api/w/main/jobs_u/getupdate_sse/{job.id}"
    # Streams with their own connections, dropped without reading to the end.
    for _ in range(5):
        async with (
            httpx.AsyncClient(headers={"Authorization": f"Bearer {api.token}"}) as client,
            client.stream("GET", url) as response,
        ):
            events = sse_events(response)
            await next_event(events)
            await asyncio.sleep(0.3)  # long enough to poll a few times
            del events
    assert polls, "the streams polled"

    async def pool_idle() -> bool:
        # The app's job-done listener holds one connection while it listens.
        done = api.context.done
        held = 1 if done is not None and done.listening.is_set() else 0
        return api.pool.get_size() - api.pool.get_idle_size() == held

    deadline = time.monotonic() + 5
    while not await pool_idle():
        assert time.monotonic() < deadline, "a stream kept a connection"
        await asyncio.sleep(0.05)
    # The streams' pollers are gone: none looks at the job any more.
    polls_then = len(polls)
    await asyncio.sleep(1.5)
    assert len(polls) == polls_then
    assert (await api.client.get("/api/version")).status_code == 200


# -- run and wait: woken by the job's end ------------------------------------------------------


async def test_run_wait_result_is_woken_by_the_end_of_its_job(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pauses between looks far longer than this test may take: only the announcement
    # of the job's end can wake the waiter in time.
    monkeypatch.setattr(run_routes, "_POLL_FIRST_S", 120.0)
    monkeypatch.setattr(run_routes, "_POLL_MAX_S", 120.0)
    tag = f"t-{secrets.token_hex(4)}"
    body = {"content": "def main():\n    return 1\n", "language": "python3", "tag": tag}
    waiting = asyncio.create_task(
        api.client.post("/api/w/main/jobs/run_wait_result/preview", json=body, timeout=60)
    )
    claimed: list[ClaimedJob] = []
    deadline = time.monotonic() + 10
    while not claimed:
        assert time.monotonic() < deadline, "the job never arrived"
        await asyncio.sleep(0.02)
        claimed = await api.queue.claim(WORKER, [tag])
    assert claimed[0].meta.get("notify_done") is True
    await asyncio.sleep(0.2)  # the waiter looked once and now pauses
    assert not waiting.done()
    assert await api.queue.complete(claimed[0], {"answer": 42})
    response = await asyncio.wait_for(waiting, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"answer": 42}


async def test_only_waited_jobs_announce_their_end(api: Api, database_url: str) -> None:
    heard: list[str] = []
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener("gristmill_done", lambda *args: heard.append(args[-1]))
        tag = f"t-{secrets.token_hex(4)}"
        waited = [new_job(tag=tag, meta={"notify_done": True}) for _ in range(4)]
        plain = [new_job(tag=tag) for _ in range(3)]
        await api.queue.enqueue([*waited, *plain])
        # Ended by each way of storing an outcome: one success, a batch of successes,
        # a failure, a cancel of a job still queued.
        queued = waited[3]
        claimed = {job.id: job for job in await api.queue.claim(WORKER, [tag], limit=10)}
        assert len(claimed) == 7
        await api.queue.release(claimed.pop(queued.id), note="put back for the cancel")
        first, second, third = (claimed.pop(job.id) for job in waited[:3])
        assert await api.queue.complete(first, 1)
        await api.queue.complete_many([Completion(second), *map(Completion, claimed.values())])
        await api.queue.fail(third, JobError(name="E", message="failed"), retryable=False)
        await api.queue.cancel(queued.id, by="admin")
        deadline = time.monotonic() + 5
        while len(heard) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # and nothing more comes
    finally:
        await listener.close()
    assert sorted(heard) == sorted(str(job.id) for job in waited)


# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_queued_and_running_jobs(api: Api) -> None:
    queued = await api.enqueue()
    response = await api.client.post(
        f"/api/w/main/jobs_u/queue/cancel/{queued.id}", json={"reason": "not needed"}
    )
    assert response.status_code == 200
    assert response.text == str(queued.id)
    body = await api.job(queued.id)
    assert body["type"] == "CompletedJob"
    assert body["canceled"] is True
    assert body["canceled_by"] == "admin"
    assert "not needed" in body["canceled_reason"]
    assert body["success"] is False
    assert body["result"]["error"]["name"] == "Canceled"
    assert body["started_at"] == body["completed_at"]
    again = await api.client.post(f"/api/w/main/jobs_u/queue/cancel/{queued.id}", json={})
    assert again.status_code == 200
    assert again.text == f"queued job id {queued.id} is already completed"

    running = await api.enqueue()
    await api.claim(running)
    # Windmill's clients send a body; the in-job SDK may send a null reason; none is fine too.
    response = await api.client.post(f"/api/w/main/jobs_u/queue/cancel/{running.id}")
    assert response.status_code == 200, response.text
    body = await api.job(running.id)
    assert body["type"] == "QueuedJob"
    assert body["running"] is True
    assert body["canceled"] is True
    assert body["canceled_by"] == "admin"

    third = await api.enqueue()
    await api.claim(third)
    response = await api.client.post(
        f"/api/w/main/jobs_u/queue/cancel/{third.id}", json={"reason": None}
    )
    assert response.status_code == 200

    unknown = await api.client.post(f"/api/w/main/jobs_u/queue/cancel/{uuid.uuid4()}", json={})
    assert unknown.status_code == 404
    elsewhere = await api.client.post(f"/api/w/other/jobs_u/queue/cancel/{running.id}", json={})
    assert elsewhere.status_code == 404


# -- lists -----------------------------------------------------------------------------------


@dataclass
class Population:
    by_name: dict[str, NewJob]

    def ids(self, *names: str) -> set[str]:
        return {str(self.by_name[name].id) for name in names}


async def populate(api: Api) -> Population:
    """Jobs in every state, with distinct paths, creators, kinds, tags and triggers."""
    await api.pool.execute(
        "INSERT INTO users (id, email) VALUES ('bob', 'bob@example.com') ON CONFLICT DO NOTHING"
    )
    specs: dict[str, dict[str, Any]] = {
        "queued": {"runnable_path": "f/etl/load", "kind": "script", "runnable_hash": "h1"},
        "due_later": {
            "runnable_path": "f/etl/later",
            "kind": "script",
            "scheduled_for": datetime.now(UTC) + timedelta(hours=1),
        },
        "running": {"runnable_path": "f/etl/extract", "kind": "script", "created_by": "bob"},
        "ok": {"runnable_path": "u/admin/a", "args": {"n": 1, "who": "x"}},
        "ok2": {"runnable_path": "u/admin/b", "trigger_kind": "schedule", "trigger_source": "s"},
        "failed": {"runnable_path": "u/admin/a", "created_by": "bob", "tag": "special"},
    }
    jobs: dict[str, NewJob] = {}
    for name, spec in specs.items():
        jobs[name] = await api.enqueue(**spec)
    jobs["child"] = await api.enqueue(
        runnable_path="u/admin/child", parent_job=jobs["ok"].id, flow_step="step_a"
    )
    await api.claim(jobs["running"])
    for name, result in (("ok", {"value": 1}), ("ok2", "two"), ("child", None)):
        await api.queue.complete(await api.claim(jobs[name]), result)
        await asyncio.sleep(0.002)  # distinct completion times
    failed = await api.claim(jobs["failed"])
    await api.queue.fail(failed, JobError(name="E", message="m"), retryable=False)
    return Population(by_name=jobs)


async def test_list_filters(api: Api) -> None:
    population = await populate(api)

    async def ids(path: str = "/jobs/list", **params: Any) -> set[str]:
        response = await api.get(path, **params)
        assert response.status_code == 200, response.text
        return {job["id"] for job in response.json()}

    everything = set(population.ids(*population.by_name))
    assert await ids() == everything
    assert await ids(script_path_exact="u/admin/a") == population.ids("ok", "failed")
    assert await ids(script_path_start="f/etl/") == population.ids("queued", "due_later", "running")
    assert await ids(script_path_start="f/etl_") == set()  # no LIKE wildcards
    assert await ids(script_hash="h1") == population.ids("queued")
    assert await ids(created_by="bob") == population.ids("running", "failed")
    assert await ids(success="true") == population.ids("ok", "ok2", "child")
    assert await ids(success="false") == population.ids("failed")
    assert await ids(running="true") == population.ids("running")
    assert await ids(job_kinds="script") == population.ids("queued", "due_later", "running")
    assert await ids(job_kinds="preview, flow") == everything - population.ids(
        "queued", "due_later", "running"
    )
    assert await ids(tag="special") == population.ids("failed")
    assert await ids(has_null_parent="false") == population.ids("child")
    assert await ids(is_flow_step="true") == population.ids("child")
    assert await ids(parent_job=str(population.by_name["ok"].id)) == population.ids("child")
    assert await ids(is_skipped="true") == set()
    assert await ids(is_skipped="false") == everything
    assert await ids(trigger_kind="schedule") == population.ids("ok2")
    assert await ids(is_not_schedule="true") == everything - population.ids("ok2")
    assert await ids(args=json.dumps({"who": "x"})) == population.ids("ok")
    assert await ids(result=json.dumps({"value": 1})) == population.ids("ok")
    assert await ids(scheduled_for_before_now="false") == population.ids("due_later")
    started = await ids(started_after="2000-01-01T00:00:00Z")
    assert started == population.ids("running", "ok", "ok2", "child", "failed")
    assert await ids(started_before="2000-01-01T00:00:00Z") == set()
    now = datetime.now(UTC).isoformat()
    assert await ids(created_before=now) == everything
    assert await ids(created_after=now) == set()
    bad = await api.get("/jobs/list", args="{not json")
    assert bad.status_code == 400
    assert bad.json()["error"]["location"] == "args"

    assert await ids("/jobs/completed/list") == population.ids("ok", "ok2", "child", "failed")
    assert await ids("/jobs/completed/list", success="false") == population.ids("failed")
    assert await ids("/jobs/queue/list") == population.ids("queued", "due_later", "running")
    assert await ids("/jobs/queue/list", running="false") == population.ids("queued", "due_later")

    completed = (await api.get("/jobs/completed/list")).json()
    assert [job["type"] for job in completed] == ["CompletedJob"] * 4
    assert [job["id"] for job in completed] == [
        str(population.by_name[name].id) for name in ("failed", "child", "ok2", "ok")
    ]  # latest completion first
    for job in completed:
        assert job.keys() >= COMPLETED_REQUIRED
        assert job["logs"] is None
        assert job["raw_code"] is None
    queued = (await api.get("/jobs/queue/list")).json()
    assert {job["type"] for job in queued} == {"QueuedJob"}
    assert (await api.get("/jobs/completed/count")).json() == {"database_length": 4}
    assert (await api.get("/jobs/queue/count")).json() == {"database_length": 3, "suspended": 0}


async def test_list_pagination_and_order(api: Api) -> None:
    created = []
    for index in range(12):
        job = await api.enqueue(args={"i": index})
        created.append(str(job.id))
    newest_first = list(reversed(created))

    async def page(**params: Any) -> list[str]:
        response = await api.get("/jobs/list", **params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()]

    pages = [await page(page=n, per_page=5) for n in (1, 2, 3, 4)]
    assert pages[0] == newest_first[:5]
    assert pages[1] == newest_first[5:10]
    assert pages[2] == newest_first[10:]
    assert pages[3] == []
    assert await page(order_desc="false", per_page=5) == created[:5]
    assert await page(order_desc="false", per_page=5, page=3) == created[10:]
    assert await page() == newest_first  # default page size 30
    assert await page(per_page=0) == newest_first[:1]  # at least one
    assert await page(page=0, per_page=5) == newest_first[:5]  # pages start at 1

    # Jobs inserted in one batch share their creation time: pages neither repeat nor skip.
    batch = [new_job(tag="batch") for _ in range(7)]
    await api.queue.enqueue(batch)
    seen: list[str] = []
    for number in range(1, 6):
        seen += await page(page=number, per_page=4, tag="batch")
    assert sorted(seen) == sorted(str(job.id) for job in batch)
    assert len(seen) == len(set(seen))
    many = await page(per_page=10**9)
    assert len(many) == 19


async def test_preview_runs_through_the_bus_and_reads_back(api: Api) -> None:
    response = await api.client.post(
        "/api/w/main/jobs/run/preview",
        json={
            "content": "def main(x: int):\n    return x\n",
            "language": "python3",
            "args": {"x": 2},
        },
    )
    assert response.status_code == 201, response.text
    job_id = response.text
    body = (await api.get(f"/jobs_u/get/{job_id}")).json()
    assert body["type"] == "QueuedJob"
    assert body["raw_code"] == "def main(x: int):\n    return x\n"
    assert body["language"] == "python3"
    assert body["args"] == {"x": 2}
    assert body["trigger_kind"] == "api"
    listed = (await api.get("/jobs/list", trigger_kind="api", job_kinds="preview")).json()
    assert [job["id"] for job in listed] == [job_id]


# -- auth and the OpenAPI document -----------------------------------------------------------


PUBLIC = {"/api/version", "/api/health", "/api/openapi.json"}
#: Approval links carry their own credential (a per-step signature) instead of a token.
SIGNED = re.compile(r"^/api/w/\{workspace\}/jobs_u/(resume|cancel|get_flow)/")


def _concrete(path: str) -> str:
    values = {"workspace": "main", "job_id": str(uuid.uuid4()), "token_prefix": "abcdefgh"}
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    for part in path.split("/"):
        if part.startswith("{"):  # any other parameter: a plain word
            path = path.replace(part, "x")
    return path


async def test_every_endpoint_needs_a_token_except_the_public_ones(api: Api) -> None:
    schema = (await api.client.get("/api/openapi.json")).json()
    checked = 0
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as anonymous:
        for path, operations in schema["paths"].items():
            for method in operations:
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                response = await anonymous.request(method.upper(), _concrete(path), json={})
                if SIGNED.match(path):
                    # No token needed, but a made-up signature or job is refused.
                    assert response.status_code in {400, 403, 404}, (method, path, response.text)
                    continue
                if path in PUBLIC:
                    assert response.status_code == 200, (method, path, response.text)
                else:
                    assert response.status_code == 401, (method, path, response.status_code)
                    checked += 1
                bad_token = await anonymous.request(
                    method.upper(),
                    _concrete(path),
                    json={},
                    headers={"Authorization": "Bearer not-a-token"},
                )
                if path not in PUBLIC:
                    assert bad_token.status_code == 401, (method, path)
        for public in ("/api/openapi.json", "/api/openapi/openapi.json", "/api/openapi/swagger"):
            assert (await anonymous.get(public)).status_code == 200, public
        # SSE is no exception (a browser's EventSource sends ?token= instead of a header).
        sse = await anonymous.get(f"/api/w/main/jobs_u/getupdate_sse/{uuid.uuid4()}")
        assert sse.status_code == 401
    assert checked >= 20


async def test_the_openapi_document_describes_the_jobs_api(api: Api) -> None:
    schema = (await api.client.get("/api/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/api/w/{workspace}/jobs_u/get/{job_id}",
        "/api/w/{workspace}/jobs_u/getupdate/{job_id}",
        "/api/w/{workspace}/jobs_u/getupdate_sse/{job_id}",
        "/api/w/{workspace}/jobs/list",
        "/api/users/tokens/create",
    ):
        operation = next(iter(paths[path].values()))
        assert operation["summary"], path
    job = paths["/api/w/{workspace}/jobs_u/get/{job_id}"]["get"]["responses"]["200"]
    refs = {option["$ref"] for option in job["content"]["application/json"]["schema"]["oneOf"]}
    assert refs == {"#/components/schemas/QueuedJob", "#/components/schemas/CompletedJob"}
    parameters = {p["name"] for p in paths["/api/w/{workspace}/jobs/list"]["get"]["parameters"]}
    assert {"script_path_exact", "job_kinds", "success", "page", "per_page", "order_desc"} <= (
        parameters
    )
    completed = schema["components"]["schemas"]["CompletedJob"]["properties"]
    assert completed["type"]["const"] == "CompletedJob"
    assert {"result", "duration_ms", "exit_reason", "mem_peak"} <= completed.keys()


# -- a real job under ``gristmill up`` -------------------------------------------------------


@pytest.fixture
def gristmill_up(
    spawn: Callable[..., GristmillProcess], database_url: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    token = f"up-{secrets.token_hex(12)}"
    port = free_port()
    process = spawn(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": database_url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": token,
            "GRISTMILL_DATA_DIR": str(tmp_path / "data"),
            "GRISTMILL_WORKERS": "1",
        },
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/version", process=process)
    yield base, token
    process.assert_alive()


SLOW_PRINTER = """
import time

def main():
    print("step 1", flush=True)
    time.sleep(1.5)
    print("step 2", flush=True)
    time.sleep(1.5)
    print("step 3", flush=True)
    return {"steps": 3}
"""


async def test_sse_follows_a_job_a_real_worker_runs(gristmill_up: tuple[str, str]) -> None:
    base, token = gristmill_up
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        response = await client.post(
            "/api/w/main/jobs/run/preview", json={"content": SLOW_PRINTER, "language": "python3"}
        )
        assert response.status_code == 201, response.text
        job_id = response.text
        logs, updates = "", []
        # EventSource style: the token in the query string.
        async with (
            httpx.AsyncClient(base_url=base, timeout=30) as browser,
            browser.stream(
                "GET", f"/api/w/main/jobs_u/getupdate_sse/{job_id}", params={"token": token}
            ) as stream,
        ):
            assert stream.status_code == 200
            async for event in sse_events(stream):
                if event.data["type"] != "update":
                    continue
                updates.append(event.data)
                logs += event.data.get("new_logs", "")
        final = updates[-1]
        assert final["completed"] is True
        assert final["job"]["result"] == {"steps": 3}
        assert final["job"]["success"] is True
        # Logs arrived while the job ran, before the completed event.
        early = [u for u in updates if not u["completed"] and "step 1" in u.get("new_logs", "")]
        assert early, updates
        assert logs.index("step 1") < logs.index("step 2") < logs.index("step 3")
        full = (await client.get(f"/api/w/main/jobs_u/get_logs/{job_id}")).text
        assert full == logs
        assert final["log_offset"] == len(full)
