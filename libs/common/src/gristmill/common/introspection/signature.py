"""What introspection yields: a script's input schema plus facts about its entry point."""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["JSON_SCHEMA_DIALECT", "ScriptSignature", "object_schema"]

#: The JSON Schema dialect every generated schema declares in ``$schema``.
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


class ScriptSignature(msgspec.Struct, frozen=True, kw_only=True):
    """The inputs a script accepts, read from its source without running it.

    ``schema`` is a JSON Schema object (draft 2020-12) in the shape Windmill-style
    forms expect: ``properties``, ``required`` and ``order`` (the parameter names in
    declaration order, since ``jsonb`` does not keep key order). An optional
    parameter keeps its ``type`` for the form and carries ``"nullable": true``;
    whoever validates arguments against the schema must accept ``null`` there.
    """

    #: ``"python3"`` or ``"bash"``.
    language: str
    schema: dict[str, Any]
    #: ``main`` is ``async def`` (always false for Bash).
    is_async: bool = False
    #: First paragraph of ``main``'s docstring (Python) or of the header comment (Bash).
    summary: str | None = None
    #: Things the parser skipped or could not express, for the author, with line numbers.
    notes: tuple[str, ...] = ()

    @property
    def args(self) -> list[str]:
        """Parameter names in declaration order."""
        order: list[str] = self.schema.get("order", [])
        return list(order)


def object_schema(
    properties: dict[str, dict[str, Any]], required: list[str], *, top_level: bool = False
) -> dict[str, Any]:
    """An object schema with ``order`` set from ``properties``' insertion order."""
    schema: dict[str, Any] = {}
    if top_level:
        schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["type"] = "object"
    schema["properties"] = properties
    schema["required"] = required
    schema["order"] = list(properties)
    return schema
