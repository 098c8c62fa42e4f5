"""``resolve`` turns a run of a saved script (by path or by hash) into a job."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from gristmill.common import scripts
from gristmill.common.contracts.runs import (
    RawCode,
    Runnable,
    RunRequest,
    ScriptHash,
    ScriptPath,
    Trigger,
    TriggerKind,
)
from gristmill.common.errors import InvalidRequest, NotFound
from gristmill.common.queue import QueueLimits
from gristmill.common.runs import resolve, validate_request
from gristmill.common.scripts import NewScript

CODE = "def main(x: int, label: str = 'n'):\n    return {label: x}\n"


def request(runnable: Runnable, **overrides: Any) -> RunRequest:
    values: dict[str, Any] = {
        "job_id": uuid.uuid4(),
        "workspace": "main",
        "runnable": runnable,
        "requested_by": "admin",
        "trigger": Trigger(kind=TriggerKind.SCHEDULE, source="every-minute"),
        "args": {"x": 1},
    }
    values.update(overrides)
    return RunRequest(**values)


async def save(pool: asyncpg.Pool, **fields: Any) -> str:
    values: dict[str, Any] = {"path": "u/admin/double", "content": CODE, "language": "python3"}
    values.update(fields)
    async with pool.acquire() as conn:
        saved = await scripts.create_script(conn, "main", NewScript(**values), created_by="admin")
    return saved.hash


async def resolved(pool: asyncpg.Pool, run: RunRequest) -> Any:
    async with pool.acquire() as conn:
        return await resolve(conn, run)


async def test_by_path_runs_the_latest_version(pg_pool: asyncpg.Pool) -> None:
    await save(pg_pool)
    latest = await save(pg_pool, content=CODE + "# v2\n")
    run = request(ScriptPath(path="u/admin/double"))
    job = await resolved(pg_pool, run)
    assert (job.id, job.kind, job.workspace) == (run.job_id, "script", "main")
    assert (job.runnable_path, job.runnable_hash) == ("u/admin/double", latest)
    assert (job.language, job.code, job.lock) == ("python3", CODE + "# v2\n", None)
    assert job.tag == "python3"
    assert job.args == {"x": 1, "label": "n"}  # the schema's default filled in
    assert (job.trigger_kind, job.trigger_source, job.created_by) == (
        "schedule",
        "every-minute",
        "admin",
    )


async def test_by_hash_runs_that_version_even_archived(pg_pool: asyncpg.Pool) -> None:
    first = await save(pg_pool)
    await save(pg_pool, content=CODE + "# v2\n")
    await scripts.archive_path(pg_pool, "main", "u/admin/double")
    job = await resolved(pg_pool, request(ScriptHash(hash=first)))
    assert (job.runnable_hash, job.code) == (first, CODE)
    with pytest.raises(NotFound, match="archived"):
        await resolved(pg_pool, request(ScriptPath(path="u/admin/double")))


async def test_unknown_or_deleted_scripts_are_not_found(pg_pool: asyncpg.Pool) -> None:
    with pytest.raises(NotFound, match="'u/admin/nothing' not found") as caught:
        await resolved(pg_pool, request(ScriptPath(path="u/admin/nothing")))
    assert caught.value.location == "runnable"
    with pytest.raises(NotFound, match="'0123456789abcdef' not found") as caught:
        await resolved(pg_pool, request(ScriptHash(hash="0123456789abcdef")))
    assert caught.value.location == "runnable"
    digest = await save(pg_pool)
    await scripts.delete_hash(pg_pool, "main", digest)
    with pytest.raises(NotFound, match="was deleted"):
        await resolved(pg_pool, request(ScriptHash(hash=digest)))
    # Another workspace's script does not exist here.
    with pytest.raises(NotFound):
        await resolved(pg_pool, request(ScriptPath(path="u/admin/double"), workspace="other"))


async def test_arguments_are_checked(pg_pool: asyncpg.Pool) -> None:
    await save(pg_pool)
    with pytest.raises(InvalidRequest) as caught:
        await resolved(pg_pool, request(ScriptPath(path="u/admin/double"), args={"x": "one"}))
    assert str(caught.value) == "args.x: expected integer, got string 'one'"
    with pytest.raises(InvalidRequest) as caught:
        await resolved(pg_pool, request(ScriptPath(path="u/admin/double"), args={}))
    assert str(caught.value) == "args.x: missing required argument"


async def test_tag_timeout_and_priority(pg_pool: asyncpg.Pool) -> None:
    digest = await save(pg_pool, tag="gpu", extra={"timeout": 30, "priority": 7})
    job = await resolved(pg_pool, request(ScriptHash(hash=digest)))
    assert (job.tag, job.timeout_s, job.priority) == ("gpu", 30.0, 7)
    # The request's own values win.
    run = request(ScriptHash(hash=digest), tag="cpu", timeout_s=5.0, priority=9)
    job = await resolved(pg_pool, run)
    assert (job.tag, job.timeout_s, job.priority) == ("cpu", 5.0, 9)


async def test_a_bad_path_is_an_invalid_request(pg_pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await resolved(pg_pool, request(ScriptPath(path="not a path")))
    assert caught.value.location == "path"


def test_validate_request_still_checks_preview_languages() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_request(request(RawCode(language="cobol", content="x")), QueueLimits())
    assert caught.value.location == "runnable.language"
    validate_request(request(ScriptPath(path="u/admin/double")), QueueLimits())


@pytest.mark.parametrize(
    ("args", "location"),
    [
        ({"s": "a\x00b"}, "args.s"),
        ({"deep": {"list": ["ok", "\x00"]}}, "args.deep.list[1]"),
        ({"key\x00": 1}, "args.key\x00"),
    ],
)
def test_nul_characters_in_arguments_are_refused(args: dict[str, Any], location: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_request(request(ScriptPath(path="u/admin/double"), args=args), QueueLimits())
    assert caught.value.location == location
    assert "NUL" in caught.value.message


def test_an_escaped_backslash_u0000_is_just_text() -> None:
    run = request(ScriptPath(path="u/admin/double"), args={"s": "\\u0000"})
    validate_request(run, QueueLimits())
