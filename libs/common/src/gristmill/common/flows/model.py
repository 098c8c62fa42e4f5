"""The OpenFlow format (Windmill's flow definition) as msgspec structs.

A flow's ``value`` holds its ``modules`` (the steps, run in order), an optional
``failure_module`` (runs when a step fails) and ``preprocessor_module`` (reshapes the
arguments of triggered runs), and flow-wide settings. A module's ``value`` is one of:
an inline script (``rawscript``), a saved script (``script``), a saved flow (``flow``),
a loop over an iterator (``forloopflow``), a loop until a condition
(``whileloopflow``), the first branch whose predicate holds (``branchone``), every
branch (``branchall``), or a pass-through (``identity``).

Documents are stored as sent: the typed model is read from the raw mapping and never
written back, so fields this version does not know survive a save and a read
unchanged (``parse_value`` checks, ``raw`` is what is kept).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, TypeAlias

import msgspec
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from gristmill.common.errors import InvalidRequest

__all__ = [
    "MODULE_TYPES",
    "BranchAll",
    "BranchAllBranch",
    "BranchOne",
    "BranchOneBranch",
    "ConstantRetry",
    "ExponentialRetry",
    "FlowModule",
    "FlowValue",
    "ForloopFlow",
    "Identity",
    "InputTransform",
    "JavascriptTransform",
    "Mock",
    "ModuleValue",
    "OpenFlow",
    "PathFlow",
    "PathScript",
    "RawScript",
    "Retry",
    "RetryIf",
    "SkipIf",
    "StaticTransform",
    "StopAfterIf",
    "Suspend",
    "WhileloopFlow",
    "decode_document",
    "encode_yaml",
    "iter_modules",
    "parse_openflow",
    "parse_value",
]


class StaticTransform(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="static"):
    """A constant argument."""

    value: Any = None


class JavascriptTransform(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="javascript"
):
    """An argument computed by a JavaScript expression (see ``flows.expressions``)."""

    expr: str


InputTransform: TypeAlias = StaticTransform | JavascriptTransform


class ConstantRetry(msgspec.Struct, frozen=True, kw_only=True):
    attempts: int = 0
    seconds: float = 0


class ExponentialRetry(msgspec.Struct, frozen=True, kw_only=True):
    """Retry ``n`` waits ``multiplier * seconds ** n`` seconds (``random_factor`` % jitter)."""

    attempts: int = 0
    multiplier: float = 1
    seconds: float = 1
    random_factor: int | None = None


class RetryIf(msgspec.Struct, frozen=True, kw_only=True):
    """Retry only when this expression (over ``result``: the error) is truthy."""

    expr: str


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    constant: ConstantRetry | None = None
    exponential: ExponentialRetry | None = None
    retry_if: RetryIf | None = None


class StopAfterIf(msgspec.Struct, frozen=True, kw_only=True):
    """Stop the flow after the module when ``expr`` (over ``result``) is truthy."""

    expr: str
    skip_if_stopped: bool = False
    #: Set: the flow fails with this message (empty: a default one).
    error_message: str | None = None


class SkipIf(msgspec.Struct, frozen=True, kw_only=True):
    expr: str


class Mock(msgspec.Struct, frozen=True, kw_only=True):
    """Enabled: the module does not run; ``return_value`` is its result."""

    enabled: bool = False
    return_value: Any = None


class Suspend(msgspec.Struct, frozen=True, kw_only=True):
    """After the module ran, wait for ``required_events`` approvals (resume events)."""

    required_events: int | None = None
    #: Seconds to wait; then the step fails (or continues, see below).
    timeout: float | None = None
    resume_form: dict[str, Any] | None = None
    user_auth_required: bool = False
    user_groups_required: InputTransform | None = None
    self_approval_disabled: bool = False
    hide_cancel: bool = False
    continue_on_disapprove_timeout: bool = False


class RawScript(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="rawscript"):
    content: str
    language: str
    input_transforms: dict[str, InputTransform] = msgspec.field(default_factory=dict)
    path: str | None = None
    lock: str | None = None
    tag: str | None = None
    concurrent_limit: int | None = None
    concurrency_time_window_s: float | None = None
    custom_concurrency_key: str | None = None
    is_trigger: bool | None = None


class PathScript(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="script"):
    path: str
    hash: str | None = None
    input_transforms: dict[str, InputTransform] = msgspec.field(default_factory=dict)
    tag_override: str | None = None
    is_trigger: bool | None = None


class PathFlow(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="flow"):
    path: str
    input_transforms: dict[str, InputTransform] = msgspec.field(default_factory=dict)


class ForloopFlow(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="forloopflow"):
    """Run ``modules`` once per item of ``iterator`` (``flow_input.iter.value/index``)."""

    modules: list[FlowModule]
    iterator: InputTransform
    skip_failures: bool = False
    parallel: bool = False
    #: Most iterations running at once (``parallel`` only); older documents use a number.
    parallelism: InputTransform | int | None = None


class WhileloopFlow(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="whileloopflow"
):
    """Run ``modules`` again until the module's ``stop_after_if`` holds.

    ``parallel``: ``parallelism`` iterations run side by side (one without it); once
    one stops the loop, no more start and those running finish.
    """

    modules: list[FlowModule]
    skip_failures: bool = False
    parallel: bool = False
    parallelism: InputTransform | int | None = None


class BranchOneBranch(msgspec.Struct, frozen=True, kw_only=True):
    expr: str
    modules: list[FlowModule]
    summary: str | None = None


class BranchOne(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="branchone"):
    """Run the first branch whose ``expr`` is truthy, else ``default``."""

    branches: list[BranchOneBranch]
    default: list[FlowModule] = msgspec.field(default_factory=list)


class BranchAllBranch(msgspec.Struct, frozen=True, kw_only=True):
    modules: list[FlowModule]
    summary: str | None = None
    #: A failure of this branch becomes its result instead of failing the module.
    skip_failure: bool = False


class BranchAll(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="branchall"):
    """Run every branch; the result is the list of the branches' results."""

    branches: list[BranchAllBranch]
    parallel: bool = False


class Identity(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="identity"):
    """Pass ``previous_result`` on."""

    flow: bool = False


ModuleValue: TypeAlias = (
    RawScript
    | PathScript
    | PathFlow
    | ForloopFlow
    | WhileloopFlow
    | BranchOne
    | BranchAll
    | Identity
)
#: The ``type`` of every module value this version runs.
MODULE_TYPES: Final = frozenset(
    {
        "rawscript",
        "script",
        "flow",
        "forloopflow",
        "whileloopflow",
        "branchone",
        "branchall",
        "identity",
    }
)


class FlowModule(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    value: ModuleValue
    summary: str | None = None
    stop_after_if: StopAfterIf | None = None
    stop_after_all_iters_if: StopAfterIf | None = None
    skip_if: SkipIf | None = None
    #: Seconds to wait after the module ran, before the next one.
    sleep: InputTransform | float | None = None
    cache_ttl: float | None = None
    #: Seconds the module's job may run (older documents use a number).
    timeout: InputTransform | float | None = None
    delete_after_use: bool | None = None
    mock: Mock | None = None
    suspend: Suspend | None = None
    priority: int | None = None
    #: A failure of the module becomes its result and the flow goes on.
    continue_on_error: bool = False
    retry: Retry | None = None


class FlowValue(msgspec.Struct, frozen=True, kw_only=True):
    modules: list[FlowModule]
    failure_module: FlowModule | None = None
    preprocessor_module: FlowModule | None = None
    same_worker: bool = False
    concurrent_limit: int | None = None
    concurrency_key: str | None = None
    concurrency_time_window_s: float | None = None
    debounce_delay_s: float | None = None
    debounce_key: str | None = None
    #: The flow is skipped (succeeds at once, with no result) when this is truthy.
    skip_expr: str | None = None
    cache_ttl: float | None = None
    flow_env: dict[str, str] | None = None
    priority: int | None = None
    #: The id of the step whose result answers synchronous callers at once.
    early_return: str | None = None


class OpenFlow(msgspec.Struct, frozen=True, kw_only=True):
    """A whole document: what ``flows/create`` and ``flows/get`` exchange."""

    value: FlowValue
    summary: str = ""
    description: str = ""
    schema: dict[str, Any] | None = None


def _unsupported_type(raw: Any, where: str) -> str | None:
    """Where a module of an unknown ``type`` sits (msgspec would only say 'invalid')."""
    if isinstance(raw, Mapping):
        value = raw.get("value")
        if "id" in raw and isinstance(value, Mapping):
            kind = value.get("type")
            if isinstance(kind, str) and kind not in MODULE_TYPES:
                return (
                    f"{where}: unsupported module type {kind!r} (supported: "
                    + ", ".join(sorted(MODULE_TYPES))
                    + ")"
                )
        for key, item in raw.items():
            found = _unsupported_type(item, f"{where}.{key}")
            if found is not None:
                return found
    elif isinstance(raw, list):
        for index, item in enumerate(raw):
            found = _unsupported_type(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def _convert(raw: Any, kind: type[Any], where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"must be an object, got {type(raw).__name__}", location=where)
    unsupported = _unsupported_type(raw, where)
    if unsupported is not None:
        location, _, message = unsupported.partition(": ")
        raise InvalidRequest(message, location=location)
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = ""
        if " - at `$" in message:
            message, _, path = message.partition(" - at `$")
            path = path.rstrip("`")
        raise InvalidRequest(f"malformed flow: {message}", location=f"{where}{path}") from None


def parse_value(raw: Any, *, location: str = "value") -> FlowValue:
    """The typed ``FlowValue`` of a raw mapping; ``InvalidRequest`` names the bad field."""
    value: FlowValue = _convert(raw, FlowValue, location)
    return value


def parse_openflow(raw: Any) -> OpenFlow:
    document: OpenFlow = _convert(raw, OpenFlow, "$")
    return document


_YAML_TYPES: Final = ("yaml", "x-yaml")


def decode_document(body: bytes, content_type: str | None = None) -> Any:
    """A JSON or YAML body as Python values (YAML when the content type says so, or
    when the body is not JSON)."""
    media = (content_type or "").split(";")[0].strip().lower()
    is_yaml = media.rsplit("/", 1)[-1] in _YAML_TYPES
    if not is_yaml:
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            if media.endswith("json"):
                raise InvalidRequest(f"malformed JSON body: {exc}", location="body") from None
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"malformed YAML body: {exc}", location="body") from None


def encode_yaml(document: Any) -> str:
    """A document as YAML, keys in their original order."""
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text


def iter_modules(
    modules: list[FlowModule], where: str = "value.modules"
) -> Iterator[tuple[FlowModule, str]]:
    """Every module, nested ones included, with its location (depth first, in order)."""
    for index, module in enumerate(modules):
        here = f"{where}[{index}]"
        yield module, here
        value = module.value
        if isinstance(value, ForloopFlow | WhileloopFlow):
            yield from iter_modules(value.modules, f"{here}.value.modules")
        elif isinstance(value, BranchOne):
            for number, branch in enumerate(value.branches):
                yield from iter_modules(branch.modules, f"{here}.value.branches[{number}].modules")
            yield from iter_modules(value.default, f"{here}.value.default")
        elif isinstance(value, BranchAll):
            for number, every in enumerate(value.branches):
                yield from iter_modules(every.modules, f"{here}.value.branches[{number}].modules")
