"""Fixtures for the secrets tests: fresh random keys, no database."""

from __future__ import annotations

import pytest

from gristmill.common.secrets import MasterKeyring, WorkspaceKeys


@pytest.fixture
def keyring() -> MasterKeyring:
    return MasterKeyring([("k1", MasterKeyring.generate_key())])


@pytest.fixture
def keys() -> WorkspaceKeys:
    return WorkspaceKeys.create("main")
