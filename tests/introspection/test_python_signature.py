"""``parse_python``: defaults, parameter kinds, docstrings, async, errors, the seed case."""

from __future__ import annotations

import textwrap
from typing import Any

import msgspec
import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection import JSON_SCHEMA_DIALECT, ScriptSignature, parse_python

SEED = """
import os
import wmill
from typing import TypedDict, Literal

class postgresql(TypedDict):
    host: str
    port: int
    user: str
    dbname: str
    sslmode: str
    password: str

def main(a: int, b: Literal["my", "enum"], c: postgresql, d="inferred type string from default arg", e={"nested": "object"}):
    ...
"""  # noqa: E501 - the acceptance case is quoted verbatim, long line included


def test_seed_example() -> None:
    signature = parse_python(SEED)
    assert signature == ScriptSignature(
        language="python3",
        schema={
            "$schema": JSON_SCHEMA_DIALECT,
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "string", "enum": ["my", "enum"]},
                "c": {"type": "object", "format": "resource-postgresql"},
                "d": {"type": "string", "default": "inferred type string from default arg"},
                "e": {"type": "object", "default": {"nested": "object"}},
            },
            "required": ["a", "b", "c"],
            "order": ["a", "b", "c", "d", "e"],
        },
        is_async=False,
        summary=None,
        notes=(),
    )
    assert signature.args == ["a", "b", "c", "d", "e"]


def _param(signature: str, preamble: str = "") -> tuple[dict[str, Any], bool]:
    code = f"{preamble}\n\ndef main({signature}):\n    pass\n"
    schema = parse_python(code).schema
    return schema["properties"]["x"], "x" in schema["required"]


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        # Unannotated: the type comes from the literal default.
        ('x="text"', {"type": "string", "default": "text"}),
        ("x=3", {"type": "integer", "default": 3}),
        ("x=-3", {"type": "integer", "default": -3}),
        ("x=2.5", {"type": "number", "default": 2.5}),
        ("x=True", {"type": "boolean", "default": True}),
        ('x={"nested": "object"}', {"type": "object", "default": {"nested": "object"}}),
        ("x=[1, 2]", {"type": "array", "items": {"type": "integer"}, "default": [1, 2]}),
        ('x=[1, "a"]', {"type": "array", "default": [1, "a"]}),
        ("x=()", {"type": "array", "default": []}),
        ('x=b"hi"', {"type": "string", "contentEncoding": "base64", "default": "aGk="}),
        ("x=None", {"nullable": True}),
        # Annotated: the annotation wins, the literal is the default.
        ("x: int = 5", {"type": "integer", "default": 5}),
        ("x: float = 1", {"type": "number", "default": 1}),
        ('x: list[str] = ["a"]', {"type": "array", "items": {"type": "string"}, "default": ["a"]}),
        ("x: int = None", {"type": "integer", "nullable": True}),
        ("x: Optional[int] = 3", {"type": "integer", "nullable": True, "default": 3}),
        ("x: Any = 3", {"default": 3}),
        ('x: Literal["a", "b"] = "b"', {"type": "string", "enum": ["a", "b"], "default": "b"}),
        # Not a JSON literal: optional, default not shown.
        ("x=os.environ['HOME']", {}),
        ("x: datetime = datetime.now()", {"type": "string", "format": "date-time"}),
        ("x=1j", {}),
        ("x={1: 'a'}", {"type": "object"}),
        ("x=1e999", {"type": "number"}),
        # Keyword-only parameters are ordinary inputs.
        ("*, x: int = 1", {"type": "integer", "default": 1}),
    ],
)
def test_defaults(parameter: str, expected: dict[str, Any]) -> None:
    preamble = "import os\nfrom typing import *\nfrom datetime import datetime"
    schema, required = _param(parameter, preamble)
    assert schema == expected
    assert not required


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [("x", {}), ("x: Any", {}), ("*, x: int", {"type": "integer"})],
)
def test_without_default_is_required(parameter: str, expected: dict[str, Any]) -> None:
    schema, required = _param(parameter, "from typing import Any")
    assert schema == expected
    assert required


def test_non_literal_default_is_noted_with_its_line() -> None:
    signature = parse_python("import os\n\ndef main(\n    a: str,\n    x=os.getcwd(),\n): ...\n")
    assert signature.schema["required"] == ["a"]
    assert signature.notes == (
        "line 5: the default of `x` is not a JSON literal; it is left to the script and not "
        "shown in the form",
    )


def test_parameter_order_across_kinds() -> None:
    signature = parse_python("def main(a, /, b: int, c=1, *rest, d: str, e='x', **extra): ...")
    assert signature.schema["order"] == ["a", "b", "c", "d", "e"]
    assert signature.schema["required"] == ["a", "b", "d"]
    assert "rest" not in signature.schema["properties"]
    assert "extra" not in signature.schema["properties"]
    assert signature.notes == (
        "line 1: `a` is positional-only but arguments are passed by name; "
        "remove the `/` from main's signature",
        "line 1: `*rest` is not part of the form; it will always be empty",
        "line 1: `**extra` is not part of the form; it will always be empty",
    )


@pytest.mark.parametrize(
    ("code", "is_async"),
    [
        ("def main(): pass", False),
        ("async def main(): pass", True),
        ("async def main(): pass\ndef main(): pass", False),  # the last definition wins
        ("def main(): pass\nasync def main(x: int): pass", True),
    ],
)
def test_async_main(code: str, is_async: bool) -> None:
    assert parse_python(code).is_async is is_async


def test_the_last_main_defines_the_inputs() -> None:
    signature = parse_python("def main(a: int): ...\ndef main(b: str): ...\n")
    assert signature.args == ["b"]


DOCSTRINGS: list[tuple[str, str, str | None, dict[str, str]]] = [
    (
        "google",
        '''
        """Send a greeting.

        Longer text that is not part of the summary.

        Args:
            name: Who to greet.
            times (int): How many times,
                at most ten.
            loud (bool, optional): Shout it.

        Returns:
            The greeting.
        """
        ''',
        "Send a greeting.",
        {"name": "Who to greet.", "times": "How many times, at most ten.", "loud": "Shout it."},
    ),
    (
        "rest",
        '''
        """Send a greeting
        over two lines.

        :param name: Who to greet.
        :param int times: How many
            times.
        :type times: int
        :returns: the greeting
        """
        ''',
        "Send a greeting over two lines.",
        {"name": "Who to greet.", "times": "How many times."},
    ),
    (
        "numpy",
        '''
        """Send a greeting.

        Parameters
        ----------
        name : str
            Who to greet.
        times : int
            How many times.

        Returns
        -------
        str
            The greeting.
        """
        ''',
        "Send a greeting.",
        {"name": "Who to greet.", "times": "How many times."},
    ),
    (
        "args only",
        '''
        """
        Args:
            name: Who to greet.
        """
        ''',
        None,
        {"name": "Who to greet."},
    ),
    ("none", "pass", None, {}),
]


@pytest.mark.parametrize(
    ("docstring", "summary", "descriptions"),
    [case[1:] for case in DOCSTRINGS],
    ids=[case[0] for case in DOCSTRINGS],
)
def test_docstrings(docstring: str, summary: str | None, descriptions: dict[str, str]) -> None:
    body = textwrap.indent(textwrap.dedent(docstring).strip(), "    ")
    signature = parse_python(f"def main(name: str, times: int = 1, loud=False):\n{body}\n")
    assert signature.summary == summary
    found = {
        name: prop["description"]
        for name, prop in signature.schema["properties"].items()
        if "description" in prop
    }
    assert found == descriptions


@pytest.mark.parametrize(
    ("code", "location"),
    [
        ("def main(:\n    pass\n", "line 1, column 10"),
        ("import os\n\ndef main(a: int)\n    return a\n", "line 3, column 17"),
        ("def main(a, a): pass\n", "line 1, column 13"),
        ("def main(\n    a: int,\n    *,\n    a: str,\n): pass\n", "line 4, column 5"),
        ('x = "unterminated\n', "line 1, column 5"),
    ],
)
def test_syntax_error_has_line_and_column(code: str, location: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_python(code)
    assert caught.value.location == location
    assert caught.value.message.startswith("the script is not valid Python: ")
    assert caught.value.code == "invalid_request"


def test_indentation_error_names_its_line() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_python("def main():\n  x = 1\n    y = 2\n")
    assert caught.value.location is not None
    assert caught.value.location.startswith("line 3, column ")


@pytest.mark.parametrize(
    "code",
    [
        "",
        "def handler(a: int): pass",
        "class Script:\n    def main(self): pass",
        "def outer():\n    def main(): pass",
        "main = lambda: 1",
        "if True:\n    def main(): pass",
    ],
)
def test_missing_main(code: str) -> None:
    with pytest.raises(InvalidRequest, match="defines no `main` function"):
        parse_python(code)


def test_null_byte_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="not valid Python"):
        parse_python("def main(): pass\x00")


def test_signature_round_trips_through_msgspec() -> None:
    signature = parse_python(SEED)
    encoded = msgspec.json.encode(signature)
    assert msgspec.json.decode(encoded, type=ScriptSignature) == signature


def test_compiler_warnings_do_not_reject_a_valid_script() -> None:
    # The suite runs with warnings as errors; these lines only warn when compiled.
    code = (
        'PATTERN = "\\d+"\n'
        'assert (1, "always true")\n\n'
        'def main(x: str = "\\w"):\n'
        "    return x is 1\n"
    )
    assert parse_python(code).schema["properties"]["x"] == {"type": "string", "default": "\\w"}
