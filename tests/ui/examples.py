"""Scripts the UI tests save and run."""

from __future__ import annotations

__all__ = ["PNG_SCRIPT", "SEED", "SLOW_PRINTER"]

#: The seed example of the generated-forms issue, verbatim (one line per statement).
SEED = (
    "from typing import Literal\n"
    "Postgresql = dict\n"
    'def main(a: int, b: Literal["my", "enum"], c: Postgresql, d: str = "default",'
    ' e: dict = {"nested": "object"}):\n'
    '    return {"a": a, "b": b, "d": d, "e": e}\n'
)

#: Prints, sleeps, prints: its logs must show up while it runs.
SLOW_PRINTER = """import time

def main():
    print("first line", flush=True)
    time.sleep(4)
    print("second line", flush=True)
    return [{"name": "x", "n": 1}, {"name": "y", "n": 2}]
"""

#: Returns a 1x1 PNG, base64-encoded under "png".
PNG_SCRIPT = (
    "def main():\n"
    '    return {"png": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ'
    'GAhKmMIQAAAABJRU5ErkJggg=="}\n'
)
