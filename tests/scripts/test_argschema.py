"""Arguments against a script's input schema: one row per rule, and the introspected seed."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill.common.argschema import validate_args
from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection import parse_bash, parse_python
from tests.introspection.test_python_signature import SEED


def schema_of(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
        "order": list(properties),
    }


def one(prop: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """A schema with a single argument ``a``."""
    return schema_of({"a": prop}, ["a"] if required else [])


def rejected(schema: dict[str, Any], args: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate_args(schema, args)
    return caught.value


# -- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ({"type": "string"}, "x"),
        ({"type": "integer"}, 3),
        ({"type": "integer"}, 2.0),  # JSON Schema: a number with no fraction is an integer
        ({"type": "integer"}, -(2**70)),
        ({"type": "number"}, 1),
        ({"type": "number"}, 1.5),
        ({"type": "boolean"}, False),
        ({"type": "object"}, {"k": [1]}),
        ({"type": "array"}, []),
        ({"type": "array", "items": {"type": "integer"}}, [1, 2, 3]),
        ({"type": ["string", "integer"]}, 4),
        ({"type": "integer", "nullable": True}, None),
        ({"type": "null"}, None),
        ({"nullable": True}, None),
        ({}, None),
        ({}, {"anything": ["goes"]}),
        ({"type": "string", "enum": ["my", "enum"]}, "enum"),
        ({"type": "integer", "enum": [1, 2]}, 2),
        ({"enum": ["a", 1]}, 1),
        ({"type": "string", "enum": ["a"], "nullable": True}, None),
        ({"const": "fixed"}, "fixed"),
        ({"type": "object", "format": "resource-postgresql"}, {"host": "db"}),
        ({"type": "object", "format": "resource-postgresql"}, "$res:f/ops/db"),
        ({"type": "object", "format": "resource-postgresql", "nullable": True}, None),
        ({"type": "string", "format": "date-time"}, "not checked"),
        ({"type": "string", "pattern": "^a$"}, "not checked either"),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, "s"),
        ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, 1),
        ({"allOf": [{"type": "integer"}, {"minimum": 0}]}, 5),
        ({"type": "string", "minLength": 2, "maxLength": 3}, "abc"),
        ({"type": "integer", "minimum": 1, "maximum": 3}, 3),
        ({"type": "number", "exclusiveMinimum": 0}, 0.1),
        ({"type": "array", "minItems": 1, "maxItems": 2}, [1, 2]),
        (
            schema_of({"host": {"type": "string"}, "port": {"type": "integer"}}, ["host"]),
            {"host": "h", "extra": "allowed in nested objects"},
        ),
    ],
)
def test_accepted(prop: dict[str, Any], value: Any) -> None:
    assert validate_args(one(prop), {"a": value}) == {"a": value}


# -- rejected, with the argument and the rule named ----------------------------------------------


@pytest.mark.parametrize(
    ("prop", "value", "location", "message"),
    [
        ({"type": "integer"}, "x", "args.a", "expected integer, got string 'x'"),
        ({"type": "integer"}, 1.5, "args.a", "expected integer, got number 1.5"),
        ({"type": "integer"}, True, "args.a", "expected integer, got boolean true"),
        ({"type": "number"}, "1", "args.a", "expected number, got string '1'"),
        ({"type": "string"}, 3, "args.a", "expected string, got integer 3"),
        ({"type": "string"}, None, "args.a", "expected string, got null"),
        ({"type": "boolean"}, 0, "args.a", "expected boolean, got integer 0"),
        ({"type": "object"}, [1], "args.a", "expected object, got array of 1 items"),
        ({"type": "array"}, {}, "args.a", "expected array, got object"),
        (
            {"type": ["string", "integer"]},
            1.5,
            "args.a",
            "expected string or integer, got number 1.5",
        ),
        (
            {"type": "string", "enum": ["my", "enum"]},
            "other",
            "args.a",
            "must be one of 'my', 'enum'; got string 'other'",
        ),
        ({"type": "integer", "enum": [1, 2]}, 3, "args.a", "must be one of 1, 2; got integer 3"),
        ({"enum": [1]}, True, "args.a", "must be one of 1; got boolean true"),
        ({"const": "fixed"}, "loose", "args.a", "must be 'fixed'; got string 'loose'"),
        (
            {"type": "object", "format": "resource-postgresql"},
            "f/ops/db",
            "args.a",
            "expected a postgresql resource: an object, or a reference '$res:<path>'; "
            "got string 'f/ops/db'",
        ),
        (
            {"type": "object", "format": "resource-postgresql"},
            "$res:",
            "args.a",
            "expected a postgresql resource: an object, or a reference '$res:<path>'; "
            "got string '$res:'",
        ),
        (
            {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            [],
            "args.a",
            "expected integer or string, got an empty array",
        ),
        (
            {"anyOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
            1,
            "args.a",
            "matches none of the allowed forms: must be at least 5, got 1; "
            "expected string, got integer 1",
        ),
        (
            {"allOf": [{"type": "integer"}, {"minimum": 0}]},
            -1,
            "args.a",
            "must be at least 0, got -1",
        ),
        (
            {"type": "string", "minLength": 2},
            "a",
            "args.a",
            "must be at least 2 characters long, got 1",
        ),
        (
            {"type": "string", "maxLength": 2},
            "abc",
            "args.a",
            "must be at most 2 characters long, got 3",
        ),
        ({"type": "integer", "maximum": 3}, 4, "args.a", "must be at most 3, got 4"),
        ({"type": "number", "exclusiveMinimum": 0}, 0, "args.a", "must be greater than 0, got 0"),
        ({"type": "number", "exclusiveMaximum": 1}, 1.0, "args.a", "must be less than 1, got 1.0"),
        ({"type": "array", "minItems": 1}, [], "args.a", "must have at least 1 items, got 0"),
        ({"type": "array", "maxItems": 1}, [1, 2], "args.a", "must have at most 1 items, got 2"),
        (
            {"type": "array", "items": {"type": "integer"}},
            [1, "two", 3],
            "args.a[1]",
            "expected integer, got string 'two'",
        ),
        (
            schema_of({"host": {"type": "string"}, "port": {"type": "integer"}}, ["host"]),
            {"port": 5432},
            "args.a.host",
            "missing required field",
        ),
        (
            schema_of({"port": {"type": "integer"}}, []),
            {"port": "5432"},
            "args.a.port",
            "expected integer, got string '5432'",
        ),
        (
            {**schema_of({"port": {"type": "integer"}}, []), "additionalProperties": False},
            {"user": "x"},
            "args.a.user",
            "unknown field",
        ),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            {"k": "v"},
            "args.a.k",
            "expected integer, got string 'v'",
        ),
    ],
)
def test_rejected(prop: dict[str, Any], value: Any, location: str, message: str) -> None:
    error = rejected(one(prop), {"a": value})
    assert (error.location, error.message) == (location, message)
    assert str(error) == f"{location}: {message}"
    assert error.code == "invalid_request"


def test_long_values_are_shortened_in_messages() -> None:
    error = rejected(one({"type": "integer"}), {"a": "z" * 100})
    assert error.message == "expected integer, got string '" + "z" * 37 + "...'"


def test_missing_required_argument() -> None:
    error = rejected(schema_of({"a": {"type": "integer"}, "b": {"type": "string"}}), {"b": "x"})
    assert (error.location, error.message) == ("args.a", "missing required argument")


def test_unknown_arguments_are_rejected_naming_what_the_script_takes() -> None:
    schema = schema_of({"a": {"type": "integer"}, "b": {"type": "string"}}, [])
    error = rejected(schema, {"a": 1, "c": 2})
    assert (error.location, error.message) == ("args.c", "unknown argument; the script takes: a, b")
    error = rejected(schema_of({}), {"x": 1})
    assert error.message == "unknown argument; the script takes: no arguments"


@pytest.mark.parametrize(
    ("schema", "args"),
    [
        ({**schema_of({"a": {"type": "integer"}}), "additionalProperties": True}, {"a": 1, "z": 2}),
        (
            {**schema_of({"a": {"type": "integer"}}), "additionalProperties": {"type": "integer"}},
            {"a": 1, "z": 2},
        ),
        ({"type": "object"}, {"z": "anything"}),  # no properties declared: anything goes
        ({}, {"z": 1}),
        (None, {"z": 1}),
    ],
)
def test_extra_arguments_when_the_schema_allows_them(
    schema: dict[str, Any] | None, args: dict[str, Any]
) -> None:
    assert validate_args(schema, args) == args


def test_extra_arguments_are_checked_against_additional_properties() -> None:
    schema = {**schema_of({}), "additionalProperties": {"type": "integer"}}
    error = rejected(schema, {"z": "x"})
    assert (error.location, error.message) == ("args.z", "expected integer, got string 'x'")


def test_defaults_are_applied_to_missing_optional_arguments() -> None:
    schema = schema_of(
        {
            "a": {"type": "integer"},
            "b": {"type": "string", "default": "hi"},
            "c": {"type": "object", "default": {"nested": ["x"]}},
            "d": {"type": "integer", "nullable": True},
        },
        ["a"],
    )
    args = validate_args(schema, {"a": 1})
    assert args == {"a": 1, "b": "hi", "c": {"nested": ["x"]}}
    # A copy: changing the job's args does not change the schema.
    args["c"]["nested"].append("y")
    assert schema["properties"]["c"]["default"] == {"nested": ["x"]}
    # A value given wins over the default; the input is not modified.
    given = {"a": 1, "b": "mine"}
    assert validate_args(schema, given) == {"a": 1, "b": "mine", "c": {"nested": ["x"]}}
    assert given == {"a": 1, "b": "mine"}


def test_every_fault_is_listed_in_schema_order() -> None:
    schema = schema_of(
        {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
        ["a", "b", "c"],
    )
    error = rejected(schema, {"c": "no", "b": 2, "zz": 1})
    assert error.location == "args.a"
    assert error.data["errors"] == [
        {"location": "args.a", "message": "missing required argument"},
        {"location": "args.b", "message": "expected string, got integer 2"},
        {"location": "args.c", "message": "expected boolean, got string 'no'"},
        {"location": "args.zz", "message": "unknown argument; the script takes: a, b, c"},
    ]
    assert rejected(schema, {"a": 1, "b": "x", "c": 1}).to_dict() == {
        "code": "invalid_request",
        "message": "expected boolean, got integer 1",
        "location": "args.c",
        "data": {"errors": [{"location": "args.c", "message": "expected boolean, got integer 1"}]},
    }


# -- with schemas from introspection ---------------------------------------------------------------


def test_the_seed_example() -> None:
    schema = parse_python(SEED).schema
    pg = {"host": "db", "port": 5432, "user": "u", "dbname": "d", "sslmode": "off", "password": "p"}
    assert validate_args(schema, {"a": 1, "b": "my", "c": pg}) == {
        "a": 1,
        "b": "my",
        "c": pg,
        "d": "inferred type string from default arg",
        "e": {"nested": "object"},
    }
    assert validate_args(schema, {"a": 1, "b": "enum", "c": "$res:u/admin/pg", "d": "given"}) == {
        "a": 1,
        "b": "enum",
        "c": "$res:u/admin/pg",
        "d": "given",
        "e": {"nested": "object"},
    }
    cases = [
        ({"a": "x", "b": "my", "c": pg}, "args.a", "expected integer, got string 'x'"),
        (
            {"a": 1, "b": "your", "c": pg},
            "args.b",
            "must be one of 'my', 'enum'; got string 'your'",
        ),
        ({"a": 1, "b": "my"}, "args.c", "missing required argument"),
        (
            {"a": 1, "b": "my", "c": 5},
            "args.c",
            "expected a postgresql resource: an object, or a reference '$res:<path>'; "
            "got integer 5",
        ),
        ({"a": 1, "b": "my", "c": pg, "d": 3}, "args.d", "expected string, got integer 3"),
        (
            {"a": 1, "b": "my", "c": pg, "f": 3},
            "args.f",
            "unknown argument; the script takes: a, b, c, d, e",
        ),
    ]
    for args, location, message in cases:
        error = rejected(schema, args)
        assert (error.location, error.message) == (location, message), args


def test_optional_parameters_accept_null() -> None:
    code = (
        "from typing import Optional\n"
        "def main(a: Optional[int], b: int | None = None, c: str = 'x'):\n"
        "    pass\n"
    )
    schema = parse_python(code).schema
    assert validate_args(schema, {"a": None, "b": None}) == {"a": None, "b": None, "c": "x"}
    assert validate_args(schema, {}) == {"c": "x"}
    error = rejected(schema, {"c": None})
    assert (error.location, error.message) == ("args.c", "expected string, got null")


def test_nested_typed_dicts() -> None:
    code = (
        "from typing import TypedDict\n"
        "class Address(TypedDict):\n    street: str\n    number: int\n"
        "class Person(TypedDict):\n    name: str\n    addresses: list[Address]\n"
        "def main(person: Person):\n    pass\n"
    )
    schema = parse_python(code).schema
    good = {"name": "Ann", "addresses": [{"street": "Main", "number": 1}]}
    assert validate_args(schema, {"person": good}) == {"person": good}
    bad = {"name": "Ann", "addresses": [{"street": "Main", "number": 1}, {"street": "Side"}]}
    error = rejected(schema, {"person": bad})
    assert (error.location, error.message) == (
        "args.person.addresses[1].number",
        "missing required field",
    )


def test_bash_inputs_are_strings() -> None:
    schema = parse_bash('name="$1"\ngreeting="${2:-hello}"\n').schema
    assert validate_args(schema, {"name": "ann"}) == {"name": "ann", "greeting": "hello"}
    error = rejected(schema, {"name": 3})
    assert (error.location, error.message) == ("args.name", "expected string, got integer 3")


def test_jsonb_key_order_does_not_change_the_argument_order() -> None:
    # jsonb sorts keys; "order" keeps the declaration order for messages.
    schema = {
        "type": "object",
        "properties": {"alpha": {"type": "integer"}, "zed": {"type": "integer"}},
        "required": ["alpha", "zed"],
        "order": ["zed", "alpha"],
    }
    error = rejected(schema, {})
    assert [e["location"] for e in error.data["errors"]] == ["args.zed", "args.alpha"]


def test_a_custom_location_prefix() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_args(one({"type": "integer"}), {"a": "x"}, location="steps.a.args")
    assert caught.value.location == "steps.a.args.a"
