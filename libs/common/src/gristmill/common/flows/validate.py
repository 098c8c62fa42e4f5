"""Checks of a flow at save time, each naming the offending module.

``validate_value`` parses the raw ``value`` and reports every problem it finds: a
malformed module, a duplicate or empty step id, an expression that does not compile
or reads the result of a step the flow does not have, an ``early_return`` naming no
step, a loop ``parallelism`` below 1. ``check_subflow_cycles`` follows the saved flows a
flow runs (``flow`` modules) and refuses a cycle back to itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import msgspec

from gristmill.common.errors import InvalidRequest
from gristmill.common.flows.expressions import Evaluator, ExpressionError, default_evaluator
from gristmill.common.flows.expressions import referenced_steps as _referenced
from gristmill.common.flows.model import (
    BranchOne,
    FlowModule,
    FlowValue,
    ForloopFlow,
    JavascriptTransform,
    PathFlow,
    PathScript,
    RawScript,
    WhileloopFlow,
    iter_modules,
    parse_value,
)

__all__ = [
    "FlowInvalid",
    "Problem",
    "all_modules",
    "check_subflow_cycles",
    "find_problems",
    "ignored_settings",
    "validate_value",
]

_MAX_ID: Final = 255


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    location: str
    message: str


class FlowInvalid(InvalidRequest):
    """A flow breaks a rule; ``location``/``message`` are the first problem of ``problems``."""

    code = "invalid_flow"

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        extra = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(
            first.message + extra,
            location=first.location,
            problems=[msgspec.to_builtins(p) for p in problems],
        )
        self.problems = problems


def all_modules(value: FlowValue) -> Iterator[tuple[FlowModule, str]]:
    """Every module of the flow with its location, special modules included."""
    yield from iter_modules(value.modules)
    if value.failure_module is not None:
        yield from iter_modules([value.failure_module], "value.failure_module")
    if value.preprocessor_module is not None:
        yield from iter_modules([value.preprocessor_module], "value.preprocessor_module")


def _expressions(module: FlowModule, where: str) -> Iterator[tuple[str, str]]:
    """(location, expression) of every JavaScript the module holds (not nested modules)."""
    value = module.value
    if isinstance(value, RawScript | PathScript | PathFlow):
        for name, transform in value.input_transforms.items():
            if isinstance(transform, JavascriptTransform):
                yield f"{where}.value.input_transforms.{name}.expr", transform.expr
    if isinstance(value, ForloopFlow) and isinstance(value.iterator, JavascriptTransform):
        yield f"{where}.value.iterator.expr", value.iterator.expr
    if isinstance(value, ForloopFlow | WhileloopFlow) and isinstance(
        value.parallelism, JavascriptTransform
    ):
        yield f"{where}.value.parallelism.expr", value.parallelism.expr
    if isinstance(value, BranchOne):
        for number, branch in enumerate(value.branches):
            yield f"{where}.value.branches[{number}].expr", branch.expr
    for name in ("stop_after_if", "stop_after_all_iters_if", "skip_if"):
        condition = getattr(module, name)
        if condition is not None:
            yield f"{where}.{name}.expr", condition.expr
    for name in ("sleep", "timeout"):
        transform = getattr(module, name)
        if isinstance(transform, JavascriptTransform):
            yield f"{where}.{name}.expr", transform.expr
    if module.retry is not None and module.retry.retry_if is not None:
        yield f"{where}.retry.retry_if.expr", module.retry.retry_if.expr
    if module.suspend is not None and isinstance(
        module.suspend.user_groups_required, JavascriptTransform
    ):
        yield f"{where}.suspend.user_groups_required.expr", module.suspend.user_groups_required.expr


def _module_problems(module: FlowModule, where: str) -> Iterator[Problem]:
    value = module.value
    if isinstance(value, RawScript):
        if not value.language:
            yield Problem(location=f"{where}.value.language", message="language is empty")
    elif isinstance(value, PathScript | PathFlow) and not value.path:
        yield Problem(location=f"{where}.value.path", message="path is empty")
    if (
        isinstance(value, ForloopFlow | WhileloopFlow)
        and isinstance(value.parallelism, int)
        and value.parallelism < 1
    ):
        yield Problem(
            location=f"{where}.value.parallelism", message="parallelism must be at least 1"
        )
    if module.retry is not None:
        for policy in (module.retry.constant, module.retry.exponential):
            if policy is not None and policy.attempts < 0:
                yield Problem(location=f"{where}.retry", message="retry attempts must be >= 0")
    if module.suspend is not None and (module.suspend.required_events or 1) < 1:
        yield Problem(
            location=f"{where}.suspend.required_events",
            message="required_events must be at least 1",
        )


def ignored_settings(value: FlowValue) -> list[Problem]:
    """Settings the flow asks for that this version accepts but does not apply.

    They are kept in the document (a save and a read give them back) and the flow runs
    without them; the flow API reports them on save (header ``x-gristmill-warning``).
    """
    found: list[Problem] = []
    if value.debounce_delay_s:
        found.append(
            Problem(location="value.debounce_delay_s", message="debouncing is not applied")
        )
    if not value.concurrent_limit and (value.concurrency_time_window_s or value.concurrency_key):
        found.append(
            Problem(
                location="value.concurrent_limit",
                message="concurrency_key and concurrency_time_window_s apply only with a "
                "concurrent_limit",
            )
        )
    if value.flow_env:
        found.append(
            Problem(location="value.flow_env", message="flow_env is not passed to the steps")
        )
    for module, where in all_modules(value):
        if module.cache_ttl and not isinstance(module.value, RawScript | PathScript | PathFlow):
            found.append(
                Problem(
                    location=f"{where}.cache_ttl",
                    message="cache_ttl applies to script and flow steps only; "
                    "this module is not cached",
                )
            )
    return found


def find_problems(value: FlowValue, evaluator: Evaluator | None = None) -> list[Problem]:
    """Every problem of a parsed flow (an empty list: the flow is fine)."""
    evaluator = evaluator or default_evaluator()
    problems: list[Problem] = []
    modules = list(all_modules(value))
    seen: dict[str, str] = {}
    for module, where in modules:
        if not module.id or len(module.id) > _MAX_ID or any(c.isspace() for c in module.id):
            problems.append(
                Problem(
                    location=f"{where}.id",
                    message=f"invalid step id {module.id!r}: use 1-{_MAX_ID} characters, no spaces",
                )
            )
        elif module.id in seen:
            problems.append(
                Problem(
                    location=f"{where}.id",
                    message=f"step id {module.id!r} is already used at {seen[module.id]}",
                )
            )
        else:
            seen[module.id] = where
    sites: list[tuple[str, str, str | None]] = []
    for module, where in modules:
        problems.extend(_module_problems(module, where))
        sites.extend((loc, expr, module.id) for loc, expr in _expressions(module, where))
    if value.skip_expr:
        sites.append(("value.skip_expr", value.skip_expr, None))
    for location, expr, step in sites:
        label = f"step {step!r}: " if step is not None else ""
        try:
            evaluator.check(expr)
        except ExpressionError as exc:
            problems.append(Problem(location=location, message=f"{label}{exc.message} in `{expr}`"))
            continue
        for ref in sorted(_referenced(expr) or ()):
            if ref not in seen:
                problems.append(
                    Problem(
                        location=location,
                        message=f"{label}`{expr}` reads results.{ref}, but the flow has no "
                        f"step {ref!r}",
                    )
                )
    if value.early_return is not None and value.early_return not in {m.id for m in value.modules}:
        problems.append(
            Problem(
                location="value.early_return",
                message=f"early_return names {value.early_return!r}, which is not a "
                "top-level step of the flow",
            )
        )
    return problems


def validate_value(
    raw: Any, *, evaluator: Evaluator | None = None, location: str = "value"
) -> FlowValue:
    """The parsed flow; ``InvalidRequest``/``FlowInvalid`` when it is malformed or wrong."""
    value = parse_value(raw, location=location)
    problems = find_problems(value, evaluator)
    if problems:
        raise FlowInvalid(problems)
    return value


#: Reads a saved flow's value by path (``None``: no such flow).
FlowLoader = Callable[[str], Awaitable[FlowValue | None]]


async def check_subflow_cycles(path: str | None, value: FlowValue, load: FlowLoader) -> None:
    """Refuse a flow that runs itself through saved sub-flows (``flow`` modules).

    Flows not saved yet are skipped (they are checked when they run).
    """
    stack: list[tuple[FlowValue, tuple[str, ...]]] = [(value, (path,) if path else ())]
    cache: dict[str, FlowValue | None] = {}
    while stack:
        current, chain = stack.pop()
        for module, where in all_modules(current):
            if not isinstance(module.value, PathFlow):
                continue
            target = module.value.path
            if target in chain:
                cycle = " -> ".join((*chain, target))
                raise FlowInvalid(
                    [
                        Problem(
                            location=f"{where}.value.path" if len(chain) <= 1 else "value",
                            message=f"step {module.id!r}: sub-flows form a cycle: {cycle}",
                        )
                    ]
                )
            if target not in cache:
                cache[target] = await load(target)
            loaded = cache[target]
            if loaded is not None:
                stack.append((loaded, (*chain, target)))
