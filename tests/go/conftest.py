"""Fixtures for Go jobs: the real ``go`` toolchain (``apt-get install golang-go``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def go_toolchain() -> str:
    """``go``'s path; the Go tests are skipped when it is not installed."""
    found = shutil.which("go")
    if found is None:
        pytest.skip("go is not installed (scripts/install-runtimes installs it as root)")
    return found


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worker's data directory shared by the session: jobs in ``jobs/``, compiled
    scripts and Go's build cache in ``cache/go``."""
    return tmp_path_factory.mktemp("go-worker")
