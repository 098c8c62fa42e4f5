"""Who am I, and my API tokens (Windmill's ``/users/...`` paths).

Tokens are random secrets shown once, at creation, and stored as SHA-256 digests
(:mod:`gristmill.common.tokens`); listing shows only their first characters. A new
token never gets more than the one that created it: the same workspace limit, the
same job binding, an expiration no later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, PathParameter, QueryParameter

from gristmill.common.db.queries import load_queries
from gristmill.common.errors import InvalidRequest, NotFound
from gristmill.common.tokens import TokenInfo, create_token
from gristmill.gateway.auth import check_workspace, forget_prefix, forget_token
from gristmill.gateway.context import GatewayContext

__all__ = [
    "MAX_PER_PAGE",
    "ROUTES",
    "GlobalUserInfo",
    "NewToken",
    "TruncatedToken",
    "User",
]

_Q = load_queries("users.sql")
_AuthRequest = Request[TokenInfo, str, Any]
MAX_PER_PAGE = 1000
_Workspace = Annotated[str, PathParameter(description="the workspace id")]


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


class GlobalUserInfo(msgspec.Struct, kw_only=True):
    """The token's user across workspaces (Windmill's ``GlobalUserInfo``)."""

    email: str
    username: str
    login_type: str = "password"
    super_admin: bool
    devops: bool = False
    verified: bool = True
    name: str | None = None
    company: str | None = None
    operator_only: bool = False
    is_admin: bool
    is_super_admin: bool
    #: The workspace the token is limited to (``None``: every workspace).
    workspace: str | None


class User(msgspec.Struct, kw_only=True):
    """The token's user in one workspace (Windmill's ``User``)."""

    email: str
    username: str
    is_admin: bool
    is_super_admin: bool
    name: str | None = None
    created_at: datetime
    operator: bool = False
    disabled: bool = False
    groups: list[str] = msgspec.field(default_factory=list)
    folders: list[str] = msgspec.field(default_factory=list)
    folders_owners: list[str] = msgspec.field(default_factory=list)


class NewToken(msgspec.Struct, kw_only=True):
    """A token to create (Windmill's ``NewToken``)."""

    label: str | None = None
    #: When it stops working; none: it does not expire (unless its creator does).
    expiration: datetime | None = None
    #: Scoped tokens are not supported yet: only an empty list or none is accepted.
    scopes: list[str] | None = None
    #: Limit the token to this workspace.
    workspace_id: str | None = None


class TruncatedToken(msgspec.Struct, kw_only=True):
    """A token without its secret (Windmill's ``TruncatedToken``)."""

    token_prefix: str
    label: str | None
    expiration: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    scopes: list[str] | None = None
    email: str
    workspace_id: str | None
    #: The job a job-scoped (ephemeral) token belongs to.
    job_id: str | None


async def _user_row(context: GatewayContext, user_id: str) -> Any:
    row = await context.pool.fetchrow(_Q["user_get"], user_id)
    if row is None:
        raise NotFound(f"user {user_id!r} no longer exists", location="token")
    return row


@get("/api/users/whoami", summary="The token's user", tags=["user"])
async def global_whoami(request: _AuthRequest, state: State) -> GlobalUserInfo:
    info = request.user
    row = await _user_row(_ctx(state), info.user_id)
    return GlobalUserInfo(
        email=row["email"],
        username=info.user_id,
        super_admin=info.is_admin,
        is_admin=info.is_admin,
        is_super_admin=info.is_admin,
        workspace=info.workspace,
    )


@get(
    "/api/w/{workspace:str}/users/whoami", summary="The token's user in a workspace", tags=["user"]
)
async def workspace_whoami(workspace: _Workspace, request: _AuthRequest, state: State) -> User:
    info = request.user
    check_workspace(info, workspace)
    context = _ctx(state)
    if not await context.pool.fetchval(_Q["workspace_exists"], workspace):
        raise NotFound(f"workspace {workspace!r} not found", location="workspace")
    row = await _user_row(context, info.user_id)
    return User(
        email=row["email"],
        username=info.user_id,
        is_admin=info.is_admin,
        is_super_admin=info.is_admin,
        created_at=row["created_at"],
    )


def _expiration(requested: datetime | None, creator: TokenInfo) -> datetime | None:
    expires = requested
    if expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            raise InvalidRequest("expiration is in the past", location="expiration")
    if creator.expires_at is not None and (expires is None or expires > creator.expires_at):
        # Never outlive the token that made it.
        expires = creator.expires_at
    return expires


@post(
    "/api/users/tokens/create",
    summary="Create an API token (answered once, in clear)",
    media_type="text/plain",
    status_code=201,
    tags=["user"],
)
async def create_api_token(data: JSONBody[NewToken], request: _AuthRequest, state: State) -> str:
    """The new token as text. It is stored hashed: keep it, it cannot be shown again."""
    creator = request.user
    context = _ctx(state)
    if data.scopes:
        raise InvalidRequest(
            "scoped tokens are not supported yet: omit scopes (the token gets your access)",
            location="scopes",
        )
    workspace = data.workspace_id
    if creator.workspace is not None:
        if workspace is not None and workspace != creator.workspace:
            raise PermissionDeniedException(
                f"this token is limited to workspace {creator.workspace!r}; it cannot create "
                f"a token for {workspace!r}"
            )
        workspace = creator.workspace
    elif workspace is not None and not await context.pool.fetchval(
        _Q["workspace_exists"], workspace
    ):
        raise NotFound(f"workspace {workspace!r} not found", location="workspace_id")
    return await create_token(
        context.pool,
        user_id=creator.user_id,
        label=data.label,
        workspace=workspace,
        job_id=creator.job_id,
        expires_at=_expiration(data.expiration, creator),
    )


@get("/api/users/tokens/list", summary="List my API tokens (without secrets)", tags=["user"])
async def list_tokens(
    request: _AuthRequest,
    state: State,
    exclude_ephemeral: Annotated[
        bool, QueryParameter(description="leave out job-scoped tokens")
    ] = False,
    page: Annotated[int, QueryParameter(description="page to return, from 1")] = 1,
    per_page: Annotated[int, QueryParameter(description="tokens per page (default 30)")] = 30,
) -> list[TruncatedToken]:
    info = request.user
    context = _ctx(state)
    row = await _user_row(context, info.user_id)
    limit = min(max(per_page, 1), MAX_PER_PAGE)
    rows = await context.pool.fetch(
        _Q["tokens_list"], info.user_id, exclude_ephemeral, limit, (max(page, 1) - 1) * limit
    )
    return [
        TruncatedToken(
            token_prefix=token["prefix"],
            label=token["label"],
            expiration=token["expires_at"],
            created_at=token["created_at"],
            last_used_at=token["last_used_at"],
            email=row["email"],
            workspace_id=token["workspace_id"],
            job_id=str(token["job_id"]) if token["job_id"] is not None else None,
        )
        for token in rows
    ]


@delete(
    "/api/users/tokens/delete/{token_prefix:str}",
    summary="Delete one of my API tokens",
    media_type="text/plain",
    status_code=200,
    tags=["user"],
)
async def delete_token(
    token_prefix: Annotated[str, PathParameter(description="the token's prefix, as listed")],
    request: _AuthRequest,
    state: State,
) -> str:
    """Deletes the token(s) of the caller starting with ``token_prefix`` (as listed)."""
    deleted = await _ctx(state).pool.fetch(_Q["tokens_delete"], request.user.user_id, token_prefix)
    if not deleted:
        raise NotFound(
            f"no token of yours has the prefix {token_prefix!r}", location="token_prefix"
        )
    forget_prefix(token_prefix)
    if request.auth.startswith(token_prefix):
        # Deleting the token in use: stop it at once in this process (other gateway
        # replicas notice within their short lookup cache).
        forget_token(request.auth)
    return f"deleted token {token_prefix}"


ROUTES = [global_whoami, workspace_whoami, create_api_token, list_tokens, delete_token]
