"""Script introspection: a script's entry point, read into a JSON Schema for its inputs.

The source is parsed, never imported or executed. The schema follows JSON Schema
draft 2020-12 in the shape Windmill-style forms expect (``properties``, ``required``,
``order``; resource types as ``{"type": "object", "format": "resource-<name>"}``).
"""

from gristmill.common.introspection.bash import parse_bash
from gristmill.common.introspection.go import parse_go
from gristmill.common.introspection.python import parse_python
from gristmill.common.introspection.signature import (
    JSON_SCHEMA_DIALECT,
    ScriptSignature,
    object_schema,
)
from gristmill.common.introspection.sql import parse_postgresql
from gristmill.common.introspection.typescript import parse_typescript

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "ScriptSignature",
    "object_schema",
    "parse_bash",
    "parse_go",
    "parse_postgresql",
    "parse_python",
    "parse_typescript",
]
