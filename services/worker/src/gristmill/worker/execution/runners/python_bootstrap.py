"""Run one Python job: load the user's script, call ``main(**args)``, write the result.

Imported by the job's interpreter (``python -I -S -B -X utf8 -c LOADER CODE ARGS
RESULT``, see ``python.py``; running this file as a script works too), in the job's
workdir, which then calls ``run(CODE, ARGS, RESULT)``:

* ``CODE``: the user's script, run as a module named ``main`` (not ``__main__``, so an
  ``if __name__ == "__main__":`` block stays a local-testing convenience). Tracebacks
  show it under this file name, with its lines.
* ``ARGS``: ``main``'s keyword arguments, a dict in ``marshal`` format (written by the
  worker; ``marshal`` needs no import, where ``json`` would double the start-up time).
* ``RESULT``: receives ``{"ok": true, "result": ...}`` or ``{"ok": false, "error":
  {"name", "message", "stack", "location"}}`` as JSON. The result never goes through
  stdout, so nothing the script prints can corrupt it.

Exit status 0 when ``main`` returned, 1 when the job failed (the error is in RESULT).

This file runs outside the worker's environment: standard library only, imports made
as late as possible (start-up time is per job), and Python 3.9 compatible.
"""

from __future__ import annotations

import io
import marshal
import sys

# ``typing`` costs milliseconds at start-up; annotations are never evaluated here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__: list[str] = []

_SELF = __file__
#: Deeper results are reported as not serializable rather than crashing the search.
_MAX_DEPTH = 500


def run(code_path: str, args_path: str, result_path: str) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # logs stream line by line
    with open(args_path, "rb") as f:
        args = marshal.load(f)  # noqa: S302  # written by the worker for this job, not by the user
    with open(code_path, "rb") as f:
        source = f.read()
    for name, value in args.items():
        if isinstance(value, str) and value.startswith(("$res:", "$var:")):
            try:
                args[name] = _dereference(value)
            except Exception as exc:  # reported as the job's error, naming the argument
                return _fail(
                    result_path,
                    {
                        "name": "ReferenceError",
                        "message": f"argument {name!r}: cannot read {value}: {exc}",
                        "location": f"args.{name}",
                    },
                )

    import posix  # builtin; ``os`` would cost an import

    module = type(sys)("main")
    module.__file__ = posix.getcwd() + "/" + code_path
    sys.modules["main"] = module
    sys.path.insert(0, posix.getcwd())
    sys.argv = [code_path]

    try:
        code = compile(source, code_path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes (before 3.12)
        return _fail(result_path, _syntax_error(exc, code_path, source))

    outcome: Any = None
    try:
        exec(code, module.__dict__)  # noqa: S102  # running the user's script is the point
        main = module.__dict__.get("main")
        if main is None:
            return _fail(result_path, _missing_main(code_path))
        if not callable(main):
            return _fail(result_path, _main_not_callable(main))
        try:
            outcome = main(**args)
        except TypeError as exc:
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
                # Raised by the call itself, not inside main: the arguments do not fit.
                return _fail(result_path, _bad_arguments(exc))
            raise
        if hasattr(outcome, "__await__"):
            import asyncio  # only async jobs pay for it

            outcome = asyncio.run(_await(outcome))
    except SystemExit as exc:
        if exc.code is None or exc.code == 0:
            outcome = None
        else:
            return _fail(result_path, _system_exit(exc, code_path, source))
    except BaseException as exc:  # every failure of user code is reported
        return _fail(result_path, _exception(exc, code_path, source))

    try:
        payload = _encode({"ok": True, "result": outcome})
    except (TypeError, ValueError, RecursionError) as exc:
        return _fail(result_path, _unserializable(outcome, exc))
    _write(result_path, payload)
    return 0


def _dereference(reference: str) -> Any:
    """The value behind ``$res:<path>`` (a resource, references resolved) or
    ``$var:<path>`` (a variable), read with the job's own token: access is the job's
    user's, and secret values never sit in the job's stored arguments."""
    import json
    import os
    import urllib.parse
    import urllib.request

    kind, _, path = reference.partition(":")
    base = os.environ.get("BASE_INTERNAL_URL") or os.environ.get("WM_BASE_URL")
    token = os.environ.get("WM_TOKEN")
    workspace = os.environ.get("WM_WORKSPACE")
    if not (base and token and workspace):
        raise RuntimeError("the job has no API access (no token)")
    what = "resources/get_value_interpolated" if kind == "$res" else "variables/get_value"
    url = f"{base.rstrip('/')}/api/w/{workspace}/{what}/{urllib.parse.quote(path, safe='/')}"
    if not url.startswith(("http://", "https://")):
        raise RuntimeError(f"bad server address {base!r}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310  # scheme checked above
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # scheme checked above
        return json.loads(response.read())


async def _await(awaitable: Any) -> Any:
    return await awaitable


# -- writing the result -------------------------------------------------------------


def _json_encoder() -> Callable[[object], str]:
    """Compact, ASCII-only, NaN-refusing JSON; the C encoder without importing ``json``."""
    try:
        import _json

        encoder = _json.make_encoder(
            {}, _refuse, _json.encode_basestring_ascii, None, ":", ",", False, False, False
        )
    except (ImportError, AttributeError, TypeError):  # another implementation: go the long way
        import json

        return json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_refuse).encode

    def encode(value: object) -> str:
        return "".join(encoder(value, 0))

    return encode


def _refuse(value: object) -> object:
    raise TypeError(f"{_type_name(value)} is not JSON serializable")


def _encode(value: object) -> str:
    return _json_encoder()(value)


def _write(result_path: str, payload: str) -> None:
    with open(result_path, "wb") as f:  # bytes: a text codec would cost an import
        f.write(payload.encode("ascii"))


def _fail(result_path: str, error: dict[str, Any]) -> int:
    _write(result_path, _encode({"ok": False, "error": error}))
    return 1


# -- describing failures ------------------------------------------------------------


def _syntax_error(exc: Exception, code_path: str, source: bytes) -> dict[str, Any]:
    import traceback

    _cache_source(code_path, source)
    stack = "".join(traceback.format_exception_only(type(exc), exc))
    if not isinstance(exc, SyntaxError):
        return {"name": "SyntaxError", "message": str(exc), "stack": stack}
    message = exc.msg
    location = None
    if exc.lineno:
        location = f"line {exc.lineno}"
        if exc.offset:
            location += f", column {exc.offset}"
        message = f"{message} at {location}"
    return {"name": type(exc).__name__, "message": message, "stack": stack, "location": location}


def _missing_main(code_path: str) -> dict[str, Any]:
    return {
        "name": "MissingMain",
        "message": (
            f"{code_path} defines no main function: add `def main(...)`, "
            "which is called with the job's arguments"
        ),
    }


def _main_not_callable(main: object) -> dict[str, Any]:
    return {
        "name": "MissingMain",
        "message": f"main is a {_type_name(main)}, not a function",
    }


def _bad_arguments(exc: TypeError) -> dict[str, Any]:
    return {"name": "InvalidArguments", "message": str(exc), "location": "arguments"}


def _system_exit(exc: SystemExit, code_path: str, source: bytes) -> dict[str, Any]:
    error = _exception(exc, code_path, source)
    error["message"] = f"the script called sys.exit({exc.code!r})"
    return error


def _exception(exc: BaseException, code_path: str, source: bytes) -> dict[str, Any]:
    import traceback

    _cache_source(code_path, source)
    summary = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    _trim(summary, code_path)
    location = None
    for frame in summary.stack:
        if frame.filename == code_path:
            location = f"line {frame.lineno}"
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the error
        message = f"<{type(exc).__name__} with an unprintable message>"
    return {
        "name": type(exc).__name__,
        "message": message,
        "stack": "".join(summary.format()),
        "location": location,
    }


def _trim(summary: Any, code_path: str) -> None:
    """Drop the bootstrap's (and asyncio's) frames above the user's first frame."""
    seen: set[int] = set()
    pending = [summary]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        stack = current.stack
        first = next((i for i, f in enumerate(stack) if f.filename == code_path), None)
        if first is not None:
            del stack[:first]
        else:
            stack[:] = [f for f in stack if f.filename != _SELF]
        pending.extend((current.__cause__, current.__context__))
        pending.extend(getattr(current, "exceptions", None) or ())


def _cache_source(code_path: str, source: bytes) -> None:
    """Let tracebacks show the script's lines whatever the job did to its files or cwd."""
    import linecache

    lines = source.decode("utf-8", "replace").splitlines(keepends=True)
    linecache.cache[code_path] = (len(source), None, lines, code_path)


def _unserializable(value: object, exc: BaseException) -> dict[str, Any]:
    found = _find_unserializable(value, "$", set(), 0)
    if found is None:
        message = f"result of main() is not JSON serializable: {exc}"
        return {"name": "ResultNotSerializable", "message": message}
    path, what = found
    return {
        "name": "ResultNotSerializable",
        "message": f"result of main() is not JSON serializable: {what} at {path}",
        "location": path,
    }


def _find_unserializable(
    value: object, path: str, active: set[int], depth: int
) -> tuple[str, str] | None:
    """The first value JSON cannot hold, as (JSONPath, description); mirrors ``json``."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return path, f"float {value!r} (NaN and infinities are not JSON)"
        return None
    if depth >= _MAX_DEPTH:
        return path, f"a value nested more than {_MAX_DEPTH} levels deep"
    if isinstance(value, (list, tuple, dict)):
        if id(value) in active:
            return path, f"a circular reference to a {_type_name(value)}"
        active.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not (key is None or isinstance(key, (str, int, float, bool))):
                        return path, f"a dict key of type {_type_name(key)}"
                    if isinstance(key, float):
                        found = _find_unserializable(key, path, active, depth + 1)
                        if found is not None:
                            return found[0], "a dict key " + found[1]
                    found = _find_unserializable(item, path + _segment(key), active, depth + 1)
                    if found is not None:
                        return found
            else:
                for index, item in enumerate(value):
                    found = _find_unserializable(item, f"{path}[{index}]", active, depth + 1)
                    if found is not None:
                        return found
        finally:
            active.discard(id(value))
        return None
    return path, _type_name(value)


def _segment(key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return "." + key
    return f"[{key!r}]"


def _type_name(value: object) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:4]))
