"""Flow expressions in QuickJS: names, JSON values, limits, caching, errors."""

from __future__ import annotations

import pytest

from gristmill.common.flows.expressions import (
    Evaluator,
    ExpressionError,
    ExpressionLimits,
    referenced_steps,
)


@pytest.fixture
def evaluator() -> Evaluator:
    return Evaluator(ExpressionLimits(time_limit_s=0.1, memory_limit_bytes=8 * 1024 * 1024))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("flow_input.x + 1", 42),
        ("flow_input.iter.value * 2", 6),
        ("results.a.items.map(i => i * 10)", [10, 20]),
        ("previous_result", {"k": "v"}),
        ("params.name.toUpperCase()", "BOB"),
        ("`hello ${flow_input.name}`", "hello ann"),
        ("results.a.items.length > 1 ? 'many' : 'few';", "many"),
        ("({a: 1, b: [true, null]})", {"a": 1, "b": [True, None]}),
        ("undefined", None),
        ("1 / 0", None),
        ("0.5", 0.5),
        ("2 ** 40", 2**40),
        ("result === undefined", True),
        ("new Date(0).toISOString()", "1970-01-01T00:00:00.000Z"),
    ],
)
def test_values(evaluator: Evaluator, expr: str, expected: object) -> None:
    names = {
        "flow_input": {"x": 41, "name": "ann", "iter": {"value": 3, "index": 0}},
        "results": {"a": {"items": [1, 2]}},
        "previous_result": {"k": "v"},
        "params": {"name": "bob"},
    }
    assert evaluator.evaluate(expr, names) == expected


def test_compiled_once_per_workspace(evaluator: Evaluator) -> None:
    for n in range(50):
        assert evaluator.evaluate("flow_input.n * 2", {"flow_input": {"n": n}}) == n * 2
    assert evaluator.compiled == 1
    evaluator.evaluate("flow_input.n * 2", {"flow_input": {"n": 1}}, workspace="other")
    assert evaluator.compiled == 2


def test_workspaces_do_not_share_globals(evaluator: Evaluator) -> None:
    evaluator.evaluate("(globalThis.leak = 7, 1)", {}, workspace="a")
    assert evaluator.evaluate("globalThis.leak", {}, workspace="a") == 7
    assert evaluator.evaluate("globalThis.leak", {}, workspace="b") is None


def test_time_limit(evaluator: Evaluator) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluator.evaluate("(() => { while (true) {} })()", {})
    assert caught.value.js_error == "took longer than the limit of 0.1 s"
    # The context still works.
    assert evaluator.evaluate("1 + 1", {}) == 2


def test_memory_limit(evaluator: Evaluator) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluator.evaluate(
            "(() => { const a = []; while (true) a.push('x'.repeat(1000) + a.length); })()", {}
        )
    assert caught.value.js_error == "out of memory (limit 8 MiB)"
    assert evaluator.evaluate("[1, 2].length", {}) == 2


@pytest.mark.parametrize(
    ("expr", "js_error"),
    [
        ("nope.x", "ReferenceError: 'nope' is not defined"),
        ("flow_input.missing.deep", "TypeError: cannot read property 'deep' of undefined"),
        ("(() => { throw new Error('boom') })()", "Error: boom"),
        ("1 +", "SyntaxError: unexpected token in expression: ')'"),
    ],
)
def test_errors_say_what_javascript_said(evaluator: Evaluator, expr: str, js_error: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluator.evaluate(expr, {"flow_input": {}})
    assert caught.value.js_error == js_error
    assert caught.value.expr == expr


def test_result_that_is_not_json(evaluator: Evaluator) -> None:
    with pytest.raises(ExpressionError, match="not JSON"):
        evaluator.evaluate("({big: 10n})", {})
    assert evaluator.evaluate("(() => 1)", {}) is None


@pytest.mark.parametrize(
    ("expr", "refs"),
    [
        ("results.a + results.b_2", {"a", "b_2"}),
        ("results?.a ?? results['c-d']", {"a", "c-d"}),
        ('results["x"].y', {"x"}),
        ("flow_input.results", set()),
        ("Object.keys(results)", None),
        ("results[flow_input.k]", None),
    ],
)
def test_referenced_steps(expr: str, refs: set[str] | None) -> None:
    assert referenced_steps(expr) == refs
