"""PostgreSQL jobs: a SQL script with ``$1::type`` placeholders, run on a resource's database.

The script (Windmill's convention, see ``gristmill.common.introspection.sql``)::

    -- $1 name
    -- $2 limit = 10
    SELECT * FROM users WHERE name = $1::text LIMIT $2::int;

The connection is a ``postgresql`` resource (``host``, ``port``, ``user``,
``password``, ``dbname``, ``sslmode``): the argument ``database`` (an object, or a
``$res:<path>`` reference), or the resource named by a ``-- database <path>`` line.
References are resolved inside the job with its own token (``WM_TOKEN``,
``BASE_INTERNAL_URL``), like Python jobs' arguments, so the worker never holds the
job user's secrets.

How it runs: a child process of the worker's own interpreter (which has ``asyncpg``),
``postgresql_bootstrap.py``. A child process rather than ``psql``: typed parameters
(``$1::int`` prepared and bound, never interpolated into the SQL), rows decoded by
type (``json``/``jsonb`` as JSON, timestamps as ISO strings), and the server's error
fields, which ``psql``'s text output would lose; and a child process rather than a
query from the worker itself, so the job's timeout, cancellation, logs and sandbox
work as for every other language.

* Statements are split at ``;`` (outside quotes, dollar quotes and comments) and run
  in order in one session (autocommit, as ``psql`` does: wrap them in
  ``BEGIN; ... COMMIT;`` for one transaction). Each statement is prepared on its own;
  its placeholders are renumbered, so any statement may use any argument.
* The result is the rows of the **last** statement, as a list of objects (column →
  value) — Windmill's default (``last_statement_all_rows``). ``numeric`` values are
  strings (exact), ``bytea`` is base64, dates and times are ISO 8601.
* ``statement_timeout`` is the job's timeout less a margin (a fifth, at most 1 s), so
  a query that runs too long fails with the server's own ``QueryCanceledError`` before
  the job is killed.
* A server error is ``{name: <asyncpg exception class>, message: <server message>
  (detail), location: "line L, column C"}`` (when the server gives a position).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Final

import msgspec

from gristmill.common.introspection import parse_postgresql
from gristmill.common.introspection.sql import argument_names, database_annotation
from gristmill.worker.execution import failures
from gristmill.worker.execution.launch import Command
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.runners.base import Finished, RunResult, collect_envelope
from gristmill.worker.execution.settings import ExecutorSettings

__all__ = ["BOOTSTRAP", "PostgresqlRunner", "statement_timeout_ms"]

#: The program the job runs (with the worker's own interpreter).
BOOTSTRAP: Final = Path(__file__).with_name("postgresql_bootstrap.py")
_CONTROL_DIR: Final = ".gristmill"
_SPEC: Final = f"{_CONTROL_DIR}/spec.json"
_RESULT: Final = f"{_CONTROL_DIR}/result.json"
_SCRIPT: Final = "main.sql"


_encoder = msgspec.json.Encoder()


def statement_timeout_ms(timeout_s: float | None) -> int | None:
    """The session's ``statement_timeout``: the job's timeout less a fifth (at most 1 s),
    so the server cancels the query and the job still reports it."""
    if timeout_s is None or timeout_s <= 0:
        return None
    margin = min(1.0, timeout_s / 5)
    return max(1, int((timeout_s - margin) * 1000))


@functools.cache
def _interpreter_paths() -> tuple[str, ...]:
    return tuple(dict.fromkeys((sys.executable, sys.prefix, sys.base_prefix)))


class PostgresqlRunner:
    """``postgresql`` jobs."""

    @property
    def language(self) -> str:
        return "postgresql"

    def prepare(self, request: ExecutionRequest, settings: ExecutorSettings) -> Command:
        workdir = request.workdir
        (workdir / _CONTROL_DIR).mkdir(exist_ok=True)
        (workdir / _RESULT).unlink(missing_ok=True)
        (workdir / _SCRIPT).write_text(request.code, encoding="utf-8", errors="replace")
        properties: dict[str, dict[str, Any]] = parse_postgresql(request.code).schema["properties"]
        names = argument_names(request.code)
        numbers = {
            int(name.removeprefix("arg")): name
            for name in properties
            if name.startswith("arg") and name.removeprefix("arg").isdigit()
        }
        numbers.update({number: name for number, (name, _) in names.items()})
        defaults = {
            number: properties[name]["default"]
            for number, name in numbers.items()
            if "default" in properties.get(name, {})
        }
        spec = {
            "args": request.args,
            "names": {str(number): name for number, name in numbers.items()},
            "defaults": {str(number): value for number, value in defaults.items()},
            "database_path": database_annotation(request.code),
            "statement_timeout_ms": statement_timeout_ms(request.timeout_s),
        }
        (workdir / _SPEC).write_bytes(_encoder.encode(spec))
        return Command(
            argv=(sys.executable, "-I", str(BOOTSTRAP), _SCRIPT, _SPEC, _RESULT),
            readonly_paths=(*_interpreter_paths(), str(BOOTSTRAP.parent)),
        )

    def collect(self, finished: Finished, settings: ExecutorSettings) -> RunResult:
        return collect_envelope(
            finished,
            settings,
            _RESULT,
            missing=lambda: failures.exited_with_code(
                "postgresql",
                finished.exit_code,
                detail=" without writing a result",
                output_tail=finished.output_tail,
            ),
            failed_without_error="the query failed",
        )
