"""Named SQL queries kept in ``sql/*.sql`` files.

A file holds blocks introduced by ``-- name: <query_name>``; the text up to the next
such line is the query.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["load_queries"]

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def load_queries(filename: str) -> dict[str, str]:
    text = resources.files("gristmill.common.db").joinpath("sql", filename).read_text("utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise RuntimeError(f"{filename}: query {name!r} defined twice")
        queries[name] = body.strip()
    return queries
