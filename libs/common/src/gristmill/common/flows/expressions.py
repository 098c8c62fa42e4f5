"""JavaScript expressions of flows, evaluated in QuickJS.

Input transforms, ``skip_if``, ``stop_after_if``, branch predicates, loop iterators,
``sleep``/``timeout`` and ``retry_if`` are JavaScript *expressions* over a few names:

``flow_input``
    the flow's arguments (inside a loop, ``flow_input.iter.value`` / ``.index``);
``results``
    the results of earlier steps by id (``results.a``);
``previous_result``
    the result of the step just before (the flow input for the first step);
``params``
    the arguments of the current step (once computed);
``result``
    the module's own result (``stop_after_if``) or error (``retry_if``);
``resume``, ``approvers``
    after an approval step: its payload and who approved.

Each expression is compiled once into a function and kept (per workspace: one QuickJS
context per workspace, so expressions of different workspaces never share globals).
Every call runs under a time limit and the context under a memory limit; a context
that ran out of memory is retired. Values cross the boundary as JSON.

The ``quickjs`` binding crashes the process when it frees a context whose evaluation
ran out of memory, so such a context is never freed: it is retired with an extra
reference (its memory, at most the limit, stays allocated) and an error is logged.
"""

from __future__ import annotations

import ctypes
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import quickjs  # type: ignore[import-untyped]  # the binding ships no type information
import structlog

from gristmill.common.errors import InvalidRequest

__all__ = [
    "NAMES",
    "Evaluator",
    "ExpressionError",
    "ExpressionLimits",
    "default_evaluator",
    "referenced_steps",
]

#: The names an expression may use.
NAMES: Final = (
    "flow_input",
    "results",
    "previous_result",
    "params",
    "result",
    "resume",
    "approvers",
    "error",
)
_WRAPPER: Final = "(function(__gm){{ const {{{names}}} = __gm; return ({expr}\n); }})"
_STEP_REF: Final = re.compile(
    r"(?<![\w$.])results\s*(?:\?\.\s*|\.\s*)([A-Za-z_$][\w$]*)"
    r"|(?<![\w$.])results\s*(?:\?\.\s*)?\[\s*(['\"`])([^'\"`]*)\2\s*\]"
)
_DYNAMIC_REF: Final = re.compile(r"(?<![\w$.])results\b(?!\s*(?:\?\.|\.|\[\s*['\"`]))")
_json_encoder = msgspec.json.Encoder()
_log = structlog.get_logger(__name__)


class ExpressionError(InvalidRequest):
    """An expression could not be compiled or evaluated; ``js_error`` is JavaScript's word."""

    code = "expression_error"

    def __init__(self, message: str, *, expr: str, js_error: str, location: str | None = None):
        super().__init__(message, location=location, expr=expr, js_error=js_error)
        self.expr = expr
        self.js_error = js_error


class ExpressionLimits(msgspec.Struct, frozen=True, kw_only=True):
    #: Longest run of one evaluation.
    time_limit_s: float = 0.25
    #: Memory of a workspace's context (all its compiled expressions and one evaluation).
    memory_limit_bytes: int = 16 * 1024 * 1024
    #: Compiled expressions kept per workspace; beyond, the context starts afresh.
    max_cached: int = 2000
    #: Workspaces whose contexts are kept (least recently used go first).
    max_workspaces: int = 64


class _Scope:
    __slots__ = ("context", "functions")

    def __init__(self, limits: ExpressionLimits) -> None:
        self.context = quickjs.Context()
        self.context.set_memory_limit(limits.memory_limit_bytes)
        self.context.set_time_limit(limits.time_limit_s)
        self.functions: dict[str, Any] = {}


def _first_line(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line or "unknown error"


def _source(expr: str) -> str:
    body = expr.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    return _WRAPPER.format(names=", ".join(NAMES), expr=body)


class Evaluator:
    """Compiles and evaluates expressions; safe to share within one thread (event loop)."""

    def __init__(self, limits: ExpressionLimits | None = None) -> None:
        self.limits = limits or ExpressionLimits()
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        #: Compilations done (tests check that the cache is used).
        self.compiled = 0
        #: Contexts retired after running out of memory.
        self.retired = 0

    def _scope(self, workspace: str) -> _Scope:
        scope = self._scopes.get(workspace)
        if scope is None:
            scope = _Scope(self.limits)
            self._scopes[workspace] = scope
            while len(self._scopes) > self.limits.max_workspaces:
                self._scopes.popitem(last=False)
        else:
            self._scopes.move_to_end(workspace)
        return scope

    def _function(self, scope: _Scope, expr: str) -> Any:
        function = scope.functions.get(expr)
        if function is not None:
            return function
        if len(scope.functions) >= self.limits.max_cached:
            scope.functions.clear()
            scope.context = _Scope(self.limits).context
        try:
            function = scope.context.eval(_source(expr))
        except quickjs.JSException as exc:
            raise ExpressionError(
                f"expression does not compile: {_first_line(str(exc))}",
                expr=expr,
                js_error=_first_line(str(exc)),
            ) from None
        self.compiled += 1
        scope.functions[expr] = function
        return function

    def _retire(self, workspace: str, expr: str) -> None:
        """Stop using a context that ran out of memory, without ever freeing it."""
        scope = self._scopes.pop(workspace, None)
        if scope is None:
            return
        # Freeing it would crash the process (see the module's docstring): one more
        # reference that nothing releases keeps it alive until the process exits.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(scope.context))
        for function in scope.functions.values():
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(function))
        self.retired += 1
        _log.error(
            "expression ran out of memory; its context is retired (not freed)",
            workspace=workspace,
            expr=expr[:200],
            limit_bytes=self.limits.memory_limit_bytes,
            retired=self.retired,
        )

    def check(self, expr: str, *, workspace: str = "") -> None:
        """Compile ``expr`` (raises ``ExpressionError`` on a syntax error)."""
        self._function(self._scope(workspace), expr)

    def evaluate(self, expr: str, names: Mapping[str, Any], *, workspace: str = "") -> Any:
        """The value of ``expr`` with ``names`` bound (JSON values; others are undefined).

        Raises ``ExpressionError`` saying what JavaScript said (or which limit was hit).
        """
        scope = self._scope(workspace)
        function = self._function(scope, expr)
        context = scope.context
        try:
            argument = context.parse_json(_json_encoder.encode(dict(names)).decode())
            value = function(argument)
        except quickjs.JSException as exc:
            js_error = _first_line(str(exc))
            # Out of memory shows in several ways, sometimes without a message at all.
            if js_error in {"null", "InternalError: out of memory"} or js_error.startswith(
                "(Failed obtaining QuickJS error string"
            ):
                self._retire(workspace, expr)
                js_error = (
                    f"out of memory (limit {self.limits.memory_limit_bytes // (1024 * 1024)} MiB)"
                )
            elif js_error.startswith("InternalError: interrupted"):
                js_error = f"took longer than the limit of {self.limits.time_limit_s:g} s"
            raise ExpressionError(
                f"expression failed: {js_error}", expr=expr, js_error=js_error
            ) from None
        except quickjs.StackOverflow:
            raise ExpressionError(
                "expression failed: stack overflow", expr=expr, js_error="stack overflow"
            ) from None
        return _to_python(value, expr)


def _to_python(value: Any, expr: str) -> Any:
    if isinstance(value, quickjs.Object):
        try:
            text = value.json()
        except quickjs.JSException as exc:
            js_error = _first_line(str(exc))
            raise ExpressionError(
                f"expression result is not JSON: {js_error}", expr=expr, js_error=js_error
            ) from None
        if text is None:  # a function, a symbol: JSON has no such value
            return None
        return msgspec.json.decode(text)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def referenced_steps(expr: str) -> set[str] | None:
    """The step ids ``expr`` reads from ``results``; ``None`` if it indexes it dynamically."""
    found: set[str] = set()
    for match in _STEP_REF.finditer(expr):
        found.add(match.group(1) or match.group(3))
    if _DYNAMIC_REF.search(expr):
        return None
    return found


_default = Evaluator()


def default_evaluator() -> Evaluator:
    """The process's evaluator (its cache is shared by every flow the process advances)."""
    return _default
