"""Keys and ciphertexts written by format version 1 must keep decrypting.

``stored/`` holds files written once by earlier versions (with test-only keys); never
edit one, add a file when the format grows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gristmill.common.secrets import (
    MASTER_KEY_ENV,
    MasterKeyring,
    WorkspaceKeys,
    decode_stored_keys,
    decode_text,
    decrypt_secret,
    reencrypt,
    rewrap_stored_keys,
)

STORED = Path(__file__).parent / "stored"


@pytest.fixture(scope="module")
def v1() -> dict[str, object]:
    data = json.loads((STORED / "workspace_keys_v1.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _load(v1: dict[str, object]) -> tuple[MasterKeyring, WorkspaceKeys, list[dict[str, str]]]:
    master_keys = v1["master_keys"]
    assert isinstance(master_keys, list)
    keyring = MasterKeyring.from_env_or_file({MASTER_KEY_ENV: ",".join(master_keys)})
    stored = decode_stored_keys(json.dumps(v1["stored_keys"]))
    secrets = v1["secrets"]
    assert isinstance(secrets, list)
    return keyring, WorkspaceKeys.unwrap(stored, keyring), secrets


def test_v1_values_decrypt(v1: dict[str, object]) -> None:
    _, keys, secrets = _load(v1)
    assert keys.workspace == "main"
    assert keys.key_ids == (1, 2)
    assert keys.active_key_id == 2
    assert [decode_text(s["ciphertext"]).key_id for s in secrets] == [1, 2, 2]
    for secret in secrets:
        assert decrypt_secret(keys, secret["path"], secret["ciphertext"]) == secret["plaintext"]


def test_v1_keys_rewrap_and_values_reencrypt(v1: dict[str, object]) -> None:
    keyring, keys, secrets = _load(v1)
    stored = decode_stored_keys(json.dumps(v1["stored_keys"]))
    rewrapped = rewrap_stored_keys(stored, keyring)
    assert {w.master_key_id for w in rewrapped.keys} == {"k2"}
    only_new = MasterKeyring([("k2", bytes(range(32, 64)))])
    keys = WorkspaceKeys.unwrap(rewrapped, only_new)
    for secret in secrets:
        moved = reencrypt(keys, secret["path"], secret["ciphertext"])
        assert decode_text(moved).key_id == 2
        assert decrypt_secret(keys, secret["path"], moved) == secret["plaintext"]
