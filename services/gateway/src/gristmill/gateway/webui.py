"""The web UI: a single-page app built from ``services/gateway/ui`` into ``static/ui``.

``/`` and every client route (``/runs``, ``/runs/<job id>``, ...) answer the app's
``index.html``; ``/assets/...`` answer the built files (content-hashed names, cached
for good). None of them needs a token: client routes never reach the auth
middleware (they are 404s of the router, answered by :func:`spa_fallback`). The API
stays under ``/api``: its unknown paths still answer JSON 404s.

The build is not part of the Python package (``scripts/build-ui`` makes it, and
``scripts/up`` runs that); without it ``/`` answers a page saying how to build it and
the API works as usual.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from litestar import MediaType, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.response import File

__all__ = ["UI_DIR", "spa_fallback", "ui_routes"]

#: Where ``scripts/build-ui`` puts the built app.
UI_DIR: Final = Path(__file__).parent / "static" / "ui"
_NO_CACHE: Final = {"Cache-Control": "no-cache"}
_IMMUTABLE: Final = {"Cache-Control": "public, max-age=31536000, immutable"}
_NOT_BUILT: Final = """<!doctype html>
<html><head><meta charset="utf-8"><title>Gristmill</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Gristmill</h1>
<p>The web UI is not built. <code>scripts/up</code> builds it when Node.js and npm
are installed; or run <code>npm ci &amp;&amp; npm run build</code> in
<code>services/gateway/ui</code>.</p>
<p>The HTTP API works without it: <a href="/api/openapi">/api/openapi</a>.</p>
</body></html>
"""

_ExceptionHandler = Callable[[Request[Any, Any, Any], Exception], Response[Any]]


def _index(directory: Path) -> Response[Any]:
    index = directory / "index.html"
    if not index.is_file():
        return Response(_NOT_BUILT, media_type=MediaType.HTML, headers=_NO_CACHE)
    return File(
        index, media_type=MediaType.HTML, content_disposition_type="inline", headers=_NO_CACHE
    )


def _file(path: Path, headers: dict[str, str]) -> File:
    media_type, _ = mimetypes.guess_type(path.name)
    return File(
        path,
        media_type=media_type or "application/octet-stream",
        content_disposition_type="inline",
        headers=headers,
    )


def _inside(directory: Path, name: str) -> Path | None:
    """``directory/name`` if that is a file inside ``directory`` (no ``..`` escapes)."""
    root = directory.resolve()
    candidate = (root / name).resolve()
    if candidate.is_relative_to(root) and candidate.is_file():
        return candidate
    return None


def ui_routes(directory: Path = UI_DIR) -> list[HTTPRouteHandler]:
    """The handlers of ``/`` and ``/assets/...``."""

    # The app's files need no token: it signs in through the API.
    @get("/", include_in_schema=False, name="ui-index", exclude_from_auth=True)
    async def index() -> Response[Any]:
        return _index(directory)

    @get("/assets/{name:path}", include_in_schema=False, name="ui-assets", exclude_from_auth=True)
    async def asset(name: str) -> File:
        found = _inside(directory / "assets", name.lstrip("/"))
        if found is None:
            raise NotFoundException(f"no asset {name!r}")
        return _file(found, _IMMUTABLE)

    return [index, asset]


def spa_fallback(api_handler: _ExceptionHandler, directory: Path = UI_DIR) -> _ExceptionHandler:
    """A 404 handler: a page of the app (``index.html``) for browser GETs outside
    ``/api``, ``api_handler``'s answer otherwise."""

    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        path = request.url.path
        if (
            request.method == "GET"
            and not path.startswith(("/api/", "/assets/"))
            and path != "/api"
        ):
            top_file = _inside(directory, path.lstrip("/")) if path.count("/") == 1 else None
            if top_file is not None:  # favicon and the like, beside index.html
                return _file(top_file, _NO_CACHE)
            return _index(directory)
        return api_handler(request, exc)

    return handler
