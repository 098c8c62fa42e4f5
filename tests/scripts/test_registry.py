"""The script registry against a real Postgres: versions, conflicts, reads, archive, delete."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest

from gristmill.common import scripts
from gristmill.common.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from gristmill.common.introspection import JSON_SCHEMA_DIALECT
from gristmill.common.queue import QueueLimits
from gristmill.common.scripts import NewScript, ScriptFilter

WS = "main"
HELLO = "def main(name: str, times: int = 1):\n    return name * times\n"


def new(path: str = "u/admin/hello", content: str = HELLO, **overrides: Any) -> NewScript:
    values: dict[str, Any] = {"path": path, "content": content, "language": "python3"}
    values.update(overrides)
    return NewScript(**values)


async def save(pool: asyncpg.Pool, script: NewScript, *, by: str = "admin") -> str:
    async with pool.acquire() as conn:
        saved = await scripts.create_script(conn, WS, script, created_by=by)
    return saved.hash


async def test_a_save_infers_the_schema_and_reads_back(pg_pool: asyncpg.Pool) -> None:
    digest = await save(pg_pool, new(summary="Greet", description="Says hello"))
    assert len(digest) == 16
    assert all(char in "0123456789abcdef" for char in digest)
    script = await scripts.get_by_path(pg_pool, WS, "u/admin/hello")
    assert script.hash == digest
    assert script == await scripts.get_by_hash(pg_pool, WS, digest)
    assert script.schema == {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "times": {"type": "integer", "default": 1},
        },
        "required": ["name"],
        "order": ["name", "times"],
    }
    assert (script.summary, script.description, script.language) == (
        "Greet",
        "Says hello",
        "python3",
    )
    assert (script.kind, script.archived, script.deleted) == ("script", False, False)
    assert script.parent_hashes == []
    assert script.created_by == "admin"
    assert script.lock is None
    assert script.tag is None


async def test_bash_schema_is_inferred(pg_pool: asyncpg.Pool) -> None:
    code = 'name="$1"\ngreeting="${2:-hello}"\necho "$greeting $name"\n'
    await save(pg_pool, new("f/ops/greet", code, language="bash"))
    schema = (await scripts.get_by_path(pg_pool, WS, "f/ops/greet")).schema
    assert schema is not None
    assert schema["properties"] == {
        "name": {"type": "string"},
        "greeting": {"type": "string", "default": "hello"},
    }
    assert schema["required"] == ["name"]


async def test_a_schema_sent_by_the_client_is_kept(pg_pool: asyncpg.Pool) -> None:
    sent = {"type": "object", "properties": {"x": {"type": "string"}}, "required": []}
    await save(pg_pool, new(schema=sent))
    assert (await scripts.get_by_path(pg_pool, WS, "u/admin/hello")).schema == sent


async def test_versions_chain_through_their_parents(pg_pool: asyncpg.Pool) -> None:
    first = await save(pg_pool, new())
    second = await save(pg_pool, new(content=HELLO + "# v2\n", parent_hash=first))
    # Without a parent, a save goes on top of whatever is latest.
    third = await save(pg_pool, new(content=HELLO + "# v3\n"))
    assert len({first, second, third}) == 3
    latest = await scripts.get_by_path(pg_pool, WS, "u/admin/hello")
    assert latest.hash == third
    assert latest.parent_hashes == [second, first]
    assert (await scripts.get_by_hash(pg_pool, WS, second)).parent_hashes == [first]
    # Every version stays readable by its hash.
    assert (await scripts.get_by_hash(pg_pool, WS, first)).content == HELLO


async def test_a_stale_parent_is_a_conflict_naming_the_latest(pg_pool: asyncpg.Pool) -> None:
    first = await save(pg_pool, new())
    second = await save(pg_pool, new(content=HELLO + "# mine\n", parent_hash=first))
    with pytest.raises(Conflict) as caught:
        await save(pg_pool, new(content=HELLO + "# theirs\n", parent_hash=first))
    assert caught.value.location == "parent_hash"
    assert caught.value.data == {"latest": second}
    assert second in caught.value.message
    # A parent for a path that has no script at all is a conflict too.
    with pytest.raises(Conflict, match="no script at 'u/admin/other'"):
        await save(pg_pool, new("u/admin/other", parent_hash=first))


async def test_identical_saves_are_idempotent(pg_pool: asyncpg.Pool) -> None:
    first = await save(pg_pool, new())
    # The same content again, with or without naming the head as parent: nothing new.
    assert await save(pg_pool, new()) == first
    assert await save(pg_pool, new(parent_hash=first)) == first
    second = await save(pg_pool, new(content=HELLO + "# v2\n", parent_hash=first))
    # A retried save (same content, same parent as the one that went through).
    assert await save(pg_pool, new(content=HELLO + "# v2\n", parent_hash=first)) == second
    assert await pg_pool.fetchval("SELECT count(*) FROM scripts") == 2
    # Going back to the first content is a new version on top, not the old one.
    third = await save(pg_pool, new(parent_hash=second))
    assert third not in (first, second)
    # Any field of the version makes it different.
    assert await save(pg_pool, new(summary="changed")) != third


async def test_the_hash_depends_on_the_workspace_and_path(pg_pool: asyncpg.Pool) -> None:
    schema = {"type": "object", "properties": {}}
    hashes = {
        scripts.version_hash(ws, path, None, new(path), schema)
        for ws in ("main", "other")
        for path in ("u/admin/a", "u/admin/b")
    }
    assert len(hashes) == 4


async def test_concurrent_saves_serialize(pg_pool: asyncpg.Pool) -> None:
    base = await save(pg_pool, new())
    outcomes = await asyncio.gather(
        *(save(pg_pool, new(content=HELLO + f"# {n}\n", parent_hash=base)) for n in range(5)),
        return_exceptions=True,
    )
    winners = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert len(winners) == 1
    assert all(isinstance(outcome, Conflict) for outcome in outcomes if outcome not in winners)
    assert (await scripts.get_by_path(pg_pool, WS, "u/admin/hello")).hash == winners[0]


@pytest.mark.parametrize(
    "path",
    [
        "hello",
        "u/admin",
        "x/admin/hello",
        "u//hello",
        "u/admin/hello world",
        "u/admin/hello.py",
        "u/admin/../etc",
        "f/folder/",
        "u/" + "a" * 300 + "/x",
    ],
)
async def test_bad_paths_are_rejected(pg_pool: asyncpg.Pool, path: str) -> None:
    with pytest.raises(InvalidRequest, match="expected u/<user>/<name> or f/<folder>/<name>") as e:
        await save(pg_pool, new(path))
    assert e.value.location == "path"


@pytest.mark.parametrize(
    "path", ["u/admin/hello", "/u/admin/hello", "f/ops/deep/er/path", "u/a-b/c_d", "f/x/Y9"]
)
def test_good_paths_are_accepted(path: str) -> None:
    assert scripts.validate_path(path) == path.strip("/")


async def test_unsupported_language_lists_the_supported_ones(pg_pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(language="cobol"))
    assert caught.value.location == "language"
    assert caught.value.message == (
        "unsupported language 'cobol'; supported: "
        "bash, bun, deno, go, nativets, postgresql, python3"
    )


@pytest.mark.parametrize(
    ("content", "location"),
    [
        ("def main(:\n    pass\n", "line 1, column 10"),
        ("import os\n\ndef main(a: int)\n    return a\n", "line 3, column 17"),
    ],
)
async def test_a_syntax_error_names_its_line_and_column(
    pg_pool: asyncpg.Pool, content: str, location: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(content=content))
    assert caught.value.location == location
    assert caught.value.message.startswith("the script is not valid Python")
    # Even with a schema from the client: code that does not parse is refused.
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(content=content, schema={"type": "object"}))
    assert caught.value.location == location
    assert await pg_pool.fetchval("SELECT count(*) FROM scripts") == 0


async def test_other_bad_saves(pg_pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidRequest, match="defines no `main` function"):
        await save(pg_pool, new(content="x = 1\n"))
    # ... unless the client brings its own schema (a script Gristmill cannot read).
    await save(pg_pool, new("u/admin/no_main", "x = 1\n", schema={"type": "object"}))
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(kind="banana"))
    assert caught.value.location == "kind"
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(tag="bad tag"))
    assert caught.value.location == "tag"
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(extra={"timeout": -1}))
    assert caught.value.location == "timeout"
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(extra={"priority": 1000}))
    assert caught.value.location == "priority"
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(content=HELLO + "\x00", schema={"type": "object"}))
    assert (caught.value.location, caught.value.message) == (
        "content",
        "content contains a NUL character",
    )
    with pytest.raises(InvalidRequest) as caught:
        await save(pg_pool, new(summary="a\x00b"))
    assert caught.value.location == "summary"
    with pytest.raises(InvalidRequest, match="cannot be stored"):
        await save(pg_pool, new(schema={"type": "object", "description": "a\x00b"}))
    with pytest.raises(PayloadTooLarge) as big:
        async with pg_pool.acquire() as conn:
            await scripts.create_script(
                conn, WS, new(), created_by="admin", limits=QueueLimits(max_code_bytes=10)
            )
    assert big.value.location == "content"


async def test_list_shows_the_latest_version_per_path(pg_pool: asyncpg.Pool) -> None:
    await save(pg_pool, new("u/admin/a"))
    a2 = await save(pg_pool, new("u/admin/a", HELLO + "# v2\n"))
    b = await save(pg_pool, new("u/bob/b"), by="bob")
    c = await save(pg_pool, new("f/ops/c"))
    listed = await scripts.list_scripts(pg_pool, WS)
    assert [s.hash for s in listed] == [c, b, a2]  # newest first
    oldest_first = await scripts.list_scripts(pg_pool, WS, newest_first=False)
    assert [s.hash for s in oldest_first] == [a2, b, c]

    async def hashes(**filters: Any) -> list[str]:
        found = await scripts.list_scripts(pg_pool, WS, ScriptFilter(**filters))
        return [s.hash for s in found]

    assert await hashes(path_start="u/") == [b, a2]
    assert await hashes(path_start="u/admin_") == []  # "_" is not a wildcard
    assert await hashes(path_exact="f/ops/c") == [c]
    assert await hashes(created_by="bob") == [b]
    assert await hashes(kinds=("script",)) == [c, b, a2]
    assert await hashes(kinds=("failure",)) == []
    assert await hashes(is_template=True) == []
    first_page = await scripts.list_scripts(pg_pool, WS, page=1, per_page=2)
    second_page = await scripts.list_scripts(pg_pool, WS, page=2, per_page=2)
    assert [s.hash for s in first_page + second_page] == [c, b, a2]
    assert await scripts.list_scripts(pg_pool, "other") == []
    assert await scripts.list_paths(pg_pool, WS) == ["f/ops/c", "u/admin/a", "u/bob/b"]
    with pytest.raises(InvalidRequest):
        await scripts.list_scripts(pg_pool, WS, page=0)


async def test_archive_by_path_and_by_hash(pg_pool: asyncpg.Pool) -> None:
    v1 = await save(pg_pool, new())
    v2 = await save(pg_pool, new(content=HELLO + "# v2\n"))
    other = await save(pg_pool, new("u/admin/other"))
    assert sorted(await scripts.archive_path(pg_pool, WS, "u/admin/hello")) == sorted([v1, v2])
    # Hidden from listings and from running by path; still readable and runnable by hash.
    listed = await scripts.list_scripts(pg_pool, WS)
    assert [s.hash for s in listed] == [other]
    archived = await scripts.list_scripts(pg_pool, WS, ScriptFilter(show_archived=True))
    assert [s.hash for s in archived] == [v2]
    latest = await scripts.get_by_path(pg_pool, WS, "u/admin/hello")
    assert (latest.hash, latest.archived) == (v2, True)
    assert await scripts.exists_path(pg_pool, WS, "u/admin/hello")
    with pytest.raises(NotFound, match="archived"):
        await scripts.runnable_by_path(pg_pool, WS, "u/admin/hello")
    assert (await scripts.runnable_by_hash(pg_pool, WS, v1)).hash == v1
    # A new save brings the path back.
    v3 = await save(pg_pool, new(content=HELLO + "# v3\n", parent_hash=v2))
    assert (await scripts.runnable_by_path(pg_pool, WS, "u/admin/hello")).hash == v3
    # Archiving one version: running by path falls back to the latest live one.
    archived_v3 = await scripts.archive_hash(pg_pool, WS, v3)
    assert archived_v3.archived
    with pytest.raises(NotFound):
        await scripts.runnable_by_path(pg_pool, WS, "u/admin/hello")
    with pytest.raises(NotFound):
        await scripts.archive_path(pg_pool, WS, "u/admin/none")
    with pytest.raises(NotFound):
        await scripts.archive_hash(pg_pool, WS, "0123456789abcdef")


async def test_delete_by_hash_erases_the_version_but_keeps_it(pg_pool: asyncpg.Pool) -> None:
    v1 = await save(pg_pool, new())
    v2 = await save(pg_pool, new(content=HELLO + "# v2\n"))
    deleted = await scripts.delete_hash(pg_pool, WS, v2)
    assert (deleted.deleted, deleted.content, deleted.hash) == (True, "", v2)
    # The path now shows the previous version; the deleted one is still known.
    assert (await scripts.get_by_path(pg_pool, WS, "u/admin/hello")).hash == v1
    assert (await scripts.get_by_hash(pg_pool, WS, v2)).deleted
    with pytest.raises(NotFound, match="was deleted"):
        await scripts.runnable_by_hash(pg_pool, WS, v2)
    # Saving the deleted content again on the same parent makes a new version.
    again = await save(pg_pool, new(content=HELLO + "# v2\n", parent_hash=v1))
    assert again not in (v1, v2)
    assert (await scripts.get_by_path(pg_pool, WS, "u/admin/hello")).hash == again


async def test_delete_by_path_removes_every_version(pg_pool: asyncpg.Pool) -> None:
    v1 = await save(pg_pool, new())
    v2 = await save(pg_pool, new(content=HELLO + "# v2\n"))
    keep = await save(pg_pool, new("u/admin/keep"))
    assert sorted(await scripts.delete_path(pg_pool, WS, "u/admin/hello")) == sorted([v1, v2])
    assert not await scripts.exists_path(pg_pool, WS, "u/admin/hello")
    for what in (v1, v2):
        with pytest.raises(NotFound, match=what):
            await scripts.get_by_hash(pg_pool, WS, what)
    with pytest.raises(NotFound, match="'u/admin/hello' not found"):
        await scripts.get_by_path(pg_pool, WS, "u/admin/hello")
    with pytest.raises(NotFound):
        await scripts.delete_path(pg_pool, WS, "u/admin/hello")
    assert (await scripts.get_by_path(pg_pool, WS, "u/admin/keep")).hash == keep
    # The path can be used again from scratch.
    assert await save(pg_pool, new()) == v1


async def test_workspaces_do_not_see_each_other(pg_pool: asyncpg.Pool) -> None:
    digest = await save(pg_pool, new())
    with pytest.raises(NotFound):
        await scripts.get_by_hash(pg_pool, "other", digest)
    with pytest.raises(NotFound):
        await scripts.get_by_path(pg_pool, "other", "u/admin/hello")
    assert not await scripts.exists_path(pg_pool, "other", "u/admin/hello")


async def test_settings_and_lock_are_kept(pg_pool: asyncpg.Pool) -> None:
    digest = await save(
        pg_pool,
        new(lock="requests==2.32.3", tag="heavy", extra={"timeout": 30, "priority": 5}),
    )
    script = await scripts.get_by_hash(pg_pool, WS, digest)
    assert (script.lock, script.tag, script.timeout_s, script.priority) == (
        "requests==2.32.3",
        "heavy",
        30.0,
        5,
    )
    assert msgspec.json.decode(msgspec.json.encode(script.extra)) == {"timeout": 30, "priority": 5}
