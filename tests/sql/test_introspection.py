"""``parse_postgresql``: placeholders and ``-- $N name = default`` comments → JSON Schema."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill.common.introspection import JSON_SCHEMA_DIALECT, parse_postgresql
from gristmill.common.introspection.sql import database_annotation, split_statements
from gristmill.common.scripts import SUPPORTED_LANGUAGES, infer_schema

DATABASE = {"type": "object", "format": "resource-postgresql"}


def test_named_typed_placeholders_and_defaults() -> None:
    code = """-- $1 name
-- $2 limit = 10
-- $3 active = true
-- $4 label = 'a b'
SELECT * FROM users WHERE name = $1::TEXT AND active = $3::bool
LIMIT $2::int -- $4 is used below
; SELECT $4::varchar, $1::text
"""
    schema = parse_postgresql(code).schema
    assert schema["$schema"] == JSON_SCHEMA_DIALECT
    assert schema["order"] == ["database", "name", "limit", "active", "label"]
    assert schema["properties"] == {
        "database": DATABASE,
        "name": {"type": "string"},
        "limit": {"type": "integer", "default": 10},
        "active": {"type": "boolean", "default": True},
        "label": {"type": "string", "default": "a b"},
    }
    assert schema["required"] == ["database", "name"]


@pytest.mark.parametrize(
    ("cast", "expected"),
    [
        ("int", {"type": "integer"}),
        ("BIGINT", {"type": "integer"}),
        ("int8", {"type": "integer"}),
        ("numeric", {"type": "number"}),
        ("double precision", {"type": "number"}),
        ("float8", {"type": "number"}),
        ("boolean", {"type": "boolean"}),
        ("date", {"type": "string", "format": "date"}),
        ("timestamptz", {"type": "string", "format": "date-time"}),
        ("timestamp with time zone", {"type": "string", "format": "date-time"}),
        ("jsonb", {"type": "object"}),
        ("text[]", {"type": "array", "items": {"type": "string"}}),
        ("int[]", {"type": "array", "items": {"type": "integer"}}),
        ("uuid", {"type": "string"}),
        ("varchar", {"type": "string"}),
    ],
)
def test_casts(cast: str, expected: dict[str, Any]) -> None:
    schema = parse_postgresql(f"-- $1 x\nSELECT $1::{cast}").schema
    assert schema["properties"]["x"] == expected


def test_database_annotation_replaces_the_database_input() -> None:
    code = "-- database f/data/warehouse\n-- $1 id\nSELECT $1::int\n"
    assert database_annotation(code) == "f/data/warehouse"
    schema = parse_postgresql(code).schema
    assert schema["properties"] == {"id": {"type": "integer"}}
    assert schema["required"] == ["id"]


def test_unnamed_placeholders_and_placeholders_in_literals() -> None:
    code = "SELECT $2::int, '$7::text', $$ $8 $$ /* $9::int */ -- $5::int\n"
    schema = parse_postgresql(code).schema
    assert schema["order"] == ["database", "arg2"]
    assert schema["properties"]["arg2"] == {"type": "integer"}


def test_split_statements() -> None:
    code = "SELECT ';'; -- a ; comment\nSELECT $x$ ; $x$;\n/* ; */ ;  \nSELECT 3"
    assert [text.strip() for _, text in split_statements(code)] == [
        "SELECT ';'",
        "-- a ; comment\nSELECT $x$ ; $x$",
        "SELECT 3",
    ]


def test_registered_with_scripts() -> None:
    assert "postgresql" in SUPPORTED_LANGUAGES
    assert infer_schema("postgresql", "-- $1 n\nSELECT $1::int")["order"] == ["database", "n"]
