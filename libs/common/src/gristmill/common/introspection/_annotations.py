"""Python annotations and defaults → JSON Schema, read from the syntax tree alone.

Nothing here imports, evaluates or executes the script: names are resolved through
the script's own ``import`` statements and top-level definitions, and defaults are
read with :func:`ast.literal_eval`, which accepts literals only.
"""

from __future__ import annotations

import ast
import base64
import builtins
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from gristmill.common.introspection._docstrings import parse_docstring
from gristmill.common.introspection.signature import object_schema

__all__ = ["Field", "ModuleIndex", "SchemaBuilder"]

Schema = dict[str, Any]

# Modules whose names mean the same as the bare builtin/typing name.
_TYPING: Final = frozenset(
    {"", "builtins", "typing", "typing_extensions", "collections", "collections.abc"}
)
_SCALARS: Final[dict[str, Schema]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "bytes": {"type": "string", "contentEncoding": "base64"},
}
_DATETIME: Final[dict[str, Schema]] = {
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "time": {"type": "string", "format": "time"},
}
_ANY: Final = frozenset({"Any", "object", "any"})  # ``any`` is a common slip for ``Any``
_ARRAYS: Final = frozenset(
    {
        "list", "List", "Sequence", "MutableSequence", "Iterable", "Collection",
        "set", "Set", "frozenset", "FrozenSet", "AbstractSet", "MutableSet",
        "tuple", "Tuple", "deque", "Deque",
    }
)  # fmt: skip
_OBJECTS: Final = frozenset(
    {"dict", "Dict", "Mapping", "MutableMapping", "OrderedDict", "DefaultDict", "defaultdict"}
)
# Wrappers that only qualify a field; the schema is the wrapped type's.
_QUALIFIERS: Final = frozenset({"Required", "NotRequired", "ReadOnly", "Final", "ClassVar"})

#: Resource types known by their name, so that a CamelCase spelling imported from
#: anywhere (``Postgresql``, ``S3Object``) is recognised. Lowercase names need no list.
KNOWN_RESOURCE_TYPES: Final = frozenset(
    {
        "postgresql", "mysql", "ms_sql_server", "oracledb", "bigquery", "snowflake",
        "clickhouse", "duckdb", "mongodb", "redis", "supabase", "s3", "s3_object",
        "smtp", "imap", "slack", "discord_webhook", "telegram", "github", "gitlab",
        "openai", "anthropic", "mistral", "stripe", "gsheets", "gcal", "gmail",
        "gdrive", "gcp_service_account", "aws", "azure_blob", "airtable", "notion",
        "linear", "jira", "hubspot", "sendgrid", "twilio", "kafka", "nats", "mqtt",
        "http", "graphql", "cloudflare",
    }
)  # fmt: skip

# Builtin names are never resource types, even lowercase ones (``type``, ``complex``).
_BUILTINS: Final = frozenset(dir(builtins))

_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``Postgresql`` → ``postgresql``, ``S3Object`` → ``s3_object``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def _resource(name: str) -> Schema:
    return {"type": "object", "format": f"resource-{name}"}


@dataclass(frozen=True)
class Field:
    """One input: a parameter of ``main`` or a key of a nested object type."""

    name: str
    annotation: ast.expr | None
    line: int
    default: ast.expr | None = None
    default_factory: ast.expr | None = None
    #: Forced by ``Required``/``NotRequired``/``total=False``; ``None`` means infer it.
    required: bool | None = None
    description: str | None = None


@dataclass
class ModuleIndex:
    """The script's top-level imports, classes and type aliases, by local name."""

    imports: dict[str, str] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    aliases: dict[str, ast.expr] = field(default_factory=dict)

    @classmethod
    def of(cls, module: ast.Module) -> ModuleIndex:
        index = cls()
        for stmt in _top_level(module.body):
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname:
                        index.imports[alias.asname] = alias.name
                    else:
                        head = alias.name.partition(".")[0]
                        index.imports[head] = head
            elif isinstance(stmt, ast.ImportFrom):
                package = "." * stmt.level + (stmt.module or "")
                for alias in stmt.names:
                    separator = "" if package.endswith(".") or not package else "."
                    qualified = f"{package}{separator}{alias.name}"
                    index.imports[alias.asname or alias.name] = qualified
            elif isinstance(stmt, ast.ClassDef):
                index.classes[stmt.name] = stmt
                index.aliases.pop(stmt.name, None)
            elif (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and _looks_like_type(stmt.value)
            ):
                index.aliases[stmt.targets[0].id] = stmt.value
                index.classes.pop(stmt.targets[0].id, None)
            elif (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and stmt.value is not None
                and _last_name(stmt.annotation) == "TypeAlias"
            ):
                index.aliases[stmt.target.id] = stmt.value
                index.classes.pop(stmt.target.id, None)
        return index


def _top_level(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Module statements, looking into top-level ``if``/``try``/``with`` blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If):
            yield from _top_level(stmt.body)
            yield from _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try | ast.TryStar):
            yield from _top_level(stmt.body)
            for handler in stmt.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(stmt.orelse)
            yield from _top_level(stmt.finalbody)
        elif isinstance(stmt, ast.With):
            yield from _top_level(stmt.body)


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _looks_like_type(node: ast.expr) -> bool:
    if isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return True
    return isinstance(node, ast.Call) and _last_name(node.func) == "TypedDict"


def _is_none(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and node.value in (None, "None")) or (
        isinstance(node, ast.Name) and node.id == "None"
    )


def _subscript_args(node: ast.Subscript) -> list[ast.expr]:
    if isinstance(node.slice, ast.Tuple):
        return list(node.slice.elts)
    return [node.slice]


def _union_members(node: ast.expr) -> Iterator[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        yield from _union_members(node.left)
        yield from _union_members(node.right)
    else:
        yield node


def literal(node: ast.expr) -> tuple[bool, Any]:
    """``(True, value)`` if ``node`` is a literal, else ``(False, None)``. Never runs code."""
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def to_json(value: Any) -> tuple[bool, Any]:
    """The JSON form of a literal Python value, or ``(False, None)`` if it has none."""
    if value is None or isinstance(value, bool | int | str):
        return True, value
    if isinstance(value, float):
        return (True, value) if math.isfinite(value) else (False, None)
    if isinstance(value, bytes):
        return True, base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple | set | frozenset):
        items = []
        for item in value:
            ok, converted = to_json(item)
            if not ok:
                return False, None
            items.append(converted)
        if isinstance(value, set | frozenset):
            try:
                items.sort()
            except TypeError:
                return False, None  # no stable order to show
        return True, items
    if isinstance(value, dict):
        converted_dict: dict[str, Any] = {}
        for key, item in value.items():
            ok, converted = to_json(item)
            if not ok or not isinstance(key, str):
                return False, None
            converted_dict[key] = converted
        return True, converted_dict
    return False, None


def schema_of_value(value: Any) -> Schema:
    """The type a literal default implies, for a parameter without annotation."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, bytes):
        return {"type": "string", "contentEncoding": "base64"}
    if isinstance(value, dict):
        return {"type": "object"}
    if isinstance(value, list | tuple | set | frozenset):
        schema: Schema = {"type": "array"}
        kinds = [schema_of_value(item) for item in value]
        same = bool(kinds) and all(kind == kinds[0] for kind in kinds)
        if same and kinds[0].get("type") not in (None, "array", "object"):
            schema["items"] = kinds[0]
        return schema
    return {}


class SchemaBuilder:
    """Turns annotations into schemas against one script's :class:`ModuleIndex`.

    ``notes`` collects what could not be expressed (unknown types, non-literal
    defaults, recursive types), each prefixed with its line.
    """

    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self.notes: list[str] = []
        self._active: list[str] = []  # classes/aliases being expanded, to stop recursion

    def note(self, line: int, message: str) -> None:
        text = f"line {line}: {message}"
        if text not in self.notes:
            self.notes.append(text)

    # -- objects -------------------------------------------------------------------

    def object_schema(
        self, fields: Iterable[Field], descriptions: dict[str, str], *, top_level: bool = False
    ) -> Schema:
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for item in fields:
            schema, is_required = self._field(item)
            description = item.description or descriptions.get(item.name)
            if description:
                schema["description"] = description
            properties[item.name] = schema
            if is_required:
                required.append(item.name)
        return object_schema(properties, required, top_level=top_level)

    def _field(self, item: Field) -> tuple[Schema, bool]:
        annotation = item.annotation
        schema: Schema = {} if annotation is None else self.annotation(annotation, item.line)
        has_default = item.default is not None or item.default_factory is not None
        if item.default is not None:
            if _is_none(item.default):
                schema["nullable"] = True
            else:
                ok, value = literal(item.default)
                is_json, json_value = to_json(value) if ok else (False, None)
                if ok and annotation is None:
                    schema = schema_of_value(value)
                if is_json:
                    schema["default"] = json_value
                else:
                    self.note(
                        item.line,
                        f"the default of `{item.name}` is not a JSON literal; "
                        "it is left to the script and not shown in the form",
                    )
        elif item.default_factory is not None:
            factory = _last_name(item.default_factory)
            empty: dict[str, Any] = {"list": [], "dict": {}, "set": [], "tuple": []}
            if factory in empty:
                if annotation is None:
                    schema = schema_of_value(empty[factory])
                schema["default"] = empty[factory]
        if item.required is not None:
            return schema, item.required
        return schema, not has_default and not schema.get("nullable", False)

    # -- annotations ---------------------------------------------------------------

    def annotation(self, node: ast.expr, line: int) -> Schema:
        """The schema for one annotation expression (a fresh dict the caller may edit)."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return self._forward_ref(node.value, line)
            return {}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._union(list(_union_members(node)), line)
        if isinstance(node, ast.Subscript):
            return self._generic(node, line)
        if isinstance(node, ast.Name | ast.Attribute):
            return self._named(node, line)
        self.note(line, f"unsupported annotation `{ast.unparse(node)}`; any value is accepted")
        return {}

    def _forward_ref(self, text: str, line: int) -> Schema:
        try:
            parsed = ast.parse(text.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            self.note(line, f"annotation {text!r} is not a valid type; any value is accepted")
            return {}
        return self.annotation(parsed.body, line)

    def resolve(self, node: ast.expr) -> tuple[str, str, bool] | None:
        """``(module, name, defined_here)``; module is ``""`` for a bare unimported name."""
        if isinstance(node, ast.Name):
            if node.id in self.index.classes or node.id in self.index.aliases:
                return "", node.id, True
            qualified = self.index.imports.get(node.id)
            if qualified is None:
                return "", node.id, False
        elif isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is None:
                return None
            module, name, _ = base
            qualified = f"{module}.{name}.{node.attr}" if module else f"{name}.{node.attr}"
        else:
            return None
        module, dot, name = qualified.rpartition(".")
        return module or dot, name, False  # ``from . import x`` → module "."

    def _union(self, members: list[ast.expr], line: int) -> Schema:
        nullable = any(_is_none(member) for member in members)
        options = [self.annotation(m, line) for m in members if not _is_none(m)]
        schema: Schema
        if len(options) == 1:
            schema = options[0]
        elif not options or any(option == {} for option in options):
            schema = {}
        else:
            schema = {"anyOf": options}
        if nullable:
            schema["nullable"] = True
        return schema

    def _literal(self, values: list[ast.expr], line: int) -> Schema:
        choices: list[Any] = []
        nullable = False
        for value in values:
            if isinstance(value, ast.Subscript) and self._generic_name(value) == "Literal":
                nested = self._literal(_subscript_args(value), line)
                choices.extend(nested.get("enum", []))
                nullable = nullable or nested.get("nullable", False)
                continue
            ok, choice = literal(value)
            if not ok or not isinstance(choice, str | int | float | bool | None):
                self.note(line, f"`{ast.unparse(value)}` is not a literal; it is left out")
                continue
            if choice is None:
                nullable = True
            elif choice not in choices:
                choices.append(choice)
        schema: Schema = {}
        for json_type, python_type in (
            ("string", str),
            ("boolean", bool),
            ("integer", int),
            ("number", float),
        ):
            if choices and all(type(choice) is python_type for choice in choices):
                schema["type"] = json_type
        schema["enum"] = choices
        if nullable:
            schema["nullable"] = True
        return schema

    def _generic_name(self, node: ast.Subscript) -> str | None:
        resolved = self.resolve(node.value)
        if resolved is None:
            return None
        module, name, defined_here = resolved
        return name if module in _TYPING and not defined_here else None

    def _generic(self, node: ast.Subscript, line: int) -> Schema:
        name = self._generic_name(node)
        args = _subscript_args(node)
        if name == "Optional":
            return self._union([*args, ast.Constant(value=None)], line)
        if name == "Union":
            return self._union(args, line)
        if name == "Literal":
            return self._literal(args, line)
        if name == "Annotated" or name in _QUALIFIERS:
            return self.annotation(args[0], line)
        if name in _ARRAYS:
            schema: Schema = {"type": "array"}
            if name in ("tuple", "Tuple") and not (
                len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is ...
            ):
                item_schemas = [self.annotation(arg, line) for arg in args]
                same = item_schemas and all(s == item_schemas[0] for s in item_schemas)
                items = item_schemas[0] if same else {}
            else:
                items = self.annotation(args[0], line)
            if items:
                schema["items"] = items
            return schema
        if name in _OBJECTS:
            return {"type": "object"}
        # A user generic (``Box[int]``) or an unknown one: judge by its base.
        return self.annotation(node.value, line)

    def _named(self, node: ast.Name | ast.Attribute, line: int) -> Schema:
        resolved = self.resolve(node)
        if resolved is None:  # an attribute of something that is not a name: ``f().x``
            self.note(line, f"unsupported annotation `{ast.unparse(node)}`; any value is accepted")
            return {}
        module, name, defined_here = resolved
        if defined_here:
            if name in self.index.classes:
                return self._class(self.index.classes[name], line)
            return self._alias(name, self.index.aliases[name], line)
        if module in _TYPING:
            if name in _SCALARS:
                return dict(_SCALARS[name])
            if name in _ANY or name == "None":
                return {}
            if name in _ARRAYS:
                return {"type": "array"}
            if name in _OBJECTS:
                return {"type": "object"}
        if module in ("", "datetime") and name in _DATETIME:
            return dict(_DATETIME[name])
        if module in ("", "uuid") and name == "UUID":
            return {"type": "string", "format": "uuid"}
        resource = self._resource_name(module, name)
        if resource is not None:
            return _resource(resource)
        shown = f"{module}.{name}" if module and not module.endswith(".") else module + name
        self.note(line, f"unknown type `{shown}`; any value is accepted")
        return {}

    def _resource_name(self, module: str, name: str, *, defined_here: bool = False) -> str | None:
        """The resource type a type name stands for, if it stands for one.

        A lowercase name defined in the script or used without import is a resource
        type (``class postgresql(TypedDict)``); a CamelCase spelling is one when its
        snake_case form is a known resource type (``Postgresql``, ``S3Object``), and
        anything imported from ``wmill`` is one.
        """
        snake = snake_case(name)
        if defined_here and name.islower():
            return name
        if module == "" and name.islower() and name not in _BUILTINS:
            return name
        if snake in KNOWN_RESOURCE_TYPES:
            return snake
        if module == "wmill" or module.startswith("wmill."):
            return snake
        return None

    def _class(self, cls: ast.ClassDef, line: int) -> Schema:
        resource = self._resource_name("", cls.name, defined_here=True)
        if resource is not None:
            return _resource(resource)
        kind = self._struct_kind(cls, set())
        if kind is None:
            self.note(
                line,
                f"class `{cls.name}` is not a TypedDict, a dataclass or a pydantic model; "
                "any value is accepted",
            )
            return {}
        if cls.name in self._active:
            self.note(line, f"`{cls.name}` refers to itself; its inner level is a plain object")
            return {"type": "object"}
        self._active.append(cls.name)
        try:
            fields = self._class_fields(cls, kind, set())
            descriptions = parse_docstring(ast.get_docstring(cls)).params
            return self.object_schema(fields, descriptions)
        finally:
            self._active.pop()

    def _alias(self, name: str, value: ast.expr, line: int) -> Schema:
        if name in self._active:
            self.note(line, f"`{name}` refers to itself; its inner level accepts any value")
            return {}
        if isinstance(value, ast.Call):  # TypedDict("Name", {...}); _looks_like_type checked
            resource = self._resource_name("", name, defined_here=True)
            if resource is not None:
                return _resource(resource)
            self._active.append(name)
            try:
                return self.object_schema(_functional_typeddict_fields(value), {})
            finally:
                self._active.pop()
        self._active.append(name)
        try:
            schema = self.annotation(value, line)
        finally:
            self._active.pop()
        resource = self._resource_name("", name, defined_here=True)
        if resource is not None and schema == {"type": "object"}:
            return _resource(resource)  # ``postgresql = dict``
        return schema

    def _struct_kind(self, cls: ast.ClassDef, seen: set[str]) -> str | None:
        """``"typeddict"``, ``"dataclass"``, ``"model"`` (pydantic) or ``None``."""
        seen.add(cls.name)
        for decorator in cls.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            resolved = self.resolve(target)
            if resolved is not None and resolved[1] == "dataclass":
                return "dataclass"
        for base in cls.bases:
            resolved = self.resolve(base)
            if resolved is None:
                continue
            module, name, defined_here = resolved
            if defined_here and name in self.index.classes and name not in seen:
                kind = self._struct_kind(self.index.classes[name], seen)
                if kind is not None:
                    return kind
            elif name == "TypedDict" and module in _TYPING:
                return "typeddict"
            elif name == "BaseModel" and (module == "" or module.startswith("pydantic")):
                return "model"
        return None

    def _class_fields(self, cls: ast.ClassDef, kind: str, seen: set[str]) -> list[Field]:
        seen.add(cls.name)
        fields: dict[str, Field] = {}
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in self.index.classes and base.id not in seen:
                parent = self.index.classes[base.id]
                for inherited in self._class_fields(parent, kind, seen):
                    fields[inherited.name] = inherited
        total = not any(
            keyword.arg == "total"
            and isinstance(keyword.value, ast.Constant)
            and keyword.value.value is False
            for keyword in cls.keywords
        )
        for stmt in cls.body:
            if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                continue
            qualifiers = self._qualifiers(stmt.annotation)
            if "ClassVar" in qualifiers or _last_name(stmt.annotation) == "KW_ONLY":
                continue
            name = stmt.target.id
            if kind == "typeddict":
                required: bool | None = None
                if "Required" in qualifiers:
                    required = True
                elif "NotRequired" in qualifiers or not total:
                    required = False
                fields[name] = Field(
                    name=name, annotation=stmt.annotation, line=stmt.lineno, required=required
                )
            else:
                fields[name] = _class_attribute(name, stmt, pydantic=kind == "model")
        return list(fields.values())

    def _qualifiers(self, node: ast.expr) -> set[str]:
        """``Required``/``NotRequired``/``ClassVar``... wrapping an annotation."""
        found: set[str] = set()
        while True:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    node = ast.parse(node.value.strip(), mode="eval").body
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    return found
                continue
            if not isinstance(node, ast.Subscript | ast.Name | ast.Attribute):
                return found
            base = node.value if isinstance(node, ast.Subscript) else node
            resolved = self.resolve(base)
            if resolved is None or resolved[2] or resolved[0] not in _TYPING:
                return found
            name = resolved[1]
            if name not in _QUALIFIERS and name != "Annotated":
                return found
            found.add(name)
            if not isinstance(node, ast.Subscript):
                return found
            node = _subscript_args(node)[0]


def _class_attribute(name: str, stmt: ast.AnnAssign, *, pydantic: bool) -> Field:
    """A dataclass or pydantic field, with ``field(...)``/``Field(...)`` unpacked."""
    value = stmt.value
    base = Field(name=name, annotation=stmt.annotation, line=stmt.lineno)
    if value is None:
        return base
    if isinstance(value, ast.Constant) and value.value is ...:
        return base  # pydantic's "required" marker
    if not (isinstance(value, ast.Call) and _last_name(value.func) in ("field", "Field")):
        return Field(name=name, annotation=stmt.annotation, line=stmt.lineno, default=value)
    default: ast.expr | None = None
    factory: ast.expr | None = None
    description: str | None = None
    if (
        pydantic
        and value.args
        and not (isinstance(value.args[0], ast.Constant) and value.args[0].value is ...)
    ):
        default = value.args[0]
    for keyword in value.keywords:
        if keyword.arg == "default" and not (
            isinstance(keyword.value, ast.Constant) and keyword.value.value is ...
        ):
            default = keyword.value
        elif keyword.arg == "default_factory":
            factory = keyword.value
        elif (
            keyword.arg == "description"
            and isinstance(keyword.value, ast.Constant)
            and isinstance(keyword.value.value, str)
        ):
            description = keyword.value.value
    return Field(
        name=name,
        annotation=stmt.annotation,
        line=stmt.lineno,
        default=default,
        default_factory=factory,
        description=description,
    )


def _functional_typeddict_fields(call: ast.Call) -> list[Field]:
    total = not any(
        keyword.arg == "total"
        and isinstance(keyword.value, ast.Constant)
        and keyword.value.value is False
        for keyword in call.keywords
    )
    if len(call.args) < 2 or not isinstance(call.args[1], ast.Dict):
        return []
    fields: list[Field] = []
    for key, annotation in zip(call.args[1].keys, call.args[1].values, strict=True):
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            fields.append(
                Field(
                    name=key.value,
                    annotation=annotation,
                    line=annotation.lineno,
                    required=None if total else False,
                )
            )
    return fields
