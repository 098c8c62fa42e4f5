"""Data-key rotation and master-key rotation, through the stored (wrapped) form."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import msgspec
import pytest

from gristmill.common.errors import GristmillError, InvalidRequest
from gristmill.common.secrets import (
    MasterKeyring,
    StoredWorkspaceKeys,
    WorkspaceKeys,
    decode_stored_keys,
    decode_text,
    decrypt_secret,
    encode_stored_keys,
    encrypt_secret,
    needs_reencrypt,
    reencrypt,
    rewrap_stored_keys,
)

PATHS = ["u/alice/token", "f/team/db_password", "u/bob/empty"]


def _store(keys: WorkspaceKeys, keyring: MasterKeyring) -> StoredWorkspaceKeys:
    """Wrap and go through JSON, as a table column would."""
    return decode_stored_keys(encode_stored_keys(keys.wrap(keyring)))


def test_stored_form_round_trips_and_holds_no_key_in_clear(keyring: MasterKeyring) -> None:
    data_key = os.urandom(32)
    keys = WorkspaceKeys(workspace="main", active_key_id=1, keys={1: data_key}).new_data_key()
    stored = _store(keys, keyring)
    assert stored.workspace == "main"
    assert stored.active_key_id == 2
    assert [w.key_id for w in stored.keys] == [1, 2]
    assert {w.master_key_id for w in stored.keys} == {"k1"}
    assert all(len(w.nonce) == 12 and len(w.ciphertext) == 32 + 16 for w in stored.keys)
    json = encode_stored_keys(stored)
    assert data_key not in json
    assert base64.b64encode(data_key) not in json
    loaded = WorkspaceKeys.unwrap(stored, keyring)
    assert loaded.key_ids == (1, 2)
    text = encrypt_secret(keys, "u/alice/token", "v")
    assert decrypt_secret(loaded, "u/alice/token", text) == "v"


def test_data_key_rotation(keyring: MasterKeyring) -> None:
    keys = WorkspaceKeys.create("main")
    old = {path: encrypt_secret(keys, path, f"value of {path}") for path in PATHS}

    rotated = WorkspaceKeys.unwrap(_store(keys.new_data_key(), keyring), keyring)
    assert rotated.active_key_id == 2
    assert rotated.key_ids == (1, 2)
    # Old ciphertexts still decrypt; new ones use the new key id.
    for path, text in old.items():
        assert decrypt_secret(rotated, path, text) == f"value of {path}"
        assert needs_reencrypt(rotated, text)
    fresh = encrypt_secret(rotated, "u/alice/new", "new")
    assert decode_text(fresh).key_id == 2
    assert not needs_reencrypt(rotated, fresh)

    # Re-encryption moves every value to the active key; a second pass changes nothing.
    moved = {path: reencrypt(rotated, path, text) for path, text in old.items()}
    for path, text in moved.items():
        assert decode_text(text).key_id == 2
        assert decrypt_secret(rotated, path, text) == f"value of {path}"
        assert reencrypt(rotated, path, text) is text

    # Once nothing uses key 1 it can go; values it encrypted no longer decrypt.
    retired = rotated.without_key(1)
    assert retired.key_ids == (2,)
    for path, text in moved.items():
        assert decrypt_secret(retired, path, text) == f"value of {path}"
    with pytest.raises(InvalidRequest, match="data key 1, which workspace 'main' does not have"):
        decrypt_secret(retired, PATHS[0], old[PATHS[0]])


def test_reencrypt_authenticates_even_current_values(keys: WorkspaceKeys) -> None:
    text = encrypt_secret(keys, "u/alice/token", "v")
    with pytest.raises(InvalidRequest, match="wrong workspace, wrong path, or tampered data"):
        reencrypt(keys, "u/alice/other", text)


def test_active_data_key_cannot_be_retired(keys: WorkspaceKeys) -> None:
    with pytest.raises(InvalidRequest, match="data key 1 of workspace 'main' is active"):
        keys.without_key(1)
    with pytest.raises(InvalidRequest, match="has no data key 9"):
        keys.new_data_key().without_key(9)


def test_master_key_rotation() -> None:
    k1, k2 = MasterKeyring.generate_key(), MasterKeyring.generate_key()
    before = MasterKeyring([("k1", k1)])
    keys = WorkspaceKeys.create("main").new_data_key()
    stored = _store(keys, before)
    texts = {path: encrypt_secret(keys, path, path.upper()) for path in PATHS}

    # Step 1: the new key goes first; the old one stays to unwrap.
    during = MasterKeyring([("k2", k2), ("k1", k1)])
    assert during.active_id == "k2"
    assert WorkspaceKeys.unwrap(stored, during).key_ids == (1, 2)
    assert {w.master_key_id for w in _store(keys, during).keys} == {"k2"}

    # Step 2: rewrap every workspace's keys (idempotent).
    rewrapped = rewrap_stored_keys(stored, during)
    assert {w.master_key_id for w in rewrapped.keys} == {"k2"}
    assert rewrapped.active_key_id == stored.active_key_id
    assert rewrap_stored_keys(rewrapped, during) == rewrapped

    # Step 3: the old master key is removed; everything still decrypts.
    after = MasterKeyring([("k2", k2)])
    loaded = WorkspaceKeys.unwrap(decode_stored_keys(encode_stored_keys(rewrapped)), after)
    for path, text in texts.items():
        assert decrypt_secret(loaded, path, text) == path.upper()
    # Keys that were not rewrapped say which master key is missing.
    with pytest.raises(GristmillError, match="master key 'k1', which is not in the master keyring"):
        WorkspaceKeys.unwrap(stored, after)


def _replace_first_key(stored: StoredWorkspaceKeys, **changes: object) -> StoredWorkspaceKeys:
    first = msgspec.structs.replace(stored.keys[0], **changes)
    return msgspec.structs.replace(stored, keys=(first, *stored.keys[1:]))


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        pytest.param(
            lambda s: msgspec.structs.replace(s, workspace="other"),
            "data key 1 of workspace 'other' cannot be unwrapped",
            id="moved-to-another-workspace",
        ),
        pytest.param(
            lambda s: _replace_first_key(s, key_id=3),
            "data key 3 of workspace 'main' cannot be unwrapped",
            id="renumbered",
        ),
        pytest.param(
            lambda s: _replace_first_key(s, ciphertext=_flip_last(s.keys[0].ciphertext)),
            "tampered data",
            id="tampered-ciphertext",
        ),
        pytest.param(
            lambda s: _replace_first_key(s, nonce=_flip_last(s.keys[0].nonce)),
            "tampered data",
            id="tampered-nonce",
        ),
        pytest.param(
            lambda s: _replace_first_key(s, master_key_id="gone"),
            "master key 'gone', which is not in the master keyring",
            id="unknown-master-key",
        ),
        pytest.param(
            lambda s: msgspec.structs.replace(s, keys=(s.keys[0], s.keys[0])),
            "list data key 1 twice",
            id="duplicate-key-id",
        ),
        pytest.param(
            lambda s: msgspec.structs.replace(s, active_key_id=5),
            "lack their active data key 5",
            id="active-key-missing",
        ),
    ],
)
def test_tampered_stored_keys_do_not_unwrap(
    keyring: MasterKeyring,
    tamper: Callable[[StoredWorkspaceKeys], StoredWorkspaceKeys],
    message: str,
) -> None:
    stored = WorkspaceKeys.create("main").wrap(keyring)
    with pytest.raises(GristmillError, match=message) as info:
        WorkspaceKeys.unwrap(tamper(stored), keyring)
    assert "=" not in str(info.value)  # no base64 key material in the message


def test_same_master_key_id_with_other_material_does_not_unwrap(keyring: MasterKeyring) -> None:
    stored = WorkspaceKeys.create("main").wrap(keyring)
    impostor = MasterKeyring([("k1", MasterKeyring.generate_key())])
    with pytest.raises(GristmillError, match="wrong key material for that id"):
        WorkspaceKeys.unwrap(stored, impostor)
