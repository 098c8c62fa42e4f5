"""The script registry: saved scripts, one immutable row per version.

A script lives at a path in its workspace's namespace (``u/<user>/<name>`` or
``f/<folder>/<name>``). Every save writes a new *version* whose id is a hash of the
workspace, the path, the parent version and everything the version holds (code,
language, input schema, lock, tag, summary, settings), shown as 16 hex digits like
Windmill's. Versions form a linear chain: a save names the latest version as its
parent (or names none, and goes on top of whatever is latest); naming an older one
is a conflict, so two editors cannot silently overwrite each other.

Saving what the latest version already holds writes nothing and answers the latest
hash, so a retried save is harmless. Archiving hides a path (or one version) from
listings and from running by path; a version stays runnable by its hash. Deleting a
path removes every version; deleting one version erases its content but keeps the
row, so that the chain and the jobs naming it stay readable.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Any, Final, TypeAlias

import asyncpg
import msgspec

from gristmill.common import result_cache
from gristmill.common.contracts.sandbox import META_KEY as SANDBOX_META_KEY
from gristmill.common.contracts.sandbox import decode_sandbox_request
from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from gristmill.common.introspection import (
    parse_bash,
    parse_go,
    parse_postgresql,
    parse_python,
    parse_typescript,
)
from gristmill.common.queue import (
    CONCURRENCY_WINDOW,
    NewJob,
    Queue,
    QueueLimits,
    concurrency_key,
    concurrency_window,
    validate_tag,
)

__all__ = [
    "DEPENDENCY_TAG",
    "MAX_PATH_LENGTH",
    "SCRIPT_KINDS",
    "SUPPORTED_LANGUAGES",
    "Executor",
    "NewScript",
    "SavedScript",
    "Script",
    "ScriptFilter",
    "archive_hash",
    "archive_path",
    "check_language",
    "create_script",
    "dedicated_flow_tag",
    "dedicated_tag",
    "delete_hash",
    "delete_path",
    "dependency_job",
    "exists_path",
    "get_by_hash",
    "get_by_path",
    "infer_schema",
    "job_limits",
    "list_paths",
    "list_scripts",
    "runnable_by_hash",
    "runnable_by_path",
    "set_lock",
    "validate_path",
    "version_hash",
]

#: Languages a worker can run today, by their wire label.
SUPPORTED_LANGUAGES: Final = frozenset(
    {"python3", "bash", "bun", "deno", "nativets", "go", "postgresql"}
)
#: Windmill's script kinds; only ``script`` means something to Gristmill today.
SCRIPT_KINDS: Final = frozenset(
    {"script", "failure", "trigger", "command", "approval", "preprocessor"}
)
MAX_PATH_LENGTH: Final = 255
#: Ancestors kept in ``parent_hashes`` (direct parent first).
_MAX_PARENTS: Final = 20
#: Attempts at a free hash when a version with the same hash already exists
#: (a deleted version saved again on the same parent, or a true collision).
_MAX_SALT: Final = 8
_HASH_FORMAT: Final = "gristmill-script-v1"
_PATH: Final = re.compile(r"^[uf]/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)+$")
_Q = load_queries("scripts.sql")
_canonical = msgspec.json.Encoder(order="sorted")
#: Where reads and single-statement writes run: a connection or the pool itself.
Executor: TypeAlias = "Conn | asyncpg.Pool"


class NewScript(msgspec.Struct, frozen=True, kw_only=True):
    """What a save asks for. ``schema`` ``None`` means: read it from the code."""

    path: str
    content: str
    language: str
    summary: str = ""
    description: str = ""
    parent_hash: str | None = None
    schema: dict[str, Any] | None = None
    lock: str | None = None
    tag: str | None = None
    kind: str = "script"
    is_template: bool = False
    #: Other settings, kept as sent (``timeout`` and ``priority`` apply to runs).
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class Script(msgspec.Struct, frozen=True, kw_only=True):
    """One saved version."""

    workspace: str
    hash: str
    path: str
    #: Direct parent first.
    parent_hashes: list[str]
    summary: str
    description: str
    content: str
    language: str
    kind: str
    schema: dict[str, Any] | None
    lock: str | None
    tag: str | None
    is_template: bool
    extra: dict[str, Any]
    archived: bool
    deleted: bool
    created_by: str
    created_at: datetime
    #: Why the version's dependencies could not be resolved (``None`` if they were, or
    #: while its dependency job has not run yet).
    lock_error: str | None = None

    @property
    def timeout_s(self) -> float | None:
        """The job timeout the script asks for (Windmill's ``timeout``, seconds)."""
        value = self.extra.get("timeout")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    @property
    def priority(self) -> int | None:
        value = self.extra.get("priority")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def job_tag(self) -> str:
        """The tag of this version's jobs: ``<workspace>:<path>`` when it was saved with
        Windmill's ``dedicated_worker`` (only workers dedicated to it claim them), else
        its own tag, else its language."""
        if self.extra.get("dedicated_worker") is True:
            return dedicated_tag(self.workspace, self.path)
        return self.tag or self.language


def job_limits(script: Script, args: dict[str, Any]) -> dict[str, Any]:
    """The concurrency limit, result cache and sandbox a saved script asks for, as
    ``NewJob`` fields (Windmill's ``concurrent_limit``, ``concurrency_key`` with
    ``$workspace`` and ``$args[name]``, ``concurrency_time_window_s`` and ``cache_ttl``
    settings; Gristmill's ``sandbox``, see ``contracts.sandbox``).

    The default concurrency key is the script's path; ``meta`` carries the time window
    (see ``Queue.claim``) and the cache key (see ``result_cache``).
    """
    fields: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    limit = script.extra.get("concurrent_limit")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        template = script.extra.get("concurrency_key")
        fields["concurrency_key"] = (
            concurrency_key(template, script.workspace, args)
            if isinstance(template, str) and template
            else f"{script.workspace}/script/{script.path}"
        )
        fields["concurrency_limit"] = limit
        window = concurrency_window(script.extra.get("concurrency_time_window_s"))
        if window is not None:
            meta[CONCURRENCY_WINDOW] = window
    sandbox = decode_sandbox_request(script.extra.get("sandbox"))
    if sandbox is not None:
        meta[SANDBOX_META_KEY] = msgspec.to_builtins(sandbox)
    ttl = result_cache.ttl_of(script.extra.get("cache_ttl"))
    if ttl is not None:
        key = result_cache.script_key(script.workspace, script.hash, args)
        meta.update(result_cache.cache_meta(key, ttl))
    if meta:
        fields["meta"] = meta
    return fields


class SavedScript(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a save: the version's hash; ``created`` false for a no-op save."""

    hash: str
    created: bool


class ScriptFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Filters of a listing (each ``None`` means: any)."""

    path_start: str | None = None
    path_exact: str | None = None
    created_by: str | None = None
    #: Archived paths instead of live ones.
    show_archived: bool = False
    kinds: tuple[str, ...] | None = None
    first_parent_hash: str | None = None
    is_template: bool | None = None


def _script(row: asyncpg.Record) -> Script:
    return Script(
        workspace=row["workspace_id"],
        hash=row["hash"],
        path=row["path"],
        parent_hashes=list(row["parent_hashes"]),
        summary=row["summary"],
        description=row["description"],
        content=row["content"],
        language=row["language"],
        kind=row["kind"],
        schema=row["schema"],
        lock=row["lock"],
        tag=row["tag"],
        is_template=row["is_template"],
        extra=row["extra"],
        archived=row["archived"],
        deleted=row["deleted"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        lock_error=row["lock_error"],
    )


# -- validation ----------------------------------------------------------------------


def dedicated_tag(workspace: str, path: str) -> str:
    """The tag of the jobs of a script run by dedicated workers (Windmill's convention)."""
    return f"{workspace}:{path}"


def dedicated_flow_tag(workspace: str, path: str) -> str:
    """The tag of the step jobs of a flow run by dedicated workers: Windmill's
    ``<workspace>:flow/<path>`` (a script path never starts with ``flow/``)."""
    return f"{workspace}:flow/{path}"


def validate_path(path: str, *, location: str = "path") -> str:
    """``path`` without a leading ``/``, if it is a valid script path."""
    path = path.strip("/")
    if len(path) > MAX_PATH_LENGTH or not _PATH.match(path):
        raise InvalidRequest(
            f"invalid script path {path!r}: expected u/<user>/<name> or f/<folder>/<name> "
            f"(parts of letters, digits, '_' or '-', separated by '/', at most "
            f"{MAX_PATH_LENGTH} characters)",
            location=location,
        )
    return path


def check_language(language: str, *, location: str = "language") -> str:
    if language not in SUPPORTED_LANGUAGES:
        raise InvalidRequest(
            f"unsupported language {language!r}; "
            f"supported: {', '.join(sorted(SUPPORTED_LANGUAGES))}",
            location=location,
        )
    return language


def _normal_hash(value: str) -> str:
    return value.strip().lower()


def infer_schema(language: str, content: str) -> dict[str, Any]:
    """The input schema read from the code (never run). Raises ``InvalidRequest``."""
    check_language(language)
    if language == "python3":
        return parse_python(content).schema
    if language == "bash":
        return parse_bash(content).schema
    if language == "go":
        return parse_go(content).schema
    if language == "postgresql":
        return parse_postgresql(content).schema
    return parse_typescript(content, language=language).schema


def _check_new(new: NewScript, limits: QueueLimits) -> dict[str, Any]:
    """Validate a save; return the schema to store."""
    check_language(new.language)
    if new.kind not in SCRIPT_KINDS:
        raise InvalidRequest(
            f"unknown script kind {new.kind!r}; expected one of {', '.join(sorted(SCRIPT_KINDS))}",
            location="kind",
        )
    for name in ("content", "summary", "description", "lock"):
        if "\x00" in (getattr(new, name) or ""):
            raise InvalidRequest(f"{name} contains a NUL character", location=name)
    if len(new.content.encode()) > limits.max_code_bytes:
        raise PayloadTooLarge(
            f"the script is over the limit of {limits.max_code_bytes} bytes", location="content"
        )
    if new.tag is not None:
        validate_tag(new.tag)
    timeout = new.extra.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise InvalidRequest(
            f"timeout must be a positive number of seconds, got {timeout!r}", location="timeout"
        )
    priority = new.extra.get("priority")
    if priority is not None and (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not 0 <= priority <= limits.max_priority
    ):
        raise InvalidRequest(
            f"priority must be an integer between 0 and {limits.max_priority}, got {priority!r}",
            location="priority",
        )
    decode_sandbox_request(new.extra.get("sandbox"))
    if new.schema is not None:
        try:
            infer_schema(new.language, new.content)
        except InvalidRequest as exc:
            # The client's schema stands, but code that does not even parse does not.
            if exc.location is not None and exc.location.startswith("line "):
                raise
        return new.schema
    return infer_schema(new.language, new.content)


def version_hash(
    workspace: str,
    path: str,
    parent: str | None,
    new: NewScript,
    schema: dict[str, Any] | None,
    *,
    salt: int = 0,
) -> str:
    """A version's id: 16 hex digits of a SHA-256 over everything the version holds."""
    material = _canonical.encode(
        [
            _HASH_FORMAT,
            workspace,
            path,
            parent,
            new.language,
            new.kind,
            new.content,
            new.summary,
            new.description,
            schema,
            new.lock,
            new.tag,
            new.is_template,
            new.extra,
            salt,
        ]
    )
    return hashlib.sha256(material).hexdigest()[:16]


# -- writes --------------------------------------------------------------------------------


async def create_script(
    conn: Conn,
    workspace: str,
    new: NewScript,
    *,
    created_by: str,
    limits: QueueLimits | None = None,
    queue: Queue | None = None,
) -> SavedScript:
    """Save a new version at ``new.path``.

    With ``queue``, a new Python version that brings no lockfile gets a dependency
    job, enqueued in the same transaction: it resolves the version's imports into a
    lockfile (or records why it could not) before most runs need it.

    Raises:
        InvalidRequest: bad path, language, kind, tag or settings; code that does not
            parse (``location`` is ``"line L, column C"``).
        Conflict: ``parent_hash`` is not the latest version (``data["latest"]`` is).
    """
    path = validate_path(new.path)
    schema = _check_new(new, limits or QueueLimits())
    parent_wanted = None if new.parent_hash is None else _normal_hash(new.parent_hash)
    async with conn.transaction():
        await conn.execute(_Q["lock_path"], workspace, path)
        head = await conn.fetchrow(_Q["head"], workspace, path)
        if head is None:
            if parent_wanted:
                raise Conflict(
                    f"parent_hash {parent_wanted} was given but there is no script at "
                    f"{path!r}; omit parent_hash to create it",
                    location="parent_hash",
                    latest=None,
                )
            parent: str | None = None
            ancestors: list[str] = []
            after: datetime | None = None
        else:
            head_hash: str = head["hash"]
            head_parents: list[str] = list(head["parent_hashes"])
            head_parent = head_parents[0] if head_parents else None
            same = version_hash(workspace, path, head_parent, new, schema) == head_hash
            if same and parent_wanted in (None, head_hash, head_parent):
                return SavedScript(hash=head_hash, created=False)  # nothing new to save
            if parent_wanted and parent_wanted != head_hash:
                raise Conflict(
                    f"parent_hash {parent_wanted} is not the latest version of {path!r}: "
                    f"the latest is {head_hash}; save on top of it (or omit parent_hash "
                    "to overwrite)",
                    location="parent_hash",
                    latest=head_hash,
                )
            parent = head_hash
            ancestors = [head_hash, *head_parents][:_MAX_PARENTS]
            after = head["created_at"]
        for salt in range(_MAX_SALT):
            candidate = version_hash(workspace, path, parent, new, schema, salt=salt)
            inserted = await _insert(
                conn,
                workspace,
                candidate,
                path,
                ancestors,
                new.summary,
                new.description,
                new.content,
                new.language,
                new.kind,
                schema,
                new.lock,
                new.tag,
                new.is_template,
                new.extra,
                created_by,
                after,
            )
            if inserted is not None:
                if queue is not None and new.language == "python3" and new.lock is None:
                    await queue.enqueue(
                        [dependency_job(workspace, path, inserted, new.content, created_by)],
                        conn=conn,
                    )
                return SavedScript(hash=inserted, created=True)
    raise Conflict(f"could not find a free version hash for {path!r}", location="path")


#: Tag of the jobs that resolve a script version's dependencies.
DEPENDENCY_TAG: Final = "dependency"


def dependency_job(workspace: str, path: str, hash_: str, content: str, created_by: str) -> NewJob:
    """The job that turns a Python version's imports into its lockfile."""
    return NewJob(
        id=uuid.uuid4(),
        workspace=workspace,
        kind="dependencies",
        tag=DEPENDENCY_TAG,
        created_by=created_by,
        trigger_kind="script",
        trigger_source=f"{path}@{hash_}",
        runnable_path=path,
        runnable_hash=hash_,
        language="python3",
        code=content,
    )


async def set_lock(
    conn: Executor, workspace: str, hash_: str, *, lock: str | None, error: str | None
) -> None:
    """Record a version's lockfile (``""`` when it needs no packages) or its failure."""
    await conn.execute(_Q["set_lock"], workspace, hash_, lock, error)


async def _insert(conn: Conn, *values: Any) -> str | None:
    try:
        inserted: str | None = await conn.fetchval(_Q["insert_version"], *values)
    except asyncpg.DataError as exc:  # e.g. "\u0000" inside the schema or the settings
        raise InvalidRequest(f"the script cannot be stored: {exc}") from None
    return inserted


async def archive_path(conn: Executor, workspace: str, path: str) -> list[str]:
    """Archive every version at ``path``; returns their hashes. Raises ``NotFound``."""
    path = validate_path(path)
    rows = await conn.fetch(_Q["archive_path"], workspace, path)
    if not rows:
        raise _no_path(workspace, path)
    return [row["hash"] for row in rows]


async def archive_hash(conn: Executor, workspace: str, hash_: str) -> Script:
    row = await conn.fetchrow(_Q["archive_hash"], workspace, _normal_hash(hash_))
    if row is None:
        raise _no_hash(workspace, hash_)
    return _script(row)


async def delete_path(conn: Executor, workspace: str, path: str) -> list[str]:
    """Delete every version at ``path``; returns their hashes. Raises ``NotFound``."""
    path = validate_path(path)
    rows = await conn.fetch(_Q["delete_path"], workspace, path)
    if not rows:
        raise _no_path(workspace, path)
    return [row["hash"] for row in rows]


async def delete_hash(conn: Executor, workspace: str, hash_: str) -> Script:
    """Erase one version's content (the row stays, flagged ``deleted``)."""
    row = await conn.fetchrow(_Q["delete_hash"], workspace, _normal_hash(hash_))
    if row is None:
        raise _no_hash(workspace, hash_)
    return _script(row)


# -- reads ---------------------------------------------------------------------------------


def _no_path(workspace: str, path: str) -> NotFound:
    return NotFound(f"script {path!r} not found in workspace {workspace!r}", location="path")


def _no_hash(workspace: str, hash_: str) -> NotFound:
    return NotFound(
        f"script version {hash_!r} not found in workspace {workspace!r}", location="hash"
    )


async def get_by_path(conn: Executor, workspace: str, path: str) -> Script:
    """The latest version at ``path`` that was not deleted (archived or not)."""
    path = validate_path(path)
    row = await conn.fetchrow(_Q["get_by_path"], workspace, path)
    if row is None:
        raise _no_path(workspace, path)
    return _script(row)


async def get_by_hash(conn: Executor, workspace: str, hash_: str) -> Script:
    """One version, deleted or not."""
    row = await conn.fetchrow(_Q["get_by_hash"], workspace, _normal_hash(hash_))
    if row is None:
        raise _no_hash(workspace, hash_)
    return _script(row)


async def runnable_by_path(conn: Executor, workspace: str, path: str) -> Script:
    """What running ``path`` runs: its latest version that is not archived."""
    path = validate_path(path)
    row = await conn.fetchrow(_Q["get_runnable_by_path"], workspace, path)
    if row is None:
        if await conn.fetchval(_Q["exists_path"], workspace, path):
            raise NotFound(
                f"script {path!r} is archived in workspace {workspace!r}; "
                "run a version by its hash, or save a new version",
                location="path",
            )
        raise _no_path(workspace, path)
    return _script(row)


async def runnable_by_hash(conn: Executor, workspace: str, hash_: str) -> Script:
    """One version to run: archived versions run, deleted ones are gone."""
    script = await get_by_hash(conn, workspace, hash_)
    if script.deleted:
        raise NotFound(f"script version {script.hash} ({script.path}) was deleted", location="hash")
    return script


async def exists_path(conn: Executor, workspace: str, path: str) -> bool:
    path = validate_path(path)
    exists: bool = await conn.fetchval(_Q["exists_path"], workspace, path)
    return exists


async def list_paths(conn: Executor, workspace: str) -> list[str]:
    return [row["path"] for row in await conn.fetch(_Q["list_paths"], workspace)]


async def list_scripts(
    conn: Executor,
    workspace: str,
    filters: ScriptFilter | None = None,
    *,
    page: int = 1,
    per_page: int = 30,
    newest_first: bool = True,
) -> list[Script]:
    """The latest version of each path passing ``filters``, a page at a time."""
    filters = filters or ScriptFilter()
    if page < 1:
        raise InvalidRequest(f"page starts at 1, got {page}", location="page")
    if per_page < 1:
        raise InvalidRequest(f"per_page must be at least 1, got {per_page}", location="per_page")
    rows = await conn.fetch(
        _Q["list_latest"],
        workspace,
        filters.show_archived,
        filters.path_start.lstrip("/") if filters.path_start else None,
        filters.path_exact.strip("/") if filters.path_exact else None,
        filters.created_by,
        list(filters.kinds) if filters.kinds else None,
        _normal_hash(filters.first_parent_hash) if filters.first_parent_hash else None,
        filters.is_template,
        newest_first,
        per_page,
        (page - 1) * per_page,
    )
    return [_script(row) for row in rows]
