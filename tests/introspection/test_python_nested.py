"""TypedDicts, dataclasses and pydantic models defined in the script → nested objects."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from gristmill.common.introspection import parse_python


def _param(preamble: str, annotation: str = "Config") -> dict[str, Any]:
    code = textwrap.dedent(preamble) + f"\n\ndef main(x: {annotation}):\n    return x\n"
    schema: dict[str, Any] = parse_python(code).schema["properties"]["x"]
    return schema


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "order": list(properties),
    }


ADDRESS_SCHEMA = _object({"street": {"type": "string"}, "zip": {"type": "string"}}, ["street"])

CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "typeddict",
        """
        from typing import TypedDict
        class Config(TypedDict):
            name: str
            retries: int
            tags: list[str]
        """,
        _object(
            {
                "name": {"type": "string"},
                "retries": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            ["name", "retries", "tags"],
        ),
    ),
    (
        "typeddict nested recursively, with NotRequired and Optional",
        """
        from typing import Optional, TypedDict
        from typing_extensions import NotRequired
        class Address(TypedDict):
            street: str
            zip: NotRequired[str]
        class Config(TypedDict):
            home: Address
            work: Optional[Address]
            others: list[Address]
        """,
        _object(
            {
                "home": ADDRESS_SCHEMA,
                "work": {**ADDRESS_SCHEMA, "nullable": True},
                "others": {"type": "array", "items": ADDRESS_SCHEMA},
            },
            ["home", "others"],
        ),
    ),
    (
        "typeddict total=False and Required",
        """
        import typing
        class Config(typing.TypedDict, total=False):
            a: int
            b: typing.Required[int]
        """,
        _object({"a": {"type": "integer"}, "b": {"type": "integer"}}, ["b"]),
    ),
    (
        "typeddict inheritance",
        """
        from typing import TypedDict
        class Base(TypedDict):
            a: int
        class Config(Base):
            b: str
        """,
        _object({"a": {"type": "integer"}, "b": {"type": "string"}}, ["a", "b"]),
    ),
    (
        "typeddict functional syntax",
        """
        from typing import TypedDict
        Config = TypedDict("Config", {"a": int, "b": "list[int]"})
        """,
        _object(
            {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "integer"}}},
            ["a", "b"],
        ),
    ),
    (
        "dataclass with defaults, field() and ClassVar",
        """
        from dataclasses import dataclass, field
        from typing import ClassVar
        @dataclass
        class Config:
            name: str
            port: int = 5432
            hosts: list[str] = field(default_factory=list)
            mode: str = field(default="fast")
            when: float = time.time()
            registry: ClassVar[dict] = {}
        """,
        _object(
            {
                "name": {"type": "string"},
                "port": {"type": "integer", "default": 5432},
                "hosts": {"type": "array", "items": {"type": "string"}, "default": []},
                "mode": {"type": "string", "default": "fast"},
                "when": {"type": "number"},
            },
            ["name"],
        ),
    ),
    (
        "dataclass(frozen=True) nesting another dataclass, docstring descriptions",
        """
        import dataclasses
        @dataclasses.dataclass(frozen=True)
        class Point:
            '''A point.

            Attributes:
                x: Horizontal.
            '''
            x: int
            y: int = 0
        @dataclasses.dataclass
        class Config:
            origin: Point
            points: "list[Point]"
        """,
        _object(
            {
                "origin": _object(
                    {
                        "x": {"type": "integer", "description": "Horizontal."},
                        "y": {"type": "integer", "default": 0},
                    },
                    ["x"],
                ),
                "points": {
                    "type": "array",
                    "items": _object(
                        {
                            "x": {"type": "integer", "description": "Horizontal."},
                            "y": {"type": "integer", "default": 0},
                        },
                        ["x"],
                    ),
                },
            },
            ["origin", "points"],
        ),
    ),
    (
        "pydantic model with Field",
        """
        from pydantic import BaseModel, Field
        class Config(BaseModel):
            name: str = Field(..., description="Who")
            size: int = Field(3, ge=0)
            label: str | None = None
        """,
        _object(
            {
                "name": {"type": "string", "description": "Who"},
                "size": {"type": "integer", "default": 3},
                "label": {"type": "string", "nullable": True},
            },
            ["name"],
        ),
    ),
    (
        "self-referencing type stops at one level",
        """
        from typing import TypedDict
        class Config(TypedDict):
            value: int
            children: "list[Config]"
        """,
        _object(
            {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"type": "object"}},
            },
            ["value", "children"],
        ),
    ),
]


@pytest.mark.parametrize(
    ("preamble", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_nested_object(preamble: str, expected: dict[str, Any]) -> None:
    assert _param(preamble) == expected


def test_lowercase_class_is_a_resource_even_inside_an_object() -> None:
    preamble = """
    from typing import TypedDict
    class postgresql(TypedDict):
        host: str
    class Config(TypedDict):
        db: postgresql
    """
    assert _param(preamble) == _object(
        {"db": {"type": "object", "format": "resource-postgresql"}}, ["db"]
    )
