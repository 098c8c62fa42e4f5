"""The OpenFlow model: parsing, round trips, YAML, and the checks made at save time."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.flows.model import (
    BranchAll,
    BranchOne,
    ForloopFlow,
    JavascriptTransform,
    PathFlow,
    RawScript,
    StaticTransform,
    WhileloopFlow,
    decode_document,
    encode_yaml,
    parse_openflow,
    parse_value,
)
from gristmill.common.flows.validate import (
    FlowInvalid,
    check_subflow_cycles,
    find_problems,
    ignored_settings,
    validate_value,
)


def raw(id_: str, expr: str = "flow_input.x", **extra: Any) -> dict[str, Any]:
    module = {
        "id": id_,
        "value": {
            "type": "rawscript",
            "language": "python3",
            "content": "def main(x):\n    return x\n",
            "input_transforms": {"x": {"type": "javascript", "expr": expr}},
        },
    }
    module.update(extra)
    return module


# Every field of the format, as Windmill exports it (with fields this version ignores).
FULL: dict[str, Any] = {
    "summary": "everything",
    "description": "",
    "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "value": {
        "modules": [
            raw(
                "a",
                retry={
                    "constant": {"attempts": 2, "seconds": 1},
                    "retry_if": {"expr": "result.name == 'X'"},
                },
                skip_if={"expr": "flow_input.skip"},
                stop_after_if={"expr": "result > 3", "skip_if_stopped": True},
                sleep={"type": "static", "value": 2},
                timeout={"type": "javascript", "expr": "10"},
                cache_ttl=60,
                mock={"enabled": False, "return_value": 1},
                continue_on_error=True,
                priority=3,
                summary="first",
                some_future_field={"kept": True},
            ),
            {
                "id": "b",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "javascript", "expr": "results.a"},
                    "skip_failures": True,
                    "parallel": True,
                    "parallelism": {"type": "static", "value": 4},
                    "modules": [raw("b1", "flow_input.iter.value")],
                },
                "stop_after_all_iters_if": {"expr": "result.length > 2"},
            },
            {
                "id": "c",
                "value": {
                    "type": "whileloopflow",
                    "skip_failures": False,
                    "modules": [raw("c1")],
                },
                "stop_after_if": {"expr": "flow_input.iter.index >= 2"},
            },
            {
                "id": "d",
                "value": {
                    "type": "branchone",
                    "branches": [{"expr": "results.a > 1", "modules": [raw("d1")]}],
                    "default": [{"id": "d2", "value": {"type": "identity"}}],
                },
            },
            {
                "id": "e",
                "value": {
                    "type": "branchall",
                    "parallel": True,
                    "branches": [
                        {"modules": [raw("e1")], "skip_failure": True},
                        {"modules": [raw("e2")]},
                    ],
                },
            },
            {
                "id": "f",
                "value": {
                    "type": "script",
                    "path": "f/x/script",
                    "hash": None,
                    "input_transforms": {},
                },
                "suspend": {"required_events": 1, "timeout": 60},
            },
            {"id": "g", "value": {"type": "flow", "path": "f/x/sub", "input_transforms": {}}},
            {"id": "h", "value": {"type": "identity", "flow": False}},
        ],
        "failure_module": raw("failure", "previous_result.message"),
        "preprocessor_module": raw("preprocessor", "flow_input.event"),
        "same_worker": False,
        "concurrent_limit": 2,
        "concurrency_key": "k",
        "concurrency_time_window_s": 60,
        "skip_expr": "flow_input.n < 0",
        "cache_ttl": 10,
        "priority": 5,
        "early_return": "a",
        "future_flow_setting": [1, 2, 3],
    },
}


def test_every_module_type_parses() -> None:
    document = parse_openflow(FULL)
    modules = document.value.modules
    assert [type(m.value) for m in modules[:5]] == [
        RawScript,
        ForloopFlow,
        WhileloopFlow,
        BranchOne,
        BranchAll,
    ]
    first = modules[0]
    assert first.retry is not None
    assert first.retry.constant is not None
    assert first.retry.constant.attempts == 2
    assert isinstance(first.sleep, StaticTransform)
    assert first.sleep.value == 2
    assert isinstance(first.timeout, JavascriptTransform)
    loop = modules[1].value
    assert isinstance(loop, ForloopFlow)
    assert isinstance(loop.parallelism, StaticTransform)
    assert isinstance(modules[6].value, PathFlow)
    assert document.value.early_return == "a"
    assert document.value.failure_module is not None
    assert find_problems(document.value) == []


def test_unknown_fields_survive_a_round_trip_in_json_and_yaml() -> None:
    original = copy.deepcopy(FULL)
    parse_openflow(original)  # parsing never touches the document
    assert original == FULL
    as_json = msgspec.json.encode(FULL)
    assert decode_document(as_json, "application/json") == FULL
    as_yaml = encode_yaml(FULL).encode()
    assert decode_document(as_yaml, "application/yaml") == FULL
    assert decode_document(as_yaml, None) == FULL  # sniffed: not JSON, so YAML


def test_older_documents_with_numbers_parse() -> None:
    value = parse_value(
        {
            "modules": [
                {
                    "id": "a",
                    "value": {
                        "type": "forloopflow",
                        "iterator": {"type": "static", "value": [1]},
                        "skip_failures": False,
                        "parallelism": 3,
                        "modules": [],
                    },
                    "timeout": 30,
                }
            ]
        }
    )
    assert value.modules[0].timeout == 30


def _value(*modules: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"modules": list(modules), **settings}


@pytest.mark.parametrize(
    ("value", "location", "message"),
    [
        (
            _value(raw("a"), raw("a")),
            "value.modules[1].id",
            "step id 'a' is already used at value.modules[0]",
        ),
        (_value(raw("")), "value.modules[0].id", "invalid step id ''"),
        (
            _value(raw("a", "results.nope + 1")),
            "value.modules[0].value.input_transforms.x.expr",
            "step 'a': `results.nope + 1` reads results.nope, but the flow has no step 'nope'",
        ),
        (
            _value(raw("a"), raw("b", "results['zz']")),
            "value.modules[1].value.input_transforms.x.expr",
            "has no step 'zz'",
        ),
        (
            _value(raw("a", "flow_input.x +")),
            "value.modules[0].value.input_transforms.x.expr",
            "step 'a': expression does not compile: SyntaxError",
        ),
        (
            _value(raw("a", skip_if={"expr": "(("})),
            "value.modules[0].skip_if.expr",
            "SyntaxError",
        ),
        (
            _value(
                {
                    "id": "loop",
                    "value": {
                        "type": "forloopflow",
                        "iterator": {"type": "javascript", "expr": "[1,2]"},
                        "skip_failures": False,
                        "modules": [raw("inner", "results.ghost")],
                    },
                }
            ),
            "value.modules[0].value.modules[0].value.input_transforms.x.expr",
            "step 'inner'",
        ),
        (
            _value(
                {
                    "id": "br",
                    "value": {
                        "type": "branchone",
                        "branches": [{"expr": "flow_input.x ==", "modules": []}],
                        "default": [],
                    },
                }
            ),
            "value.modules[0].value.branches[0].expr",
            "SyntaxError",
        ),
        (
            _value(raw("a"), early_return="zz"),
            "value.early_return",
            "early_return names 'zz'",
        ),
        (
            _value({"id": "a", "value": {"type": "rawscript", "language": "python3"}}),
            "value.modules[0].value",
            "malformed flow: Object missing required field `content`",
        ),
        (
            _value({"id": "a", "value": {"type": "aiagent", "tools": []}}),
            "value.modules[0]",
            "unsupported module type 'aiagent'",
        ),
        (
            _value({"id": "a"}),
            "value.modules[0]",
            "missing required field `value`",
        ),
        (
            {"modules": "nope"},
            "value.modules",
            "Expected `array`",
        ),
        (
            _value(
                {
                    "id": "w",
                    "value": {
                        "type": "whileloopflow",
                        "skip_failures": False,
                        "parallelism": 0,
                        "modules": [],
                    },
                }
            ),
            "value.modules[0].value.parallelism",
            "parallelism must be at least 1",
        ),
        (_value(raw("a"), skip_expr="flow_input."), "value.skip_expr", "SyntaxError"),
    ],
)
def test_invalid_flows_name_the_module(value: dict[str, Any], location: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_value(value)
    assert caught.value.location == location
    assert message in caught.value.message


def test_every_problem_is_reported() -> None:
    with pytest.raises(FlowInvalid) as caught:
        validate_value(_value(raw("a", "results.x"), raw("a", "((")))
    assert len(caught.value.problems) == 3
    assert "(and 2 more problems)" in caught.value.message


def test_later_steps_may_read_earlier_ones_and_loops_their_own() -> None:
    value = _value(
        raw("a"),
        raw("b", "results.a + results?.a + results['a']"),
        {
            "id": "c",
            "value": {
                "type": "whileloopflow",
                "skip_failures": False,
                "modules": [raw("c1", "results.c1 ?? 0")],
            },
        },
    )
    validate_value(value)


async def test_subflow_cycles_are_refused() -> None:
    saved = {
        "f/a": parse_value(
            _value({"id": "x", "value": {"type": "flow", "path": "f/b", "input_transforms": {}}})
        ),
        "f/b": parse_value(
            _value(
                {
                    "id": "y",
                    "value": {
                        "type": "forloopflow",
                        "iterator": {"type": "static", "value": [1]},
                        "skip_failures": False,
                        "modules": [
                            {
                                "id": "z",
                                "value": {"type": "flow", "path": "f/a", "input_transforms": {}},
                            }
                        ],
                    },
                }
            )
        ),
    }

    async def load(path: str) -> Any:
        return saved.get(path)

    with pytest.raises(FlowInvalid, match=r"sub-flows form a cycle: f/a -> f/b -> f/a"):
        await check_subflow_cycles("f/a", saved["f/a"], load)
    # A sub-flow not saved yet is not followed.
    lone = parse_value(
        _value({"id": "x", "value": {"type": "flow", "path": "f/missing", "input_transforms": {}}})
    )
    await check_subflow_cycles("f/c", lone, load)
    with pytest.raises(FlowInvalid, match="cycle: f/self -> f/self"):
        await check_subflow_cycles(
            "f/self",
            parse_value(
                _value(
                    {"id": "x", "value": {"type": "flow", "path": "f/self", "input_transforms": {}}}
                )
            ),
            load,
        )


def test_settings_kept_but_not_applied_are_listed() -> None:
    step = {
        "id": "a",
        "value": {
            "type": "rawscript",
            "language": "python3",
            "content": "",
            "input_transforms": {},
        },
        "cache_ttl": 60,
    }
    loop = {
        "id": "l",
        "cache_ttl": 60,
        "value": {
            "type": "forloopflow",
            "iterator": {"type": "static", "value": []},
            "skip_failures": False,
            "modules": [],
        },
    }
    value = parse_value(
        {"modules": [step, loop], "same_worker": True, "concurrency_time_window_s": 5}
    )
    assert [p.location for p in ignored_settings(value)] == [
        "value.concurrent_limit",
        "value.modules[1].cache_ttl",
    ]
    applied = parse_value(
        {"modules": [step], "concurrent_limit": 2, "concurrency_time_window_s": 5}
    )
    assert ignored_settings(applied) == []
