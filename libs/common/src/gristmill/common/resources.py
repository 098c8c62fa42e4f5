"""Resources: typed JSON values at a path (connection settings, script state, ...).

* A **resource type** names a kind of resource and may carry a JSON Schema; a
  resource's value is checked against it when written (``validate_value``; a subset of
  JSON Schema: ``type``, ``properties``, ``required``, ``additionalProperties``,
  ``items``, ``enum``, ``const``, bounds, lengths, ``pattern``, ``anyOf``/``oneOf``/
  ``allOf``; other keywords are ignored). Changing a schema does not re-check existing
  values.
* A string ``"$var:<path>"`` or ``"$res:<path>"`` anywhere in a value is a reference:
  it passes schema checks (it stands for a value resolved later), and
  ``get_value_interpolated`` replaces it with the variable's value (decrypted) or the
  other resource's value, itself resolved, recursively; a cycle or a missing target is
  an error naming the path.
* **State**: Windmill's clients keep a script's state as a resource of type ``state``
  at the path of ``WM_STATE_PATH_NEW``. That type, and ``any`` (the in-job library's
  default), are created on first use, with no schema.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, InvalidRequest, NotFound
from gristmill.common.variables import VariableStore, missing_workspace, validate_path

__all__ = [
    "ANY_RESOURCE_TYPE",
    "RESOURCE_REF_PREFIX",
    "STATE_RESOURCE_TYPE",
    "VARIABLE_REF_PREFIX",
    "Authorize",
    "Resource",
    "ResourceStore",
    "ResourceType",
    "check_schema",
    "validate_type_name",
    "validate_value",
]

_Q = load_queries("resources.sql")

VARIABLE_REF_PREFIX = "$var:"
RESOURCE_REF_PREFIX = "$res:"
#: The type of the resources that hold scripts' state.
STATE_RESOURCE_TYPE = "state"
#: The type of resources whose values may be anything (the in-job library's default).
ANY_RESOURCE_TYPE = "any"
#: Types created on first use (name -> description); they have no schema.
_BUILTIN_TYPES = {
    STATE_RESOURCE_TYPE: "State kept by scripts and flows between runs",
    ANY_RESOURCE_TYPE: "Any JSON value",
}
#: Most references one interpolation follows (guards against huge reference graphs).
_MAX_REFERENCES = 1000
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")

#: Called with each variable or resource path an interpolation reads; raises to refuse.
Authorize = Callable[[str], None]
#: Where a value breaks a schema (a field like ``db.hosts[0]``, empty for the root) and why.
_Problem = tuple[str, str] | None


class ResourceType(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    name: str
    #: A JSON Schema that values must match, or ``None``.
    schema: Any
    description: str
    created_by: str
    created_at: datetime
    edited_at: datetime


class Resource(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    path: str
    resource_type: str
    #: The stored value, references unresolved.
    value: Any
    description: str
    created_by: str
    created_at: datetime
    edited_at: datetime


def _resource_type(row: Any) -> ResourceType:
    return ResourceType(
        workspace=row["workspace_id"],
        name=row["name"],
        schema=row["schema"],
        description=row["description"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
    )


def _resource(row: Any) -> Resource:
    return Resource(
        workspace=row["workspace_id"],
        path=row["path"],
        resource_type=row["resource_type"],
        value=row["value"],
        description=row["description"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
    )


def validate_type_name(name: str, *, location: str = "name") -> str:
    """``name`` if it is a valid resource type name, else ``InvalidRequest``."""
    if _TYPE_NAME.fullmatch(name) is None:
        raise InvalidRequest(
            f"resource type name {name!r} is invalid: use 1-100 letters, digits, '_' or '-', "
            "starting with a letter or '_'",
            location=location,
        )
    return name


# -- schemas ------------------------------------------------------------------------


def check_schema(schema: Any, *, location: str = "schema") -> None:
    """``InvalidRequest`` (at the offending keyword) if ``schema`` is not a usable schema.

    ``None`` means no schema. Only the keywords that values are checked against are
    inspected; others (``description``, ``format``, ``default``, ...) pass through.
    """
    if schema is None:
        return
    _check_schema(schema, location)


def _check_schema(schema: Any, where: str) -> None:
    def bad(keyword: str, problem: str) -> InvalidRequest:
        return InvalidRequest(f"invalid schema: {problem}", location=f"{where}.{keyword}")

    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InvalidRequest("invalid schema: expected a JSON object", location=where)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        for item in kinds:
            if item not in _JSON_TYPES:
                raise bad("type", f"unknown type {item!r} (known: {', '.join(_JSON_TYPES)})")
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise bad("properties", "expected an object of schemas")
        for name, sub in properties.items():
            _check_schema(sub, f"{where}.properties.{name}")
    required = schema.get("required")
    if required is not None and (
        not isinstance(required, list) or not all(isinstance(r, str) for r in required)
    ):
        raise bad("required", "expected a list of property names")
    for keyword in ("additionalProperties", "items"):
        if keyword in schema:
            _check_schema(schema[keyword], f"{where}.{keyword}")
    for keyword in ("anyOf", "oneOf", "allOf"):
        if keyword in schema:
            options = schema[keyword]
            if not isinstance(options, list) or not options:
                raise bad(keyword, "expected a non-empty list of schemas")
            for index, sub in enumerate(options):
                _check_schema(sub, f"{where}.{keyword}[{index}]")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise bad("enum", "expected a list")
    for keyword in (
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    ):
        if keyword in schema and not _is_number(schema[keyword]):
            raise bad(keyword, "expected a number")
    if "pattern" in schema:
        pattern = schema["pattern"]
        try:
            re.compile(pattern)
        except (re.error, TypeError):
            raise bad("pattern", f"not a regular expression: {pattern!r}") from None


def validate_value(schema: Any, value: Any, *, resource_type: str) -> None:
    """``InvalidRequest`` naming the first field of ``value`` that breaks ``schema``.

    ``None`` (no schema) accepts everything. A ``$var:``/``$res:`` reference string
    matches any schema.
    """
    if schema is None:
        return
    problem = _problem(schema, value, "")
    if problem is not None:
        field, message = problem
        where = f"field '{field}'" if field else "the value"
        raise InvalidRequest(
            f"value does not match resource type {resource_type!r}: {where} {message}",
            location=f"value.{field}" if field else "value",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(kind: str, value: Any) -> bool:
    actual = _json_type(value)
    if kind == "number":
        return actual in ("integer", "number")
    if kind == "integer" and actual == "number":
        return math.isfinite(value) and float(value).is_integer()
    return actual == kind


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith((VARIABLE_REF_PREFIX, RESOURCE_REF_PREFIX))


def _child(field: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


def _problem(schema: Any, value: Any, field: str) -> _Problem:
    """The first ``(field, message)`` where ``value`` breaks ``schema``, or ``None``."""
    if schema is True or _is_reference(value):
        return None
    if schema is False:
        return field, "is not allowed"
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if schema.get("nullable") is True:
            kinds = [*kinds, "null"]
        if not any(_has_type(k, value) for k in kinds):
            return field, f"must be {' or '.join(kinds)}, got {_json_type(value)}"
    if "const" in schema and value != schema["const"]:
        return field, f"must be {msgspec.json.encode(schema['const']).decode()}"
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(msgspec.json.encode(v).decode() for v in schema["enum"])
        return field, f"must be one of {allowed}"
    problem = _composite_problem(schema, value, field)
    if problem is not None:
        return problem
    if isinstance(value, dict):
        return _object_problem(schema, value, field)
    if isinstance(value, list):
        return _array_problem(schema, value, field)
    if isinstance(value, str):
        return _string_problem(schema, value, field)
    if _is_number(value):
        return _number_problem(schema, value, field)
    return None


def _composite_problem(schema: dict[str, Any], value: Any, field: str) -> _Problem:
    for sub in schema.get("allOf", ()):
        problem = _problem(sub, value, field)
        if problem is not None:
            return problem
    if "anyOf" in schema and all(_problem(s, value, field) for s in schema["anyOf"]):
        return field, "matches none of the allowed alternatives (anyOf)"
    if "oneOf" in schema:
        matches = sum(1 for s in schema["oneOf"] if _problem(s, value, field) is None)
        if matches != 1:
            return field, f"must match exactly one alternative (oneOf), matches {matches}"
    return None


def _object_problem(schema: dict[str, Any], value: dict[str, Any], field: str) -> _Problem:
    properties: dict[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            return _child(field, name), "is required"
    for name, item in value.items():
        if name in properties:
            problem = _problem(properties[name], item, _child(field, name))
        elif "additionalProperties" in schema:
            problem = _problem(schema["additionalProperties"], item, _child(field, name))
        else:
            problem = None
        if problem is not None:
            return problem
    return None


def _array_problem(schema: dict[str, Any], value: list[Any], field: str) -> _Problem:
    if "minItems" in schema and len(value) < schema["minItems"]:
        return field, f"must have at least {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return field, f"must have at most {schema['maxItems']} items"
    if "items" in schema:
        for index, item in enumerate(value):
            problem = _problem(schema["items"], item, _child(field, index))
            if problem is not None:
                return problem
    return None


def _string_problem(schema: dict[str, Any], value: str, field: str) -> _Problem:
    if "minLength" in schema and len(value) < schema["minLength"]:
        return field, f"must be at least {schema['minLength']} characters long"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return field, f"must be at most {schema['maxLength']} characters long"
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        return field, f"must match the pattern {schema['pattern']!r}"
    return None


def _number_problem(schema: dict[str, Any], value: float, field: str) -> _Problem:
    if "minimum" in schema and value < schema["minimum"]:
        return field, f"must be at least {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return field, f"must be at most {schema['maximum']}"
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return field, f"must be greater than {schema['exclusiveMinimum']}"
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        return field, f"must be less than {schema['exclusiveMaximum']}"
    return None


# -- the store ----------------------------------------------------------------------


def _type_not_found(workspace: str, name: str) -> NotFound:
    return NotFound(f"resource type {name!r} not found in workspace {workspace!r}", location="name")


def _not_found(workspace: str, path: str) -> NotFound:
    return NotFound(f"resource {path} not found in workspace {workspace!r}", location="path")


class ResourceStore:
    """Resource types and resources of every workspace, in Postgres.

    ``variables`` resolves ``$var:`` references (and decrypts secrets) on interpolation.
    """

    __slots__ = ("_pool", "_variables")

    def __init__(self, pool: asyncpg.Pool, variables: VariableStore) -> None:
        self._pool = pool
        self._variables = variables

    # -- types --------------------------------------------------------------------

    async def create_type(
        self, workspace: str, name: str, *, schema: Any, description: str, created_by: str
    ) -> None:
        """Create a resource type; ``Conflict`` if the name is taken."""
        validate_type_name(name)
        check_schema(schema)
        try:
            created = await self._pool.fetchval(
                _Q["insert_resource_type"], workspace, name, schema, description, created_by
            )
        except asyncpg.ForeignKeyViolationError:
            raise missing_workspace(workspace) from None
        if created is None:
            raise Conflict(
                f"resource type {name!r} already exists in workspace {workspace!r}",
                location="name",
            )

    async def get_type(self, workspace: str, name: str) -> ResourceType:
        row = await self._pool.fetchrow(_Q["get_resource_type"], workspace, name)
        if row is None:
            raise _type_not_found(workspace, name)
        return _resource_type(row)

    async def list_types(self, workspace: str) -> list[ResourceType]:
        rows = await self._pool.fetch(_Q["list_resource_types"], workspace)
        return [_resource_type(r) for r in rows]

    async def type_exists(self, workspace: str, name: str) -> bool:
        exists: bool = await self._pool.fetchval(_Q["resource_type_exists"], workspace, name)
        return exists

    async def update_type(
        self,
        workspace: str,
        name: str,
        *,
        schema: Any = msgspec.UNSET,
        description: str | None = None,
    ) -> None:
        """Change the schema (when given; ``None`` removes it) and/or the description."""
        set_schema = schema is not msgspec.UNSET
        if set_schema:
            check_schema(schema)
        updated = await self._pool.fetchval(
            _Q["update_resource_type"],
            workspace,
            name,
            schema if set_schema else None,
            description,
            set_schema,
        )
        if updated is None:
            raise _type_not_found(workspace, name)

    async def delete_type(self, workspace: str, name: str) -> None:
        """Delete a type no resource uses (else ``Conflict`` naming one that does)."""
        try:
            row = await self._pool.fetchrow(_Q["delete_unused_resource_type"], workspace, name)
        except asyncpg.ForeignKeyViolationError:
            row = None  # a resource of this type was created meanwhile
        if row is not None and not row["found"]:
            raise _type_not_found(workspace, name)
        if row is None or not row["deleted"]:
            used_by = row["used_by"] if row is not None else 1
            example = f" (e.g. {row['example']})" if row is not None and row["example"] else ""
            raise Conflict(
                f"resource type {name!r} is used by {used_by} resource(s){example}; delete "
                "them or change their type first",
                location="name",
            )

    async def _type_for_write(
        self, conn: Conn, workspace: str, name: str, created_by: str
    ) -> ResourceType:
        """The type, locked ``FOR SHARE``; built-in types are created on first use."""
        validate_type_name(name, location="resource_type")
        row = await conn.fetchrow(_Q["lock_resource_type"], workspace, name)
        if row is None and name in _BUILTIN_TYPES:
            await conn.execute(
                _Q["insert_resource_type"], workspace, name, None, _BUILTIN_TYPES[name], created_by
            )
            row = await conn.fetchrow(_Q["lock_resource_type"], workspace, name)
        if row is None:
            raise InvalidRequest(
                f"resource type {name!r} does not exist in workspace {workspace!r}; create it "
                "first",
                location="resource_type",
            )
        return _resource_type(row)

    # -- resources ----------------------------------------------------------------

    async def create(
        self,
        workspace: str,
        path: str,
        *,
        value: Any,
        resource_type: str,
        description: str,
        created_by: str,
        update_if_exists: bool = False,
    ) -> bool:
        """Create a resource (``True``). If the path is taken: with ``update_if_exists``
        replace its value, type and description (``False``), else ``Conflict``."""
        validate_path(path, kind="resource")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                kind = await self._type_for_write(conn, workspace, resource_type, created_by)
                validate_value(kind.schema, value, resource_type=kind.name)
                created = await conn.fetchval(
                    _Q["insert_resource"],
                    workspace,
                    path,
                    resource_type,
                    value,
                    description,
                    created_by,
                )
                if created is None and update_if_exists:
                    await conn.execute(
                        _Q["update_resource"],
                        workspace,
                        path,
                        path,
                        resource_type,
                        value,
                        description,
                    )
                    return False
        except asyncpg.ForeignKeyViolationError:
            raise missing_workspace(workspace) from None
        if created is None:
            raise Conflict(
                f"resource {path} already exists in workspace {workspace!r}", location="path"
            )
        return True

    async def get(self, workspace: str, path: str) -> Resource:
        row = await self._pool.fetchrow(_Q["get_resource"], workspace, path)
        if row is None:
            raise _not_found(workspace, path)
        return _resource(row)

    async def get_value(self, workspace: str, path: str) -> Any:
        """The stored value, references unresolved."""
        return (await self.get(workspace, path)).value

    async def exists(self, workspace: str, path: str) -> bool:
        exists: bool = await self._pool.fetchval(_Q["resource_exists"], workspace, path)
        return exists

    async def list_resources(
        self,
        workspace: str,
        *,
        resource_types: Sequence[str] | None = None,
        exclude_types: Sequence[str] | None = None,
        path_start: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Resource]:
        """Resources in path order, filtered by type (any of) and path prefix."""
        rows = await self._pool.fetch(
            _Q["list_resources"],
            workspace,
            list(resource_types) if resource_types is not None else None,
            list(exclude_types) if exclude_types is not None else None,
            path_start,
            limit,
            offset,
        )
        return [_resource(r) for r in rows]

    async def delete(self, workspace: str, path: str) -> None:
        if await self._pool.fetchval(_Q["delete_resource"], workspace, path) is None:
            raise _not_found(workspace, path)

    async def update(
        self,
        workspace: str,
        path: str,
        *,
        value: Any = msgspec.UNSET,
        description: str | None = None,
        new_path: str | None = None,
        resource_type: str | None = None,
        edited_by: str,
    ) -> str:
        """Change what is given (``UNSET``/``None``: keep); the value, new or kept, is
        checked against the (new or kept) type. Answers the path after the update."""
        target = path if new_path is None else validate_path(new_path, kind="resource")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_Q["get_resource_for_update"], workspace, path)
                if row is None:
                    raise _not_found(workspace, path)
                kind_name = row["resource_type"] if resource_type is None else resource_type
                new_value = row["value"] if value is msgspec.UNSET else value
                if value is not msgspec.UNSET or resource_type is not None:
                    kind = await self._type_for_write(conn, workspace, kind_name, edited_by)
                    validate_value(kind.schema, new_value, resource_type=kind.name)
                await conn.execute(
                    _Q["update_resource"],
                    workspace,
                    path,
                    target,
                    kind_name,
                    new_value,
                    row["description"] if description is None else description,
                )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"cannot rename resource {path} to {target}: {target} already exists in "
                f"workspace {workspace!r}",
                location="path",
            ) from None
        return target

    async def update_value(self, workspace: str, path: str, value: Any, *, edited_by: str) -> None:
        """Replace the value (checked against the resource's type)."""
        await self.update(workspace, path, value=value, edited_by=edited_by)

    # -- interpolation ------------------------------------------------------------

    async def get_value_interpolated(
        self, workspace: str, path: str, *, authorize: Authorize | None = None
    ) -> Any:
        """The value with every ``$var:``/``$res:`` reference resolved, recursively.

        ``authorize`` is called with each referenced path before it is read.
        """
        async with self._pool.acquire() as conn:
            return await _Interpolation(self._variables, conn, workspace, authorize).resource(
                path, ()
            )

    async def interpolate(
        self, workspace: str, value: Any, *, authorize: Authorize | None = None
    ) -> Any:
        """Resolve the references in any JSON ``value`` (e.g. a job's arguments)."""
        async with self._pool.acquire() as conn:
            return await _Interpolation(self._variables, conn, workspace, authorize).value(
                value, (), "$"
            )


class _Interpolation:
    """One resolution: resolved resources are remembered, visited ones detect cycles."""

    __slots__ = ("_authorize", "_conn", "_done", "_followed", "_variables", "_workspace")

    def __init__(
        self,
        variables: VariableStore,
        conn: Conn,
        workspace: str,
        authorize: Authorize | None,
    ) -> None:
        self._variables = variables
        self._conn = conn
        self._workspace = workspace
        self._authorize = authorize
        self._done: dict[str, Any] = {}
        self._followed = 0

    async def resource(self, path: str, stack: tuple[str, ...]) -> Any:
        if path in stack:
            cycle = " -> ".join((*stack[stack.index(path) :], path))
            raise InvalidRequest(f"resource reference cycle: {cycle}", location="value")
        if path in self._done:
            return self._done[path]
        row = await self._conn.fetchrow(_Q["get_resource"], self._workspace, path)
        if row is None:
            raise _not_found(self._workspace, path)
        resolved = await self.value(row["value"], (*stack, path), "$")
        self._done[path] = resolved
        return resolved

    async def value(self, value: Any, stack: tuple[str, ...], where: str) -> Any:
        if isinstance(value, dict):
            return {k: await self.value(v, stack, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [await self.value(v, stack, f"{where}[{i}]") for i, v in enumerate(value)]
        if not _is_reference(value):
            return value
        self._followed += 1
        if self._followed > _MAX_REFERENCES:
            raise InvalidRequest(
                f"too many references to resolve (more than {_MAX_REFERENCES})", location=where
            )
        prefix, target = value[: len(VARIABLE_REF_PREFIX)], value[len(VARIABLE_REF_PREFIX) :]
        origin = f"resource {stack[-1]} at {where}" if stack else where
        kind = "variable" if prefix == VARIABLE_REF_PREFIX else "resource"
        try:
            validate_path(target, kind=kind)
        except InvalidRequest as exc:
            message = f"{exc.message} (in {value!r}, {origin})"
            raise InvalidRequest(message, location=where) from None
        if self._authorize is not None:
            self._authorize(target)
        try:
            if kind == "variable":
                return await self._variables.read_value(self._conn, self._workspace, target)
            return await self.resource(target, stack)
        except NotFound as exc:
            # Only the target itself answers location "path"; deeper misses were
            # already reported where they are.
            if exc.location != "path":
                raise
            raise NotFound(
                f"{kind} {target} not found in workspace {self._workspace!r} "
                f"(referenced as {value!r} by {origin})",
                location=where,
                path=target,
            ) from None
