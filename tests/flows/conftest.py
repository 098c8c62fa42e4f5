"""Fixtures of the flow tests."""

from tests.flows.harness import runner

__all__ = ["runner"]
