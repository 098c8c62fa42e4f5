"""Fixtures of this folder: a ``gristmill up`` per test module (``tests/scripts/standalone.py``)."""

from tests.scripts.standalone import gristmill, standalone

__all__ = ["gristmill", "standalone"]
