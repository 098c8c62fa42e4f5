"""Introspection reads source text only: user code is never imported or run."""

from __future__ import annotations

import sys
from pathlib import Path

from gristmill.common.introspection import parse_bash, parse_python


def test_python_source_with_side_effects_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    touch = f"open({str(marker)!r}, 'w').write('ran')"
    code = f"""
import gristmill_introspection_canary_module
{touch}

def touch(*_args, **_kwargs):
    {touch}
    return dict

@touch
class Config(touch()):
    x: int = {touch}
    {touch}

def main(
    a: touch() = {touch},
    b: "__import__('os').system('touch {marker}')" = __import__("os").system("touch {marker}"),
    c: Config = (lambda: {touch})(),
    d: list[int] = [{touch}],
    e: dict = {{"k": {touch}}},
):
    {touch}

if __name__ == "__main__":
    main()
"""
    signature = parse_python(code)
    assert signature.args == ["a", "b", "c", "d", "e"]
    assert not marker.exists()
    assert "gristmill_introspection_canary_module" not in sys.modules


def test_bash_source_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f'#!/bin/bash\ntouch {marker}\nx="${{1:-$(touch {marker})}}"\n'
    signature = parse_bash(code)
    assert signature.args == ["x"]
    assert not marker.exists()
