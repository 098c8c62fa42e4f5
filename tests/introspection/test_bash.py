"""``parse_bash``: positional-argument assignments → string properties."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection import JSON_SCHEMA_DIALECT, parse_bash


@pytest.mark.parametrize(
    ("line", "expected", "required"),
    [
        ('x="$1"', {"type": "string"}, True),
        ("x=$1", {"type": "string"}, True),
        ('x="${1}"', {"type": "string"}, True),
        ("x=${1}", {"type": "string"}, True),
        ("local x=$1", {"type": "string"}, True),
        ('  local x="$1"', {"type": "string"}, True),
        ("declare -r x=$1", {"type": "string"}, True),
        ("readonly x=$1", {"type": "string"}, True),
        ("export x=$1", {"type": "string"}, True),
        ('x="$1" # the name', {"type": "string"}, True),
        ('x="$1"; shift', {"type": "string"}, True),
        ('x="${1:-default}"', {"type": "string", "default": "default"}, False),
        ("x=${1:-default}", {"type": "string", "default": "default"}, False),
        ('x="${1-default}"', {"type": "string", "default": "default"}, False),
        ('x="${1:-hello world}"', {"type": "string", "default": "hello world"}, False),
        ('x=${1:-"hello world"}', {"type": "string", "default": "hello world"}, False),
        ("x=${1:-'a b'}", {"type": "string", "default": "a b"}, False),
        ("x=${1:-'a}b'}", {"type": "string", "default": "a}b"}, False),
        ('x="${1:-}"', {"type": "string", "default": ""}, False),
        ('x="${1:-0}"', {"type": "string", "default": "0"}, False),
        ('local x="${1:-value}"', {"type": "string", "default": "value"}, False),
        # A computed default: optional, nothing shown.
        ('x="${1:-$HOME}"', {"type": "string"}, False),
        ("x=${1:-`date`}", {"type": "string"}, False),
        ("x=${1:-'$HOME'}", {"type": "string", "default": "$HOME"}, False),
    ],
)
def test_assignment_forms(line: str, expected: dict[str, Any], required: bool) -> None:
    signature = parse_bash(f"#!/bin/bash\n{line}\necho $x\n")
    assert signature.schema["properties"] == {"x": expected}
    assert signature.schema["required"] == (["x"] if required else [])


@pytest.mark.parametrize(
    "line",
    [
        "# x=$1",
        "x='$1'",  # single quotes: no expansion
        "x=$0",  # the script's own name
        "x=$10",  # that is ${1} followed by 0
        "x=$1suffix",
        'x="$1 and more"',
        "echo $1",
        "x=$(cat $1)",
        "1x=$1",
    ],
)
def test_not_an_input(line: str) -> None:
    assert parse_bash(f"{line}\n").schema["properties"] == {}


def test_order_follows_position_not_lines() -> None:
    code = 'c="${3:-third}"\na="$1"\n\nfunction f() {\n  local b=$2\n}\n'
    signature = parse_bash(code)
    assert signature.schema == {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "string"},
            "c": {"type": "string", "default": "third"},
        },
        "required": ["a", "b"],
        "order": ["a", "b", "c"],
    }
    assert signature.language == "bash"
    assert signature.is_async is False


def test_positions_beyond_nine_need_braces() -> None:
    code = "\n".join(f"a{n}=${n}" for n in range(1, 10)) + '\na10="${10:-x}"\n'
    signature = parse_bash(code)
    assert signature.args == [f"a{n}" for n in range(1, 11)]
    assert signature.schema["properties"]["a10"] == {"type": "string", "default": "x"}


def test_a_gap_in_positions_is_an_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_bash('a="$1"\nc="$3"\n')
    assert caught.value.location == "line 2, column 4"
    assert "`c` reads $3 but no variable reads $2" in caught.value.message


def test_the_first_assignment_of_a_position_wins() -> None:
    signature = parse_bash('a="$1"\nb="$1"\n')
    assert signature.args == ["a"]
    assert signature.notes == ("line 2: `b` reads $1 again; the input is `a`",)


@pytest.mark.parametrize(
    ("code", "summary"),
    [
        (
            "#!/bin/bash\n# Greets someone\n# politely.\n\n# Not this.\nx=$1\n",
            "Greets someone politely.",
        ),
        ("# shellcheck shell=bash\n# Does things.\n", "Does things."),
        ("x=$1\n# Too late.\n", None),
        ("", None),
    ],
)
def test_summary_is_the_header_comment(code: str, summary: str | None) -> None:
    assert parse_bash(code).summary == summary


def test_no_arguments() -> None:
    assert parse_bash("echo hello\n").schema == {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": {},
        "required": [],
        "order": [],
    }
