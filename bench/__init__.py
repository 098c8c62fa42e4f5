"""Gristmill's benchmarks: ``python -m bench <name> [options]`` (see bench/README.md)."""
