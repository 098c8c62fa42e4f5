"""The import statements of a script, read with :mod:`ast`, as distributions and paths."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from gristmill.common.pydeps.mapping import distribution_for

__all__ = ["WORKSPACE_ROOTS", "ImportStatement", "read_imports"]

#: First component of a workspace script path: ``u/<user>/...`` or ``f/<folder>/...``.
WORKSPACE_ROOTS = frozenset({"u", "f"})
#: ``u/<user>/<script>``: the fewest components a script path has.
_MIN_PATH_PARTS = 3


@dataclass(slots=True)
class ImportStatement:
    """One ``import`` or ``from ... import`` statement (lines ``line``..``end_line``)."""

    line: int
    end_line: int
    distributions: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)


def read_imports(module: ast.Module, path: str | None) -> list[ImportStatement]:
    """Every import statement in ``module``, nested ones included, in source order.

    Imports under ``if TYPE_CHECKING:`` are skipped: they never run. ``path`` is the
    script's own workspace path, used to resolve ``from .other import x``; without it
    dot-relative imports are ignored.
    """
    reader = _Reader(path)
    reader.visit(module)
    return reader.statements


class _Reader(ast.NodeVisitor):
    def __init__(self, path: str | None) -> None:
        self.package = path.split("/")[:-1] if path else None
        self.statements: list[ImportStatement] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        statement = self._statement(node)
        for alias in node.names:
            self._add(statement, alias.name.split("."))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        statement = self._statement(node)
        names = [alias.name for alias in node.names]
        if node.level:
            base = self._relative_base(node.level)
            if base is None:
                return
            parts = base + (node.module.split(".") if node.module else [])
            if not parts or parts[0] not in WORKSPACE_ROOTS:
                return
        else:
            parts = (node.module or "").split(".")
        if parts[0] in WORKSPACE_ROOTS:
            if len(parts) >= _MIN_PATH_PARTS:
                self._add_script(statement, parts)
            else:  # `from f.folder import script_a, script_b`
                for name in names:
                    if name != "*":
                        self._add_script(statement, [*parts, name])
            return
        for name in names:
            self._add(statement, parts if name == "*" else [*parts, name])

    def _statement(self, node: ast.Import | ast.ImportFrom) -> ImportStatement:
        statement = ImportStatement(line=node.lineno, end_line=node.end_lineno or node.lineno)
        self.statements.append(statement)
        return statement

    def _relative_base(self, level: int) -> list[str] | None:
        if self.package is None or level - 1 > len(self.package):
            return None
        return self.package[: len(self.package) - (level - 1)]

    def _add(self, statement: ImportStatement, parts: list[str]) -> None:
        if parts[0] in WORKSPACE_ROOTS:  # `import f.folder.script`
            self._add_script(statement, parts)
            return
        distribution = distribution_for(".".join(parts))
        if distribution is not None and distribution not in statement.distributions:
            statement.distributions.append(distribution)

    @staticmethod
    def _add_script(statement: ImportStatement, parts: list[str]) -> None:
        if len(parts) < _MIN_PATH_PARTS or parts[0] not in WORKSPACE_ROOTS or "" in parts:
            return
        script = "/".join(parts)
        if script not in statement.scripts:
            statement.scripts.append(script)


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
