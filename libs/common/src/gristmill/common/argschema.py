"""Check a run's arguments against its script's input schema, before it is queued.

The schema is the JSON Schema that introspection (or the client that saved the
script) wrote for ``main``'s parameters. A small validator of our own rather than a
general JSON Schema library, because the schemas carry Windmill's dialect and the
errors must name the argument and the rule in words a caller can act on::

    args.a: expected integer, got string 'x'

What is checked:

* every ``required`` argument is present; missing optional ones get their schema
  ``default`` (a copy), so the job records the values it ran with;
* unknown arguments are rejected, because ``main(**args)`` would fail on them at run
  time anyway: unless the top-level schema says ``additionalProperties`` (``true``,
  or a schema the extra values must match), or declares no ``properties`` at all
  (an empty or missing schema accepts anything). Nested objects follow JSON Schema:
  extra keys are allowed unless ``additionalProperties`` forbids them;
* ``type`` (one name or a list; ``integer`` accepts ``2.0`` but not ``true``),
  ``nullable: true`` (what introspection writes for ``Optional``) accepts ``null``;
* ``enum`` and ``const`` (compared as JSON values: ``1`` is not ``true``);
* ``format: resource-<type>``: an object, or a ``"$res:<path>"`` reference (resolved
  later, when the job runs);
* ``anyOf``/``oneOf`` (one alternative must match; ``oneOf`` is read as ``anyOf``, as
  forms do) and ``allOf``;
* nested ``properties``/``required``, array ``items``, and the bounds ``minLength``,
  ``maxLength``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``,
  ``minItems``, ``maxItems``.

Not checked: other ``format``s (``date-time``, ``email``, ...; the script parses its
own strings) and ``pattern`` (a regular expression written by the script's author and
matched against a caller's value could stall the gateway).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeGuard

from gristmill.common.errors import InvalidRequest

__all__ = ["RESOURCE_REF_PREFIX", "validate_args"]

#: A string argument naming a saved resource instead of holding its value.
RESOURCE_REF_PREFIX: Final = "$res:"
_MAX_ERRORS: Final = 20
_SHOWN_CHARS: Final = 40
_TYPE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: (
        _is_number(value) and (isinstance(value, int) or float(value).is_integer())
    ),
    "number": lambda value: _is_number(value),
    "boolean": lambda value: isinstance(value, bool),
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "null": lambda value: value is None,
}


def _is_number(value: Any) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


class _Problems:
    """Errors found so far, in the order met (schema order, then unknown arguments)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, location: str, message: str) -> None:
        if len(self.items) < _MAX_ERRORS:
            self.items.append((location, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def validate_args(
    schema: Mapping[str, Any] | None, args: Mapping[str, Any], *, location: str = "args"
) -> dict[str, Any]:
    """``args`` with defaults applied, if they satisfy ``schema``.

    Raises:
        InvalidRequest: naming the first argument at fault (``location`` is e.g.
            ``"args.a"`` or ``"args.items[2]"``); ``data["errors"]`` lists every fault
            found (up to twenty) as ``{"location", "message"}``.
    """
    result = dict(args)
    if not isinstance(schema, Mapping):
        return result
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return result
    problems = _Problems()
    required = _names(schema.get("required"))
    for name in _ordered(schema, properties):
        where = f"{location}.{name}"
        if name in args:
            _check(properties[name], args[name], where, problems)
        elif name in required:
            problems.add(where, "missing required argument")
        elif isinstance(properties[name], Mapping) and "default" in properties[name]:
            result[name] = copy.deepcopy(properties[name]["default"])
    extra = schema.get("additionalProperties", False)
    for name, value in args.items():
        if name in properties:
            continue
        where = f"{location}.{name}"
        if extra is False:
            known = ", ".join(_ordered(schema, properties)) or "no arguments"
            problems.add(where, f"unknown argument; the script takes: {known}")
        elif isinstance(extra, Mapping):
            _check(extra, value, where, problems)
    if problems:
        first_location, first_message = problems.items[0]
        raise InvalidRequest(
            first_message,
            location=first_location,
            errors=[{"location": where, "message": message} for where, message in problems.items],
        )
    return result


def _names(value: Any) -> frozenset[str]:
    if isinstance(value, list):
        return frozenset(name for name in value if isinstance(name, str))
    return frozenset()


def _ordered(schema: Mapping[str, Any], properties: Mapping[str, Any]) -> list[str]:
    """Property names in declaration order (``order``, since jsonb sorts keys)."""
    order = schema.get("order")
    names = [name for name in order if name in properties] if isinstance(order, list) else []
    names.extend(name for name in properties if name not in names)
    return names


def _check(schema: Any, value: Any, where: str, problems: _Problems) -> None:
    """Record in ``problems`` what is wrong with ``value`` at ``where``."""
    if not isinstance(schema, Mapping):
        return  # ``true`` or a malformed schema: anything goes
    if value is None and schema.get("nullable") is True:
        return
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt.startswith("resource-"):
        _check_resource(fmt.removeprefix("resource-"), value, where, problems)
        return
    if not _check_type(schema, value, where, problems):
        return
    choices = schema.get("enum")
    if isinstance(choices, list) and not any(_same(value, choice) for choice in choices):
        shown = ", ".join(_show(choice) for choice in choices)
        problems.add(where, f"must be one of {shown}; got {_describe(value)}")
        return
    if "const" in schema and not _same(value, schema["const"]):
        problems.add(where, f"must be {_show(schema['const'])}; got {_describe(value)}")
        return
    if not _check_alternatives(schema, value, where, problems):
        return
    if isinstance(value, str):
        _check_string(schema, value, where, problems)
    elif _is_number(value):
        _check_number(schema, value, where, problems)
    elif isinstance(value, list):
        _check_array(schema, value, where, problems)
    elif isinstance(value, dict):
        _check_object(schema, value, where, problems)


def _check_resource(kind: str, value: Any, where: str, problems: _Problems) -> None:
    if isinstance(value, dict):
        return
    if (
        isinstance(value, str)
        and value.startswith(RESOURCE_REF_PREFIX)
        and len(value) > len(RESOURCE_REF_PREFIX)
    ):
        return
    problems.add(
        where,
        f"expected a {kind} resource: an object, or a reference "
        f"'{RESOURCE_REF_PREFIX}<path>'; got {_describe(value)}",
    )


def _types(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [name for name in declared if isinstance(name, str)]
    return []


def _check_type(schema: Mapping[str, Any], value: Any, where: str, problems: _Problems) -> bool:
    types = [name for name in _types(schema) if name in _TYPE_CHECKS]
    if not types or any(_TYPE_CHECKS[name](value) for name in types):
        return True
    problems.add(where, f"expected {' or '.join(types)}, got {_describe(value)}")
    return False


def _check_alternatives(
    schema: Mapping[str, Any], value: Any, where: str, problems: _Problems
) -> bool:
    for branch in schema.get("allOf") or []:
        before = len(problems.items)
        _check(branch, value, where, problems)
        if len(problems.items) > before:
            return False
    for keyword in ("anyOf", "oneOf"):
        branches = schema.get(keyword)
        if not isinstance(branches, list) or not branches:
            continue
        reasons: list[str] = []
        for branch in branches:
            trial = _Problems()
            _check(branch, value, where, trial)
            if not trial:
                break
            spot, reason = trial.items[0]
            reasons.append(reason if spot == where else f"{spot}: {reason}")
        else:
            problems.add(where, _none_matches(branches, value, reasons))
            return False
    return True


def _none_matches(branches: list[Any], value: Any, reasons: list[str]) -> str:
    typed = [_types(branch) for branch in branches if isinstance(branch, Mapping)]
    if len(typed) == len(branches) and all(typed):
        names = list(dict.fromkeys(name for group in typed for name in group))
        if not any(name in _TYPE_CHECKS and _TYPE_CHECKS[name](value) for name in names):
            return f"expected {' or '.join(names)}, got {_describe(value)}"
    return "matches none of the allowed forms: " + "; ".join(reasons)


def _bound(schema: Mapping[str, Any], keyword: str) -> float | None:
    value = schema.get(keyword)
    return float(value) if _is_number(value) else None


def _count(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _check_string(schema: Mapping[str, Any], value: str, where: str, problems: _Problems) -> None:
    low, high = _bound(schema, "minLength"), _bound(schema, "maxLength")
    if low is not None and len(value) < low:
        problems.add(where, f"must be at least {_count(low)} characters long, got {len(value)}")
    elif high is not None and len(value) > high:
        problems.add(where, f"must be at most {_count(high)} characters long, got {len(value)}")


_NUMBER_BOUNDS: Final[tuple[tuple[str, Callable[[float, float], bool], str], ...]] = (
    ("minimum", lambda value, bound: value >= bound, "at least"),
    ("maximum", lambda value, bound: value <= bound, "at most"),
    ("exclusiveMinimum", lambda value, bound: value > bound, "greater than"),
    ("exclusiveMaximum", lambda value, bound: value < bound, "less than"),
)


def _check_number(schema: Mapping[str, Any], value: float, where: str, problems: _Problems) -> None:
    for keyword, holds, words in _NUMBER_BOUNDS:
        bound = schema.get(keyword)
        if _is_number(bound) and not holds(value, bound):
            problems.add(where, f"must be {words} {_show(bound)}, got {_show(value)}")
            return


def _check_array(
    schema: Mapping[str, Any], value: list[Any], where: str, problems: _Problems
) -> None:
    low, high = _bound(schema, "minItems"), _bound(schema, "maxItems")
    if low is not None and len(value) < low:
        problems.add(where, f"must have at least {_count(low)} items, got {len(value)}")
        return
    if high is not None and len(value) > high:
        problems.add(where, f"must have at most {_count(high)} items, got {len(value)}")
        return
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            _check(items, item, f"{where}[{index}]", problems)


def _check_object(
    schema: Mapping[str, Any], value: dict[str, Any], where: str, problems: _Problems
) -> None:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = _names(schema.get("required"))
    for name in _ordered(schema, properties):
        if name in value:
            _check(properties[name], value[name], f"{where}.{name}", problems)
        elif name in required:
            problems.add(f"{where}.{name}", "missing required field")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            continue
        if extra is False:
            problems.add(f"{where}.{name}", "unknown field")
        elif isinstance(extra, Mapping):
            _check(extra, item, f"{where}.{name}", problems)


def _same(value: Any, expected: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    if _is_number(value) and _is_number(expected):
        return bool(value == expected)
    if isinstance(value, list) and isinstance(expected, list):
        return len(value) == len(expected) and all(map(_same, value, expected))
    if isinstance(value, dict) and isinstance(expected, dict):
        return value.keys() == expected.keys() and all(
            _same(value[key], expected[key]) for key in value
        )
    return type(value) is type(expected) and bool(value == expected)


def _show(value: Any) -> str:
    """A short JSON-like rendering of a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 3] + "..."
        return repr(text)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _describe(value: Any) -> str:
    """The JSON type of ``value`` and the value: ``string 'x'``, ``integer 3``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {_show(value)}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {_show(value)}"
    if isinstance(value, list):
        return f"array of {len(value)} items" if value else "an empty array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
