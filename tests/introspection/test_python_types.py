"""Annotations of ``main``'s parameters → property schemas, one row per type form."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from gristmill.common.introspection import JSON_SCHEMA_DIALECT, parse_python


def _param(annotation: str, preamble: str = "") -> tuple[dict[str, Any], bool]:
    """The schema of ``x: <annotation>`` and whether ``x`` is required."""
    code = textwrap.dedent(preamble) + f"\n\ndef main(x: {annotation}):\n    return x\n"
    schema = parse_python(code).schema
    return schema["properties"]["x"], "x" in schema["required"]


TYPING = "from typing import *\nimport typing\nimport typing as t\n"


@pytest.mark.parametrize(
    ("annotation", "preamble", "expected"),
    [
        ("int", "", {"type": "integer"}),
        ("float", "", {"type": "number"}),
        ("str", "", {"type": "string"}),
        ("bool", "", {"type": "boolean"}),
        ("bytes", "", {"type": "string", "contentEncoding": "base64"}),
        ("dict", "", {"type": "object"}),
        ("Dict", TYPING, {"type": "object"}),
        ("dict[str, int]", "", {"type": "object"}),
        ("typing.Dict[str, Any]", TYPING, {"type": "object"}),
        ("list", "", {"type": "array"}),
        ("list[int]", "", {"type": "array", "items": {"type": "integer"}}),
        ("List[str]", TYPING, {"type": "array", "items": {"type": "string"}}),
        ("t.List[float]", TYPING, {"type": "array", "items": {"type": "number"}}),
        (
            "list[list[bool]]",
            "",
            {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}}},
        ),
        ("list[Any]", TYPING, {"type": "array"}),
        ("tuple[int, ...]", "", {"type": "array", "items": {"type": "integer"}}),
        ("tuple[int, str]", "", {"type": "array"}),
        ("set[str]", "", {"type": "array", "items": {"type": "string"}}),
        (
            "Sequence[int]",
            "from collections.abc import Sequence",
            {"type": "array", "items": {"type": "integer"}},
        ),
        ('Literal["a", "b"]', TYPING, {"type": "string", "enum": ["a", "b"]}),
        ("typing.Literal[1, 2]", TYPING, {"type": "integer", "enum": [1, 2]}),
        ('Literal["a", 1]', TYPING, {"enum": ["a", 1]}),
        ('Literal["a", Literal["b"]]', TYPING, {"type": "string", "enum": ["a", "b"]}),
        ("datetime", "from datetime import datetime", {"type": "string", "format": "date-time"}),
        ("date", "from datetime import date", {"type": "string", "format": "date"}),
        ("datetime.datetime", "import datetime", {"type": "string", "format": "date-time"}),
        ("dt.date", "import datetime as dt", {"type": "string", "format": "date"}),
        ("UUID", "from uuid import UUID", {"type": "string", "format": "uuid"}),
        ("Any", TYPING, {}),
        ("object", "", {}),
        ("Annotated[int, 'meta']", TYPING, {"type": "integer"}),
        ("'int'", "", {"type": "integer"}),
        ("'list[str]'", "", {"type": "array", "items": {"type": "string"}}),
        ("int | str", "", {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        ("Union[int, str]", TYPING, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        ("int | Any", TYPING, {}),
        ("Ids", "Ids = list[int]", {"type": "array", "items": {"type": "integer"}}),
        (
            "Ids",
            "from typing import TypeAlias\nIds: TypeAlias = 'list[int]'",
            {"type": "array", "items": {"type": "integer"}},
        ),
    ],
)
def test_annotation_maps_to_schema(
    annotation: str, preamble: str, expected: dict[str, Any]
) -> None:
    schema, required = _param(annotation, preamble)
    assert schema == expected
    assert required


@pytest.mark.parametrize(
    ("annotation", "preamble", "expected"),
    [
        ("Optional[int]", TYPING, {"type": "integer", "nullable": True}),
        ("typing.Optional[str]", TYPING, {"type": "string", "nullable": True}),
        ("int | None", "", {"type": "integer", "nullable": True}),
        ("None | list[int]", "", {"type": "array", "items": {"type": "integer"}, "nullable": True}),
        ("Union[int, None]", TYPING, {"type": "integer", "nullable": True}),
        (
            "Union[int, str, None]",
            TYPING,
            {"anyOf": [{"type": "integer"}, {"type": "string"}], "nullable": True},
        ),
        ("'Optional[int]'", TYPING, {"type": "integer", "nullable": True}),
        ('Literal["a", None]', TYPING, {"type": "string", "enum": ["a"], "nullable": True}),
        ("Optional[Any]", TYPING, {"nullable": True}),
    ],
)
def test_optional_is_nullable_and_not_required(
    annotation: str, preamble: str, expected: dict[str, Any]
) -> None:
    schema, required = _param(annotation, preamble)
    assert schema == expected
    assert not required


RESOURCE_PG = {"type": "object", "format": "resource-postgresql"}


@pytest.mark.parametrize(
    ("annotation", "preamble", "expected"),
    [
        # Python spelling: a lowercase class, TypedDict or not, with or without fields.
        (
            "postgresql",
            "from typing import TypedDict\nclass postgresql(TypedDict):\n    host: str",
            RESOURCE_PG,
        ),
        ("postgresql", "class postgresql:\n    pass", RESOURCE_PG),
        ("my_api", "class my_api(dict): ...", {"type": "object", "format": "resource-my_api"}),
        # The older alias spelling, and a lowercase name used without any definition.
        ("postgresql", "postgresql = dict", RESOURCE_PG),
        ("postgresql", "", RESOURCE_PG),
        ("Optional[postgresql]", "from typing import Optional", {**RESOURCE_PG, "nullable": True}),
        # TypeScript spelling: known names in CamelCase, imported or defined.
        ("Postgresql", "from wmill import Postgresql", RESOURCE_PG),
        ("Postgresql", "from some.where import Postgresql", RESOURCE_PG),
        (
            "Postgresql",
            "from typing import TypedDict\nclass Postgresql(TypedDict):\n    host: str",
            RESOURCE_PG,
        ),
        (
            "S3Object",
            "from wmill import S3Object",
            {"type": "object", "format": "resource-s3_object"},
        ),
        ("MsSqlServer", "", {"type": "object", "format": "resource-ms_sql_server"}),
        ("wmill.Gsheets", "import wmill", {"type": "object", "format": "resource-gsheets"}),
        # Anything imported from wmill is a resource type.
        (
            "MyCustomThing",
            "from wmill import MyCustomThing",
            {"type": "object", "format": "resource-my_custom_thing"},
        ),
    ],
)
def test_resource_types(annotation: str, preamble: str, expected: dict[str, Any]) -> None:
    schema, _ = _param(annotation, preamble)
    assert schema == expected


@pytest.mark.parametrize(
    ("annotation", "preamble", "note"),
    [
        ("Path", "from pathlib import Path", "unknown type `pathlib.Path`"),
        ("ndarray", "from numpy import ndarray", "unknown type `numpy.ndarray`"),
        ("Plain", "class Plain:\n    x: int", "class `Plain` is not a TypedDict"),
        ("f().x", "", "unsupported annotation `f().x`"),
        ("complex", "", "unknown type `complex`"),
        ("type", "", "unknown type `type`"),
        ("'not a type('", "", "is not a valid type"),
    ],
)
def test_unknown_types_accept_anything_with_a_note(
    annotation: str, preamble: str, note: str
) -> None:
    signature = parse_python(f"{preamble}\n\ndef main(x: {annotation}): ...\n")
    assert signature.schema["properties"]["x"] == {}
    assert any(note in text and text.startswith("line ") for text in signature.notes), (
        signature.notes
    )


def test_top_level_shape() -> None:
    schema = parse_python("def main(b: int, a: str):\n    pass\n").schema
    assert schema == {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
        "required": ["b", "a"],
        "order": ["b", "a"],
    }
