"""Fixtures for TypeScript jobs: real Bun and Deno, installed by ``scripts/install-runtimes``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gristmill.worker.execution.runners import typescript

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def runtimes() -> dict[str, str]:
    """Bun's and Deno's paths; installs them into ``.tools/`` first if they are missing."""
    found = {"bun": typescript.default_bun_bin(), "deno": typescript.default_deno_bin()}
    if not all(os.path.isabs(path) and os.access(path, os.X_OK) for path in found.values()):
        subprocess.run([str(_REPO / "scripts" / "install-runtimes")], check=True, timeout=600)
        typescript.default_bun_bin.cache_clear()
        typescript.default_deno_bin.cache_clear()
        found = {"bun": typescript.default_bun_bin(), "deno": typescript.default_deno_bin()}
    return found


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worker's data directory shared by the session: jobs in ``jobs/``, and the
    runtimes' caches (npm packages, compiled scripts) in ``cache/typescript``."""
    return tmp_path_factory.mktemp("typescript-worker")
