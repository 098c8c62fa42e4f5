"""Resource values against their type's schema (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.resources import check_schema, validate_value

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "flag": {"type": "boolean"},
        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
        "mode": {"const": "fast"},
        "maybe": {"type": "string", "nullable": True},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "one": {"oneOf": [{"type": "number"}, {"type": "integer"}]},
        "items": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"count": 3, "ratio": 0.5, "flag": False, "name": "abc", "mode": "fast"},
        {"count": 3.0},  # an integral number is an integer
        {"maybe": None, "either": "x", "items": ["a"], "extra": {"a": 1}},
        {"count": "$var:u/admin/count", "items": "$res:f/x/list"},  # references pass
        {"unknown": [1, {"any": "thing"}]},  # no additionalProperties rule
    ],
)
def test_accepted(value: Any) -> None:
    validate_value(SCHEMA, value, resource_type="t")


@pytest.mark.parametrize(
    ("value", "location", "message"),
    [
        ({"count": True}, "value.count", "must be integer, got boolean"),
        ({"count": 1.5}, "value.count", "must be integer, got number"),
        ({"ratio": 0}, "value.ratio", "must be greater than 0"),
        ({"flag": "yes"}, "value.flag", "must be boolean, got string"),
        ({"name": "ABC"}, "value.name", "must match the pattern"),
        ({"name": "abcdef"}, "value.name", "at most 5 characters"),
        ({"mode": "slow"}, "value.mode", 'must be "fast"'),
        ({"maybe": 1}, "value.maybe", "must be string or null"),
        ({"either": 1.5}, "value.either", "none of the allowed alternatives"),
        ({"one": 2}, "value.one", "exactly one alternative (oneOf), matches 2"),
        ({"items": []}, "value.items", "at least 1 items"),
        ({"items": ["a", 2]}, "value.items[1]", "must be string"),
        ({"extra": {"a": "b"}}, "value.extra.a", "must be integer"),
        ("text", "value", "the value must be object, got string"),
    ],
)
def test_rejected_with_the_field_named(value: Any, location: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_value(SCHEMA, value, resource_type="t")
    assert raised.value.location == location
    assert message in raised.value.message
    assert "resource type 't'" in raised.value.message


def test_no_schema_accepts_anything() -> None:
    validate_value(None, {"anything": [1, None]}, resource_type="state")
    validate_value({}, 42, resource_type="loose")
    validate_value(True, 42, resource_type="loose")


@pytest.mark.parametrize(
    ("schema", "location"),
    [
        ([], "schema"),
        ({"type": "text"}, "schema.type"),
        ({"type": ["string", "date"]}, "schema.type"),
        ({"properties": []}, "schema.properties"),
        ({"properties": {"a": {"type": "x"}}}, "schema.properties.a.type"),
        ({"required": "a"}, "schema.required"),
        ({"items": {"type": 3}}, "schema.items.type"),
        ({"anyOf": []}, "schema.anyOf"),
        ({"minimum": "1"}, "schema.minimum"),
        ({"pattern": "("}, "schema.pattern"),
        ({"enum": "a"}, "schema.enum"),
    ],
)
def test_malformed_schemas_are_refused(schema: Any, location: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_schema(schema)
    assert raised.value.location == location
    assert raised.value.message.startswith("invalid schema")


def test_well_formed_schemas_pass() -> None:
    check_schema(None)
    check_schema(SCHEMA)
    check_schema({"type": "object", "format": "whatever", "description": "d", "order": ["a"]})
