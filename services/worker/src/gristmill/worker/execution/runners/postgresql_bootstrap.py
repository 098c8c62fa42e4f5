"""The child process of a PostgreSQL job: connect, run the statements, write the rows.

Started by the worker as ``<its own interpreter> -I postgresql_bootstrap.py <script>
<spec.json> <result.json>`` (see ``runners/postgresql.py``). Writes ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error": {name, message, stack, location}}``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import json
import os
import sys
import urllib.parse
import urllib.request
import uuid
from typing import Any

import asyncpg

from gristmill.common.introspection.sql import placeholders, split_statements

__all__: list[str] = []

#: Seconds to wait for a connection (the job's own timeout still applies).
_CONNECT_TIMEOUT_S = 30.0


class _Failure(Exception):
    def __init__(self, name: str, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.error = {"name": name, "message": message, "location": location}


def _dereference(reference: str) -> Any:
    """The value behind ``$res:<path>``, read with the job's own token."""
    path = reference.removeprefix("$res:")
    base = os.environ.get("BASE_INTERNAL_URL") or os.environ.get("WM_BASE_URL")
    token = os.environ.get("WM_TOKEN")
    workspace = os.environ.get("WM_WORKSPACE")
    if not (base and token and workspace):
        raise _Failure("ReferenceError", f"cannot read {reference}: the job has no API access")
    url = (
        f"{base.rstrip('/')}/api/w/{workspace}/resources/get_value_interpolated/"
        f"{urllib.parse.quote(path, safe='/')}"
    )
    if not url.startswith(("http://", "https://")):
        raise _Failure("ReferenceError", f"bad server address {base!r}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310  # scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # scheme checked above
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise _Failure("ReferenceError", f"cannot read {reference}: {exc}") from exc


def _connection(spec: dict[str, Any]) -> dict[str, Any]:
    path = spec.get("database_path")
    database: Any = spec["args"].get("database") if path is None else "$res:" + path
    if isinstance(database, str) and database.startswith("$res:"):
        database = _dereference(database)
    if not isinstance(database, dict) or not database.get("host"):
        raise _Failure(
            "InvalidArguments",
            "the script needs a PostgreSQL resource: an argument `database` "
            "(host, port, user, password, dbname) or a `-- database <path>` line",
            "args.database",
        )
    ssl = database.get("sslmode") or "prefer"
    return {
        "host": database["host"],
        "port": int(database.get("port") or 5432),
        "user": database.get("user"),
        "password": database.get("password"),
        "database": database.get("dbname") or database.get("database"),
        "ssl": ssl if ssl != "allow" else "prefer",
    }


def _parameter(value: Any, type_name: str, kind: str) -> Any:
    """A JSON value as asyncpg wants it for a parameter of type ``type_name``."""
    if value is None:
        return None
    if kind == "array" and isinstance(value, list):
        return [_parameter(item, type_name.removeprefix("_"), "scalar") for item in value]
    if type_name in ("int2", "int4", "int8", "oid"):
        return int(value)
    if type_name in ("float4", "float8"):
        return float(value)
    if type_name == "numeric":
        return decimal.Decimal(str(value))
    if type_name == "bool":
        return value if isinstance(value, bool) else str(value).lower() in ("true", "t", "1")
    if type_name in ("json", "jsonb"):
        return value  # the codec encodes it
    if type_name == "date" and isinstance(value, str):
        return datetime.date.fromisoformat(value[:10])
    if type_name in ("timestamp", "timestamptz") and isinstance(value, str):
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if type_name == "timestamp":
            return parsed.replace(tzinfo=None)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
    if type_name == "uuid":
        return uuid.UUID(str(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value if isinstance(value, str) else json.dumps(value)


def _json(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    return str(value)


def _renumber(statement: str, numbers: dict[int, int]) -> str:
    """``statement`` with its placeholders renumbered from ``$1`` in order of first use."""
    pieces: list[str] = []
    previous = 0
    for number, _, start, end in placeholders(statement):
        pieces.append(statement[previous:start])
        pieces.append(str(numbers.setdefault(number, len(numbers) + 1)))
        previous = end
    pieces.append(statement[previous:])
    return "".join(pieces)


def _location(code: str, offset: int) -> str:
    line = code.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - (code.rfind(chr(10), 0, offset) + 1) + 1}"


async def _run(code: str, spec: dict[str, Any]) -> Any:
    parameters: dict[int, Any] = {}
    for number, name in spec["names"].items():
        if name in spec["args"]:
            parameters[int(number)] = spec["args"][name]
        elif int(number) in spec.get("defaults_by_number", {}):
            parameters[int(number)] = spec["defaults_by_number"][int(number)]
    settings = {"application_name": "gristmill"}
    if spec.get("statement_timeout_ms"):
        settings["statement_timeout"] = str(spec["statement_timeout_ms"])
    try:
        conn = await asyncpg.connect(
            **_connection(spec),
            timeout=_CONNECT_TIMEOUT_S,
            server_settings=settings,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise _Failure("ConnectionError", f"cannot connect to the database: {exc}") from exc
    try:
        for name in ("json", "jsonb"):
            await conn.set_type_codec(
                name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        result: Any = []
        for offset, statement in split_statements(code):
            numbers: dict[int, int] = {}
            text = _renumber(statement, numbers)
            try:
                prepared = await conn.prepare(text)
                types = prepared.get_parameters()
                values = []
                for number, position in sorted(numbers.items(), key=lambda item: item[1]):
                    kind = types[position - 1]
                    try:
                        values.append(_parameter(parameters.get(number), kind.name, kind.kind))
                    except (TypeError, ValueError, ArithmeticError) as exc:
                        raise _Failure(
                            "InvalidArguments",
                            f"argument ${number} is not a valid {kind.name}: {exc}",
                            f"args.${number}",
                        ) from exc
                rows = await prepared.fetch(*values)
            except asyncpg.PostgresError as exc:
                server_position = getattr(exc, "position", None)
                where = None
                if server_position:
                    where = _location(code, offset + max(int(server_position) - 1, 0))
                message = exc.args[0] if exc.args else str(exc)
                detail = getattr(exc, "detail", None)
                if detail:
                    message += f" ({detail})"
                raise _Failure(type(exc).__name__, str(message), where) from exc
            result = [dict(row.items()) for row in rows]
        return result
    finally:
        await conn.close(timeout=5)


def main(script_path: str, spec_path: str, result_path: str) -> int:
    with open(script_path, encoding="utf-8") as f:
        code = f.read()
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    spec["defaults_by_number"] = {int(k): v for k, v in spec.get("defaults", {}).items()}
    try:
        payload: dict[str, Any] = {"ok": True, "result": asyncio.run(_run(code, spec))}
        status = 0
    except _Failure as failure:
        payload = {"ok": False, "error": failure.error}
        status = 1
    data = json.dumps(payload, default=_json, ensure_ascii=False)
    with open(result_path, "w", encoding="utf-8") as f:
        f.write(data)
    return status


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
