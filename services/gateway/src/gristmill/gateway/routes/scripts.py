"""The script registry over HTTP: Windmill's ``/api/w/{workspace}/scripts/...`` paths.

Saving answers the new version's hash (text, 201); reads answer Windmill's
``Script`` object. Paths contain slashes and are taken whole from the URL
(``/scripts/get/p/u/alice/hello``). Deleting needs an admin token, as in Windmill.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from gristmill.common import scripts
from gristmill.common.errors import Forbidden
from gristmill.common.scripts import NewScript, Script, ScriptFilter
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext

__all__ = [
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "ROUTES",
    "NewScriptBody",
    "ScriptView",
    "script_view",
]

DEFAULT_PER_PAGE: Final = 30
#: Largest page ``/scripts/list`` answers (larger ``per_page`` values are capped).
MAX_PER_PAGE: Final = 1000
_AuthRequest = Request[TokenInfo, str, Any]
_json = msgspec.json.Encoder()
#: Settings of Windmill's ``NewScript`` kept with the version and shown back as sent.
_SETTINGS: Final = (
    "draft_only",
    "envs",
    "concurrent_limit",
    "concurrency_time_window_s",
    "concurrency_key",
    "cache_ttl",
    "dedicated_worker",
    "ws_error_handler_muted",
    "priority",
    "restart_unless_cancelled",
    "timeout",
    "delete_after_use",
    "deployment_message",
    "visible_to_runner_only",
    "no_main_func",
    "codebase",
    "has_preprocessor",
    "on_behalf_of_email",
    "sandbox",
)


class NewScriptBody(msgspec.Struct, kw_only=True):
    """Windmill's ``NewScript``. Without ``schema``, it is read from the code."""

    path: str
    content: str
    language: str
    summary: str = ""
    description: str = ""
    parent_hash: str | None = None
    schema: dict[str, Any] | None = None
    #: A lockfile; older clients send it as a list of lines.
    lock: str | list[str] | None = None
    tag: str | None = None
    kind: str = "script"
    is_template: bool = False
    draft_only: bool | None = None
    envs: list[str] | None = None
    concurrent_limit: int | None = None
    concurrency_time_window_s: int | None = None
    concurrency_key: str | None = None
    cache_ttl: float | None = None
    dedicated_worker: bool | None = None
    ws_error_handler_muted: bool | None = None
    #: Priority of the script's jobs (0..100, higher first).
    priority: int | None = None
    restart_unless_cancelled: bool | None = None
    #: Timeout of the script's jobs, in seconds.
    timeout: int | None = None
    delete_after_use: bool | None = None
    deployment_message: str | None = None
    visible_to_runner_only: bool | None = None
    no_main_func: bool | None = None
    codebase: str | None = None
    has_preprocessor: bool | None = None
    on_behalf_of_email: str | None = None
    #: Gristmill: tighter sandbox settings for this script's jobs (``network``:
    #: ``none``/``host``, ``memory_mb``, ``cpu_s``, ``processes``, ``open_files``,
    #: ``file_size_mb``, ``tmp_mb``, ``address_space_mb``), within the worker group's.
    sandbox: dict[str, Any] | None = None

    def to_new_script(self) -> NewScript:
        lock = "\n".join(self.lock) if isinstance(self.lock, list) else self.lock
        extra = {name: getattr(self, name) for name in _SETTINGS}
        return NewScript(
            path=self.path,
            content=self.content,
            language=self.language,
            summary=self.summary,
            description=self.description,
            parent_hash=self.parent_hash or None,
            schema=self.schema,
            lock=lock or None,
            tag=self.tag or None,
            kind=self.kind,
            is_template=self.is_template,
            extra={name: value for name, value in extra.items() if value is not None},
        )


class ScriptView(msgspec.Struct, kw_only=True):
    """Windmill's ``Script``."""

    workspace_id: str
    hash: str
    path: str
    #: Direct parent first.
    parent_hashes: list[str]
    summary: str
    description: str
    content: str
    created_by: str
    created_at: datetime
    archived: bool
    schema: dict[str, Any] | None
    deleted: bool
    is_template: bool
    extra_perms: dict[str, bool]
    lock: str | None
    lock_error_logs: str | None
    language: str
    kind: str
    starred: bool
    tag: str | None
    has_draft: bool
    draft_only: bool | None
    envs: list[str] | None
    concurrent_limit: int | None
    concurrency_time_window_s: int | None
    concurrency_key: str | None
    cache_ttl: float | None
    dedicated_worker: bool | None
    ws_error_handler_muted: bool | None
    priority: int | None
    restart_unless_cancelled: bool | None
    timeout: int | None
    delete_after_use: bool | None
    visible_to_runner_only: bool | None
    no_main_func: bool
    codebase: str | None
    has_preprocessor: bool
    on_behalf_of_email: str | None
    deployment_message: str | None
    sandbox: dict[str, Any] | None = None


def script_view(script: Script) -> ScriptView:
    extra = script.extra
    return ScriptView(
        workspace_id=script.workspace,
        hash=script.hash,
        path=script.path,
        parent_hashes=script.parent_hashes,
        summary=script.summary,
        description=script.description,
        content=script.content,
        created_by=script.created_by,
        created_at=script.created_at,
        archived=script.archived,
        schema=script.schema,
        deleted=script.deleted,
        is_template=script.is_template,
        extra_perms={},
        lock=script.lock,
        lock_error_logs=script.lock_error,
        language=script.language,
        kind=script.kind,
        starred=False,
        tag=script.tag,
        has_draft=False,
        draft_only=extra.get("draft_only"),
        envs=extra.get("envs"),
        concurrent_limit=extra.get("concurrent_limit"),
        concurrency_time_window_s=extra.get("concurrency_time_window_s"),
        concurrency_key=extra.get("concurrency_key"),
        cache_ttl=extra.get("cache_ttl"),
        dedicated_worker=extra.get("dedicated_worker"),
        ws_error_handler_muted=extra.get("ws_error_handler_muted"),
        priority=extra.get("priority"),
        restart_unless_cancelled=extra.get("restart_unless_cancelled"),
        timeout=extra.get("timeout"),
        delete_after_use=extra.get("delete_after_use"),
        visible_to_runner_only=extra.get("visible_to_runner_only"),
        no_main_func=bool(extra.get("no_main_func", False)),
        codebase=extra.get("codebase"),
        has_preprocessor=bool(extra.get("has_preprocessor", False)),
        on_behalf_of_email=extra.get("on_behalf_of_email"),
        deployment_message=extra.get("deployment_message"),
        sandbox=extra.get("sandbox"),
    )


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


def _require_admin(info: TokenInfo, what: str) -> None:
    if not info.is_admin:
        raise Forbidden(f"{what} needs an admin token")


# -- writes --------------------------------------------------------------------------------


@post(
    "/api/w/{workspace:str}/scripts/create",
    status_code=201,
    media_type="text/plain",
    summary="Save a new version of a script",
    tags=["script"],
)
async def create_script(
    workspace: str, data: NewScriptBody, request: _AuthRequest, state: State
) -> str:
    """Answers the version's hash. Saving what the latest version holds writes nothing.

    ``parent_hash`` must be the latest version's hash (409 names the latest
    otherwise), or be left out to go on top of whatever is latest.
    """
    check_workspace(request.user, workspace)
    context = _ctx(state)
    async with context.pool.acquire() as conn:
        saved = await scripts.create_script(
            conn,
            workspace,
            data.to_new_script(),
            created_by=request.user.user_id,
            limits=context.limits,
            queue=context.queue,
        )
    return saved.hash


@post(
    "/api/w/{workspace:str}/scripts/archive/p/{path:path}",
    status_code=200,
    media_type="text/plain",
    summary="Archive a script (every version at the path)",
    tags=["script"],
)
async def archive_by_path(workspace: str, path: str, request: _AuthRequest, state: State) -> str:
    """Archived scripts leave listings and no longer run by path; by hash they still do."""
    check_workspace(request.user, workspace)
    clean = scripts.validate_path(path)
    await scripts.archive_path(_ctx(state).pool, workspace, clean)
    return clean


@post(
    "/api/w/{workspace:str}/scripts/archive/h/{hash:str}",
    status_code=200,
    summary="Archive one version of a script",
    tags=["script"],
)
async def archive_by_hash(
    workspace: str, hash: str, request: _AuthRequest, state: State
) -> ScriptView:
    check_workspace(request.user, workspace)
    return script_view(await scripts.archive_hash(_ctx(state).pool, workspace, hash))


@post(
    "/api/w/{workspace:str}/scripts/delete/p/{path:path}",
    status_code=200,
    summary="Delete a script: every version at the path (admin)",
    tags=["script"],
)
async def delete_by_path(
    workspace: str, path: str, request: _AuthRequest, state: State
) -> Response[bytes]:
    """Answers the path, as a JSON string."""
    check_workspace(request.user, workspace)
    _require_admin(request.user, "deleting a script")
    clean = scripts.validate_path(path)
    await scripts.delete_path(_ctx(state).pool, workspace, clean)
    return Response(_json.encode(clean), media_type="application/json")


@post(
    "/api/w/{workspace:str}/scripts/delete/h/{hash:str}",
    status_code=200,
    summary="Delete one version of a script: its content is erased, its hash kept (admin)",
    tags=["script"],
)
async def delete_by_hash(
    workspace: str, hash: str, request: _AuthRequest, state: State
) -> ScriptView:
    check_workspace(request.user, workspace)
    _require_admin(request.user, "deleting a script version")
    return script_view(await scripts.delete_hash(_ctx(state).pool, workspace, hash))


# -- reads ---------------------------------------------------------------------------------


@get(
    "/api/w/{workspace:str}/scripts/get/p/{path:path}",
    summary="Get the latest version of a script",
    tags=["script"],
)
async def get_by_path(workspace: str, path: str, request: _AuthRequest, state: State) -> ScriptView:
    """The latest version that was not deleted (``archived`` tells whether it is archived)."""
    check_workspace(request.user, workspace)
    return script_view(await scripts.get_by_path(_ctx(state).pool, workspace, path))


@get(
    "/api/w/{workspace:str}/scripts/get/h/{hash:str}",
    summary="Get one version of a script",
    tags=["script"],
)
async def get_by_hash(workspace: str, hash: str, request: _AuthRequest, state: State) -> ScriptView:
    check_workspace(request.user, workspace)
    return script_view(await scripts.get_by_hash(_ctx(state).pool, workspace, hash))


@get(
    "/api/w/{workspace:str}/scripts/raw/p/{path:path}",
    media_type="text/plain",
    summary="The code of the latest version of a script",
    tags=["script"],
)
async def raw_by_path(workspace: str, path: str, request: _AuthRequest, state: State) -> str:
    check_workspace(request.user, workspace)
    return (await scripts.get_by_path(_ctx(state).pool, workspace, path)).content


@get(
    "/api/w/{workspace:str}/scripts/exists/p/{path:path}",
    summary="Whether a script exists at a path",
    tags=["script"],
)
async def exists_by_path(workspace: str, path: str, request: _AuthRequest, state: State) -> bool:
    check_workspace(request.user, workspace)
    return await scripts.exists_path(_ctx(state).pool, workspace, path)


@get(
    "/api/w/{workspace:str}/scripts/list_paths",
    summary="The paths of every script",
    tags=["script"],
)
async def list_paths(workspace: str, request: _AuthRequest, state: State) -> list[str]:
    check_workspace(request.user, workspace)
    return await scripts.list_paths(_ctx(state).pool, workspace)


@get(
    "/api/w/{workspace:str}/scripts/list",
    summary="List scripts (the latest version of each path)",
    tags=["script"],
)
async def list_scripts(
    workspace: str,
    request: _AuthRequest,
    state: State,
    page: Annotated[int, Parameter(ge=1, description="page to return, from 1")] = 1,
    per_page: Annotated[
        int, Parameter(ge=1, description=f"items per page (at most {MAX_PER_PAGE})")
    ] = DEFAULT_PER_PAGE,
    order_desc: Annotated[bool, Parameter(description="newest first")] = True,
    created_by: Annotated[str | None, Parameter(description="exact creator")] = None,
    path_start: Annotated[str | None, Parameter(description="path prefix")] = None,
    path_exact: Annotated[str | None, Parameter(description="exact path")] = None,
    first_parent_hash: Annotated[str | None, Parameter(description="direct parent")] = None,
    show_archived: Annotated[
        bool, Parameter(description="archived scripts instead of live ones")
    ] = False,
    kinds: Annotated[str | None, Parameter(description="comma-separated script kinds")] = None,
    is_template: Annotated[
        bool | None, Parameter(description="templates only (true) or none (false)")
    ] = None,
) -> list[ScriptView]:
    """Ordered by the latest version's creation time."""
    check_workspace(request.user, workspace)
    filters = ScriptFilter(
        path_start=path_start or None,
        path_exact=path_exact or None,
        created_by=created_by or None,
        show_archived=show_archived,
        kinds=tuple(kind.strip() for kind in kinds.split(",") if kind.strip()) if kinds else None,
        first_parent_hash=first_parent_hash or None,
        is_template=is_template,
    )
    found = await scripts.list_scripts(
        _ctx(state).pool,
        workspace,
        filters,
        page=page,
        per_page=min(per_page, MAX_PER_PAGE),
        newest_first=order_desc,
    )
    return [script_view(script) for script in found]


ROUTES = [
    create_script,
    archive_by_path,
    archive_by_hash,
    delete_by_path,
    delete_by_hash,
    get_by_path,
    get_by_hash,
    raw_by_path,
    exists_by_path,
    list_paths,
    list_scripts,
]
