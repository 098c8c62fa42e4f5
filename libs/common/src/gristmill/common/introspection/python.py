"""Read a Python script's ``main`` signature into a JSON Schema, without running it.

The script is parsed with :mod:`ast` and nothing else: it is never imported, its
imports are never resolved, its defaults are read with :func:`ast.literal_eval`.

Choices worth knowing:

* ``*args`` and ``**kwargs`` are left out of the schema (a form cannot fill them)
  and a note says so; the script still runs, with nothing in them.
* A positional-only parameter (before ``/``) is kept, with a note, because the
  arguments are passed by name.
* An explicit ``Any`` keeps no type even with a default; a parameter without an
  annotation takes its type from a literal default.
* A default that is not a literal (``datetime.now()``) makes the parameter optional
  but is not shown; a note says so.
* If ``main`` is defined more than once at the top level, the last one counts, as
  it would at run time.
"""

from __future__ import annotations

import ast
import warnings

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection._annotations import Field, ModuleIndex, SchemaBuilder
from gristmill.common.introspection._docstrings import parse_docstring
from gristmill.common.introspection.signature import ScriptSignature

__all__ = ["parse_python"]

_FunctionDef = ast.FunctionDef | ast.AsyncFunctionDef


def parse_python(code: str) -> ScriptSignature:
    """The input schema of ``main`` in ``code``.

    Raises:
        InvalidRequest: the code does not parse (``location`` is ``"line L, column C"``)
            or defines no top-level ``main`` function.
    """
    module = _parse(code)
    main = _find_main(module)
    builder = SchemaBuilder(ModuleIndex.of(module))
    docstring = parse_docstring(ast.get_docstring(main))
    fields = list(_parameters(main, builder))
    schema = builder.object_schema(fields, docstring.params, top_level=True)
    return ScriptSignature(
        language="python3",
        schema=schema,
        is_async=isinstance(main, ast.AsyncFunctionDef),
        summary=docstring.summary,
        notes=tuple(builder.notes),
    )


def _parse(code: str) -> ast.Module:
    try:
        # The compiler warns about legal code (``"\d"``, ``x is 1``); that is the
        # script's business, and under ``-W error`` it would turn into a SyntaxError.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code, filename="<script>", type_comments=False)
    except SyntaxError as error:
        line = error.lineno or 1
        column = error.offset or 1
        raise InvalidRequest(
            f"the script is not valid Python: {error.msg}", location=f"line {line}, column {column}"
        ) from None
    except ValueError as error:  # e.g. a NUL byte in the source
        raise InvalidRequest(f"the script is not valid Python: {error}") from None
    except (RecursionError, MemoryError):
        raise InvalidRequest("the script is nested too deeply to be read") from None


def _find_main(module: ast.Module) -> _FunctionDef:
    found: _FunctionDef | None = None
    for stmt in module.body:
        if isinstance(stmt, _FunctionDef) and stmt.name == "main":
            found = stmt
    if found is None:
        raise InvalidRequest(
            "the script defines no `main` function; "
            "add a top-level `def main(...)` whose parameters are the script's inputs"
        )
    return found


def _parameters(main: _FunctionDef, builder: SchemaBuilder) -> list[Field]:
    arguments = main.args
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults))
    defaults.extend(arguments.defaults)
    pairs = [*zip(positional, defaults, strict=True)]
    pairs.extend(zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True))
    seen: set[str] = set()
    for parameter, _ in pairs:
        if parameter.arg in seen:  # ast accepts it; compiling the script would not
            raise InvalidRequest(
                f"the script is not valid Python: duplicate argument '{parameter.arg}' "
                "in function definition",
                location=f"line {parameter.lineno}, column {parameter.col_offset + 1}",
            )
        seen.add(parameter.arg)
    for parameter in arguments.posonlyargs:
        builder.note(
            parameter.lineno,
            f"`{parameter.arg}` is positional-only but arguments are passed by name; "
            "remove the `/` from main's signature",
        )
    for rest, stars in ((arguments.vararg, "*"), (arguments.kwarg, "**")):
        if rest is not None:
            builder.note(
                rest.lineno,
                f"`{stars}{rest.arg}` is not part of the form; it will always be empty",
            )
    return [
        Field(
            name=parameter.arg,
            annotation=parameter.annotation,
            line=parameter.lineno,
            default=default,
        )
        for parameter, default in pairs
    ]
