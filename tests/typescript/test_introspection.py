"""``parse_typescript``: TypeScript ``main`` signatures → JSON Schema, without running them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection import (
    JSON_SCHEMA_DIALECT,
    ScriptSignature,
    parse_python,
    parse_typescript,
)
from gristmill.common.scripts import infer_schema

#: The TypeScript twin of the Python seed example (tests/introspection).
SEED = """
type Postgresql = {
  host: string;
  port: number;
  user: string;
  dbname: string;
  sslmode: string;
  password: string;
};

export async function main(
  a: number,
  b: "my" | "enum",
  c: Postgresql,
  d = "inferred type string from default arg",
  e = { nested: "object" }
) {
  return { foo: a };
}
"""

PYTHON_SEED = """
from typing import TypedDict, Literal

class postgresql(TypedDict):
    host: str

def main(a: int, b: Literal["my", "enum"], c: postgresql, d="inferred type string from default arg", e={"nested": "object"}):
    ...
"""  # noqa: E501 - the seed's signature is kept on one line, as in its source


def test_seed_example() -> None:
    signature = parse_typescript(SEED)
    assert signature == ScriptSignature(
        language="bun",
        schema={
            "$schema": JSON_SCHEMA_DIALECT,
            "type": "object",
            "properties": {
                "a": {"type": "number"},
                "b": {"type": "string", "enum": ["my", "enum"]},
                "c": {"type": "object", "format": "resource-postgresql"},
                "d": {"type": "string", "default": "inferred type string from default arg"},
                "e": {"type": "object", "default": {"nested": "object"}},
            },
            "required": ["a", "b", "c"],
            "order": ["a", "b", "c", "d", "e"],
        },
        is_async=True,
        summary=None,
        notes=(),
    )


@pytest.mark.parametrize(
    "declaration", ["", "type Postgresql = object;", "interface Postgresql {}"]
)
def test_seed_maps_like_its_python_twin(declaration: str) -> None:
    code = SEED.replace(SEED[: SEED.index("export")], declaration + "\n")
    typescript = parse_typescript(code).schema
    python = parse_python(PYTHON_SEED).schema
    # The one difference is the language's: TypeScript has no integer type.
    python["properties"]["a"] = {"type": "number"}
    assert typescript == python


def _array_of(json_type: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": json_type}}


def _resource(name: str) -> dict[str, Any]:
    return {"type": "object", "format": f"resource-{name}"}


def _param(parameter: str, preamble: str = "") -> tuple[dict[str, Any], bool]:
    code = f"{preamble}\nexport async function main({parameter}) {{}}\n"
    schema = parse_typescript(code).schema
    return schema["properties"]["x"], "x" in schema["required"]


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        ("x: string", {"type": "string"}),
        ("x: number", {"type": "number"}),
        ("x: boolean", {"type": "boolean"}),
        ("x: Date", {"type": "string", "format": "date-time"}),
        ("x: object", {"type": "object"}),
        ("x: Record<string, any>", {"type": "object"}),
        ("x: Record<string, Array<number>>", {"type": "object"}),
        ("x: string[]", {"type": "array", "items": {"type": "string"}}),
        ("x: Array<number>", {"type": "array", "items": {"type": "number"}}),
        ("x: readonly boolean[]", {"type": "array", "items": {"type": "boolean"}}),
        ("x: string[][]", {"type": "array", "items": _array_of("string")}),
        ("x: any[]", {"type": "array"}),
        ("x: [string, string]", {"type": "array", "items": {"type": "string"}}),
        ("x: [name: string, age: number]", {"type": "array"}),
        ('x: "my" | "enum"', {"type": "string", "enum": ["my", "enum"]}),
        ("x: | 'a' | 'b'", {"type": "string", "enum": ["a", "b"]}),
        ('x: ("a" | "b")[]', {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}),
        ("x: 1 | 2 | 3", {"type": "number", "enum": [1, 2, 3]}),
        ("x: true | false", {"type": "boolean"}),
        ("x: string | number", {"anyOf": [{"type": "string"}, {"type": "number"}]}),
        ("x: `id-${string}`", {"type": "string"}),
        ("x: any", {}),
        ("x: unknown", {}),
        ("x: Promise<string>", {"type": "string"}),
        ("x: { a: string; b?: number }", {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "number"}},
            "required": ["a"],
            "order": ["a", "b"],
        }),
        ("x: { [key: string]: number }", {"type": "object"}),
        ("x: {}", {"type": "object"}),
        ("x: { a: string } & { b: boolean }", {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}},
            "required": ["a", "b"],
            "order": ["a", "b"],
        }),
    ],
)  # fmt: skip
def test_types(parameter: str, expected: dict[str, Any]) -> None:
    schema, required = _param(parameter)
    assert schema == expected
    assert required


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        ("x: Postgresql", {"type": "object", "format": "resource-postgresql"}),
        ("x: S3Object", {"type": "object", "format": "resource-s3_object"}),
        ("x: MyCustomApi", {"type": "object", "format": "resource-my_custom_api"}),
        ('x: Resource<"postgresql">', {"type": "object", "format": "resource-postgresql"}),
        ('x: wmill.Resource<"slack">', {"type": "object", "format": "resource-slack"}),
        ("x: wmill.Postgresql", {"type": "object", "format": "resource-postgresql"}),
    ],
)
def test_resource_types(parameter: str, expected: dict[str, Any]) -> None:
    schema, _ = _param(parameter, 'import * as wmill from "windmill-client";')
    assert schema == expected


@pytest.mark.parametrize(
    ("preamble", "annotation", "expected"),
    [
        # A declared type named after a resource type is that resource type ...
        ("type Slack = { token: string };", "Slack", _resource("slack")),
        ("interface Slack { token: string }", "Slack", _resource("slack")),
        ("type Slack = object;", "Slack", _resource("slack")),
        ("type postgres = object;", "postgres", _resource("postgres")),
        ("type CMyApi = { url: string };", "CMyApi", _resource("c_my_api")),
        # ... any other declared type is expanded.
        ("type Slack = 'a' | 'b';", "Slack", {"type": "string", "enum": ["a", "b"]}),
        ("type Point = { x: number };", "Point", {
            "type": "object", "properties": {"x": {"type": "number"}},
            "required": ["x"], "order": ["x"],
        }),
    ],
)  # fmt: skip
def test_declared_resource_types(preamble: str, annotation: str, expected: dict[str, Any]) -> None:
    schema, _ = _param(f"x: {annotation}", preamble)
    assert schema == expected


def test_declared_types_are_expanded() -> None:
    preamble = """
        /** Retry settings. */
        interface Retry {
          /** How many times. */
          times: number;
          backoff?: "linear" | "exponential";
        }
        interface Options extends Retry {
          // Say more.
          verbose: boolean;
          callback(): void;
          readonly [key: string]: unknown;
        }
        type Level = "debug" | "info";
        enum Color { Red = "red", Green = "green" }
        enum Size { Small = 1, Large }
    """
    code = textwrap.dedent(preamble) + (
        "export function main(options: Options, level: Level, color: Color, size: Size) {}\n"
    )
    properties = parse_typescript(code).schema["properties"]
    assert properties["options"] == {
        "type": "object",
        "properties": {
            "times": {"type": "number", "description": "How many times."},
            "backoff": {"type": "string", "enum": ["linear", "exponential"]},
            "verbose": {"type": "boolean", "description": "Say more."},
        },
        "required": ["times", "verbose"],
        "order": ["times", "backoff", "verbose"],
    }
    assert properties["level"] == {"type": "string", "enum": ["debug", "info"]}
    assert properties["color"] == {"type": "string", "enum": ["red", "green"]}
    assert properties["size"] == {"type": "number", "enum": [1, 2]}


def test_a_type_that_refers_to_itself() -> None:
    code = "type Tree = { name: string; children: Tree[] };\nexport function main(x: Tree) {}\n"
    signature = parse_typescript(code)
    assert signature.schema["properties"]["x"]["properties"]["children"] == {
        "type": "array",
        "items": {"type": "object"},
    }
    assert signature.notes == (
        "line 1: `Tree` refers to itself; its inner level is a plain object",
    )


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        ('x = "text"', {"type": "string", "default": "text"}),
        ("x = 'single'", {"type": "string", "default": "single"}),
        ("x = `template`", {"type": "string", "default": "template"}),
        ('x = "esc\\"aped\\n\\u00e9"', {"type": "string", "default": 'esc"aped\né'}),
        ("x = 3", {"type": "number", "default": 3}),
        ("x = -2.5", {"type": "number", "default": -2.5}),
        ("x = 0x1F", {"type": "number", "default": 31}),
        ("x = 1_000", {"type": "number", "default": 1000}),
        ("x = 1e3", {"type": "number", "default": 1000.0}),
        ("x = true", {"type": "boolean", "default": True}),
        ("x = null", {"nullable": True}),
        ("x = undefined", {}),
        ("x = [1, 2]", {"type": "array", "items": {"type": "number"}, "default": [1, 2]}),
        ('x = [1, "a"]', {"type": "array", "default": [1, "a"]}),
        ("x = []", {"type": "array", "default": []}),
        ('x = { nested: "object" }', {"type": "object", "default": {"nested": "object"}}),
        (
            "x = { 'a-b': [1, { c: null }], 2: true, }",
            {"type": "object", "default": {"a-b": [1, {"c": None}], "2": True}},
        ),
        ('x = ["a", "b"] as const', {"type": "array", "items": {"type": "string"},
                                     "default": ["a", "b"]}),
        ('x = { a: 1 } satisfies Record<string, number>', {"type": "object", "default": {"a": 1}}),
        # Annotated: the annotation gives the type, the literal the default.
        ('x: "a" | "b" = "b"', {"type": "string", "enum": ["a", "b"], "default": "b"}),
        ("x: number | null = null", {"type": "number", "nullable": True}),
        ("x: string[] = []", {"type": "array", "items": {"type": "string"}, "default": []}),
        # Not a literal: optional, nothing shown.
        ("x = new Date()", {}),
        ("x: Date = new Date()", {"type": "string", "format": "date-time"}),
        ("x = Date.now() - 1000", {}),
        ('x = "a" + "b"', {}),
        ("x = `at ${Date.now()}`", {}),
        ("x = [1, other]", {}),
        ("x = 10n", {}),
        ("x = new Map<string, number>()", {}),
        # Optional without a default.
        ("x?: string", {"type": "string"}),
        ("x: string | undefined", {"type": "string"}),
        ("x: string | null", {"type": "string", "nullable": True}),
        ('x?: "a" | "b" | null', {"type": "string", "enum": ["a", "b"], "nullable": True}),
    ],
)  # fmt: skip
def test_defaults_and_optional(parameter: str, expected: dict[str, Any]) -> None:
    schema, required = _param(parameter)
    assert schema == expected
    assert not required


def test_non_literal_default_is_noted_with_its_line() -> None:
    signature = parse_typescript("export function main(\n  a: string,\n  x = Date.now(),\n) {}\n")
    assert signature.schema["required"] == ["a"]
    assert signature.notes == (
        "line 3: the default of `x` is not a JSON literal; it is left to the script and not "
        "shown in the form",
    )


def test_jsdoc_gives_the_summary_and_descriptions() -> None:
    code = """
        import { x } from "npm:lib";

        /**
         * Send a greeting
         * to someone.
         *
         * More text that is not the summary.
         * @param name - Who to greet.
         * @param {number} [times] How many
         *   times.
         * @returns the greeting
         */
        export async function main(
          name: string,
          times = 1,
          /** Shout it. */ loud = false,
          // The language.
          lang: "en" | "fr" = "en",
        ) {}
    """
    signature = parse_typescript(textwrap.dedent(code))
    assert signature.summary == "Send a greeting to someone."
    descriptions = {k: v.get("description") for k, v in signature.schema["properties"].items()}
    assert descriptions == {
        "name": "Who to greet.",
        "times": "How many times.",
        "loud": "Shout it.",
        "lang": "The language.",
    }


@pytest.mark.parametrize(
    ("code", "order", "is_async"),
    [
        ("export function main(a, b) {}", ["a", "b"], False),
        ("export async function main(a: string) {}", ["a"], True),
        ("export const main = async (a: number, b = 2) => a + b;", ["a", "b"], True),
        ("export const main = (a: number): number => a;", ["a"], False),
        ("export const main = async x => x;", ["x"], True),
        ("export const main = async function (a: string) {};", ["a"], True),
        ("function main(a: string) {}\nexport { main };", ["a"], False),
        ("export function main<T extends object>(a: T, b: Array<T>) {}", ["a", "b"], False),
        ("export function main(this: Window, a: string) {}", ["a"], False),
        (
            "export function main(a: string): void;\nexport function main(a: any) {}",
            ["a"],
            False,
        ),
        ("export function main(a: string, ...rest: string[]) {}", ["a"], False),
        ("export function main({ a, b }: { a: string; b: string }, c: number) {}", ["c"], False),
        ("export async function main(\n  a: string,\n  b: number,\n) {}", ["a", "b"], True),
        # Only the top level counts: a nested `main` is not the entry point.
        ("function outer() { function main(x) {} }\nexport function main(y) {}", ["y"], False),
    ],
)
def test_forms_of_main(code: str, order: list[str], is_async: bool) -> None:
    signature = parse_typescript(code)
    assert signature.args == order
    assert signature.is_async is is_async


def test_rest_and_destructured_parameters_are_noted() -> None:
    signature = parse_typescript("export function main({ a }: any, b: string, ...more: any[]) {}")
    assert signature.notes == (
        "line 1: a destructured parameter is not part of the form; it receives `undefined`",
        "line 1: `...more` is not part of the form; it will always be empty",
    )


def test_a_type_the_parser_does_not_know_accepts_anything() -> None:
    signature = parse_typescript(
        "export function main(x: typeof import('./y'), y: keyof Foo, z: (a: string) => void) {}"
    )
    assert signature.schema["properties"] == {"x": {}, "y": {}, "z": {}}
    assert signature.args == ["x", "y", "z"]


def test_the_rest_of_the_file_is_lexed_not_understood() -> None:
    code = r"""
        const re = /[{(]"'`/g;
        const ratio = total / count / 2;
        const text = `nested ${`template ${"with } brace"}`} and ${ { a: 1 }.a }`;
        const tag = <T,>(x: T) => x;
        class A { #secret = 1; get value() { return this.#secret; } }
        // a comment with ( and {
        /* and a block one with ) */
        export async function main(a: string) {
          if (a.length > 1) { return /}/.test(a) ? `x${a}` : "y"; }
        }
    """
    assert parse_typescript(textwrap.dedent(code)).args == ["a"]


@pytest.mark.parametrize(
    ("code", "message", "location"),
    [
        ('export function main(a: string) {\n  return "open;\n}\n', "unterminated string",
         "line 2, column 10"),
        ("export function main() {}\n/* never closed", "unterminated comment", "line 2, column 1"),
        ("export function main() {\n  return `x;\n}\n", "unterminated template literal",
         "line 2, column 10"),
        ("export function main(a: string {\n}\n", "`(` is never closed", "line 1, column 21"),
        ("export function main(a: string) {\n  if (a) {\n}\n", "`{` is never closed",
         "line 1, column 33"),
        ("export function main(a: string)) {}\n", "unexpected `)`", "line 1, column 32"),
        ("export function main(a: , b: string) {}\n", "expected the type of `a`, found `,`",
         "line 1, column 25"),
        ("export function main(a b) {}\n", "expected `,` or `)` after a parameter, found `b`",
         "line 1, column 24"),
    ],
)  # fmt: skip
def test_syntax_errors_have_a_location(code: str, message: str, location: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_typescript(code)
    assert caught.value.location == location
    assert caught.value.message == f"the script is not valid TypeScript: {message}"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("const x = 1;\n", "the script defines no `main` function"),
        ("function main() {}\n", "`main` (line 1) is not exported"),
        ("export default async function main() {}\n", "`main` (line 1) is not exported"),
    ],
)
def test_main_must_exist_and_be_exported(code: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_typescript(code)
    assert caught.value.message.startswith(message)
    assert caught.value.location is None


def test_source_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"""
        import {{ writeFileSync }} from "node:fs";
        writeFileSync({str(marker)!r}, "ran");
        export function main(
          a = (() => {{ writeFileSync({str(marker)!r}, "ran"); return 1; }})(),
        ) {{}}
    """
    assert parse_typescript(code).args == ["a"]
    assert not marker.exists()


@pytest.mark.parametrize("language", ["bun", "deno", "nativets"])
def test_saved_scripts_infer_their_schema(language: str) -> None:
    assert infer_schema(language, SEED) == parse_typescript(SEED).schema
    assert parse_typescript(SEED, language=language).language == language
