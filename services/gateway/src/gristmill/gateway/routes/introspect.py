"""Read a script's input schema from its code without saving it.

The web editor calls this as the author types, to preview the generated form. The
code is parsed, never run (:mod:`gristmill.common.introspection`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import post
from litestar.params import JSONBody

from gristmill.common.scripts import infer_schema

__all__ = ["ROUTES", "ParseRequest", "ParsedSchema"]


class ParseRequest(msgspec.Struct, kw_only=True):
    """The code to read and its language (``python3``, ``bun``, ``go``, ...)."""

    language: str
    content: str


class ParsedSchema(msgspec.Struct, kw_only=True):
    """The JSON Schema of the script's inputs, as a save would store it."""

    schema: dict[str, Any]


@post(
    "/api/scripts/parse_schema",
    status_code=200,
    summary="Read a script's input schema from its code (nothing is saved)",
    tags=["script"],
)
async def parse_schema(data: JSONBody[ParseRequest]) -> ParsedSchema:
    """400 with the problem and, when known, its ``location`` (line, column)."""
    return ParsedSchema(schema=infer_schema(data.language, data.content))


ROUTES = [parse_schema]
