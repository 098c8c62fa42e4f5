"""``parse_go``: Go ``main`` signatures → JSON Schema, without compiling them."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection import JSON_SCHEMA_DIALECT, parse_go
from gristmill.common.introspection.go import go_main_parameters
from gristmill.common.scripts import SUPPORTED_LANGUAGES, infer_schema


def _schema(params: str, extra: str = "") -> dict[str, Any]:
    code = f"package inner\n{extra}\nfunc main({params}) (interface{{}}, error) {{\n"
    code += "\treturn nil, nil\n}\n"
    return parse_go(code).schema


@pytest.mark.parametrize(
    ("go_type", "expected"),
    [
        ("int", {"type": "integer"}),
        ("int64", {"type": "integer"}),
        ("uint8", {"type": "integer"}),
        ("float64", {"type": "number"}),
        ("float32", {"type": "number"}),
        ("string", {"type": "string"}),
        ("bool", {"type": "boolean"}),
        ("time.Time", {"type": "string", "format": "date-time"}),
        ("[]string", {"type": "array", "items": {"type": "string"}}),
        ("[][]int", {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}),
        ("[]interface{}", {"type": "array"}),
        ("map[string]interface{}", {"type": "object"}),
        ("map[string]int", {"type": "object"}),
        ('struct {\n\tFoo string `json:"foo"`\n}', {"type": "object"}),
        ("interface{}", {}),
        ("any", {}),
    ],
)
def test_type_mapping(go_type: str, expected: dict[str, Any]) -> None:
    schema = _schema(f"x {go_type}")
    assert schema["properties"] == {"x": expected}
    assert schema["required"] == ["x"]
    assert schema["$schema"] == JSON_SCHEMA_DIALECT


def test_declared_struct_is_an_object_and_pointers_are_optional() -> None:
    schema = _schema(
        "opts Options, limit *int",
        extra='type Options struct {\n\tLoud bool `json:"loud"`\n}\n',
    )
    assert schema["properties"] == {
        "opts": {"type": "object"},
        "limit": {"type": "integer", "nullable": True},
    }
    assert schema["required"] == ["opts"]


def test_grouped_names_order_and_comments() -> None:
    code = """package inner

// main has a comment with func main(fake int) inside
func main(
	a, b int, // first two
	/* a block (with parens) */ name string,
	tags []string,
) (interface{}, error) {
	s := "func main(nope string)"
	return s, nil
}
"""
    assert go_main_parameters(code) == [
        ("a", "int"),
        ("b", "int"),
        ("name", "string"),
        ("tags", "[]string"),
    ]
    schema = parse_go(code).schema
    assert schema["order"] == ["a", "b", "name", "tags"]
    assert schema["required"] == ["a", "b", "name", "tags"]


def test_no_parameters() -> None:
    assert _schema("")["properties"] == {}


def test_unknown_type_is_any_with_a_note() -> None:
    code = "package inner\nfunc main(c chan int) (interface{}, error) { return nil, nil }\n"
    signature = parse_go(code)
    assert signature.schema["properties"] == {"c": {}}
    assert signature.notes


@pytest.mark.parametrize(
    "code",
    [
        "package inner\nfunc other() {}\n",
        "package inner\nfunc main(x int (interface{}, error) {}\n",
        "package inner\nfunc main(x int, y) (interface{}, error) {}\n",
    ],
)
def test_invalid_signatures(code: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_go(code)


def test_registered_with_scripts() -> None:
    assert "go" in SUPPORTED_LANGUAGES
    code = "package inner\nfunc main(x int) (interface{}, error) { return x, nil }\n"
    assert infer_schema("go", code)["properties"] == {"x": {"type": "integer"}}
