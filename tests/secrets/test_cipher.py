"""Encrypting secret values: round trips, binding to workspace and path, tampering."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import msgspec
import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.secrets import (
    FORMAT_VERSION,
    TEXT_PREFIX,
    SealedSecret,
    WorkspaceKeys,
    decode_text,
    decrypt_secret,
    encode,
    encode_text,
    encrypt_secret,
)
from gristmill.common.secrets.ciphertext import HEADER_BYTES, TAG_BYTES

PATH = "u/alice/token"
VALUE = "s3cr3t-value"


def _raw(text: str) -> bytes:
    return encode(decode_text(text))


def _text(data: bytes) -> str:
    """Text form of arbitrary bytes, bypassing the encoder's checks."""
    return TEXT_PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        index = offset if offset >= 0 else len(data) + offset
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]

    return edit


@pytest.mark.parametrize(
    "plaintext",
    ["", "x", VALUE, "pässwörd ✓ 🔑", "line1\nline2\0with nul", "a" * 100_000],
    ids=["empty", "one-char", "ascii", "unicode", "control-chars", "100k"],
)
def test_round_trip(keys: WorkspaceKeys, plaintext: str) -> None:
    text = encrypt_secret(keys, PATH, plaintext)
    assert text.startswith("$gm1$")
    if len(plaintext) > 4:
        assert plaintext.encode() not in _raw(text)
    assert decrypt_secret(keys, PATH, text) == plaintext


def test_header_names_version_and_active_key(keys: WorkspaceKeys) -> None:
    sealed = decode_text(encrypt_secret(keys, PATH, VALUE))
    assert sealed.version == FORMAT_VERSION
    assert sealed.key_id == keys.active_key_id == 1
    assert len(sealed.nonce) == 12
    assert len(sealed.ciphertext) == len(VALUE.encode()) + TAG_BYTES


def test_each_encryption_uses_a_fresh_nonce(keys: WorkspaceKeys) -> None:
    texts = [encrypt_secret(keys, PATH, VALUE) for _ in range(200)]
    assert len(set(texts)) == len(texts)
    assert len({decode_text(t).nonce for t in texts}) == len(texts)
    assert {decrypt_secret(keys, PATH, t) for t in texts} == {VALUE}


UNDECRYPTABLE = "cannot be decrypted: wrong workspace, wrong path, or tampered data"


@pytest.mark.parametrize(
    ("path", "edit", "message"),
    [
        pytest.param("u/alice/other", None, UNDECRYPTABLE, id="wrong-path"),
        pytest.param("u/alice/tok", None, UNDECRYPTABLE, id="path-prefix"),
        pytest.param(PATH, _flip(5), UNDECRYPTABLE, id="tampered-nonce"),
        pytest.param(PATH, _flip(HEADER_BYTES), UNDECRYPTABLE, id="tampered-body"),
        pytest.param(PATH, _flip(-1), UNDECRYPTABLE, id="tampered-tag"),
        pytest.param(
            PATH, _flip(4), "encrypted with data key 0, which workspace", id="tampered-key-id"
        ),
        pytest.param(PATH, lambda d: d[:-1], UNDECRYPTABLE, id="cut-by-one-byte"),
        pytest.param(PATH, lambda d: d + b"\0", UNDECRYPTABLE, id="extra-byte"),
        pytest.param(PATH, lambda d: d[: HEADER_BYTES - 3], "truncated", id="truncated-header"),
        pytest.param(
            PATH, lambda d: d[: HEADER_BYTES + TAG_BYTES - 1], "truncated", id="truncated-tag"
        ),
        pytest.param(PATH, lambda d: b"", "encrypted value is empty", id="empty"),
        pytest.param(
            PATH, lambda d: b"\x02" + d[1:], "unsupported format version 2", id="version-2"
        ),
        pytest.param(
            PATH, lambda d: b"\x00" + d[1:], "unsupported format version 0", id="version-0"
        ),
    ],
)
def test_decrypt_failures_are_clear(
    keys: WorkspaceKeys, path: str, edit: Callable[[bytes], bytes] | None, message: str
) -> None:
    text = encrypt_secret(keys, PATH, VALUE)
    if edit is not None:
        text = _text(edit(_raw(text)))
    with pytest.raises(InvalidRequest, match=message) as info:
        decrypt_secret(keys, path, text)
    assert f"secret {path}" in str(info.value)
    assert VALUE not in str(info.value)
    assert info.value.code == "invalid_request"


def _with_key(workspace: str, key: bytes) -> WorkspaceKeys:
    return WorkspaceKeys(workspace=workspace, active_key_id=1, keys={1: key})


def test_wrong_workspace_fails_even_with_the_same_data_key() -> None:
    """The very same data key under another workspace name: only the associated data differs."""
    key = os.urandom(32)
    text = encrypt_secret(_with_key("main", key), PATH, VALUE)
    assert decrypt_secret(_with_key("main", key), PATH, text) == VALUE
    with pytest.raises(InvalidRequest, match=f"secret {PATH} {UNDECRYPTABLE}") as info:
        decrypt_secret(_with_key("other", key), PATH, text)
    assert info.value.data == {"workspace": "other", "path": PATH}


def test_another_workspaces_keys_do_not_decrypt(keys: WorkspaceKeys) -> None:
    text = encrypt_secret(keys, PATH, VALUE)
    with pytest.raises(InvalidRequest, match=UNDECRYPTABLE):
        decrypt_secret(WorkspaceKeys.create("main"), PATH, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3cr3t", "not an encrypted value: expected '\\$gm1\\$'"),
        ("", "not an encrypted value"),
        ("$gm1$abc+/def", "not an encrypted value"),
        ("$gm1$ AQAA", "not an encrypted value"),
        ("$gm2$AQAAAAE", "unsupported format version 2"),
        ("$gm1$A", "impossible length"),
        ("$gm1$", "encrypted value is empty"),
    ],
)
def test_malformed_text_is_rejected(keys: WorkspaceKeys, text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as info:
        decrypt_secret(keys, PATH, text)
    assert info.value.location == f"secret {PATH}"


@pytest.mark.parametrize(("workspace", "path"), [("main", ""), ("main", "u/a\0b")])
def test_invalid_path_is_rejected(workspace: str, path: str) -> None:
    keys = WorkspaceKeys.create(workspace)
    with pytest.raises(InvalidRequest, match="secret path") as info:
        encrypt_secret(keys, path, VALUE)
    assert info.value.location == "path"


@pytest.mark.parametrize("workspace", ["", "ma\0in"])
def test_invalid_workspace_is_rejected(workspace: str) -> None:
    with pytest.raises(InvalidRequest, match="workspace id") as info:
        WorkspaceKeys.create(workspace)
    assert info.value.location == "workspace"


def test_nul_separator_keeps_workspace_and_path_apart() -> None:
    """("ab", "c/d") and ("a", "bc/d") must not share associated data."""
    key = os.urandom(32)
    text = encrypt_secret(_with_key("ab", key), "c/d", VALUE)
    with pytest.raises(InvalidRequest, match=UNDECRYPTABLE):
        decrypt_secret(_with_key("a", key), "bc/d", text)


def test_text_and_binary_forms_round_trip() -> None:
    sealed = SealedSecret(key_id=7, nonce=bytes(12), ciphertext=bytes(range(20)))
    assert decode_text(encode_text(sealed)) == sealed
    data = encode(sealed)
    assert data[:5] == b"\x01\x00\x00\x00\x07"
    assert "=" not in encode_text(sealed)
    assert msgspec.json.decode(msgspec.json.encode(sealed), type=SealedSecret) == sealed


@pytest.mark.parametrize(
    ("sealed", "message"),
    [
        pytest.param(
            SealedSecret(key_id=1, nonce=bytes(11), ciphertext=bytes(16)),
            "the nonce must be 12 bytes",
            id="short-nonce",
        ),
        pytest.param(
            SealedSecret(key_id=1, nonce=bytes(12), ciphertext=bytes(15)),
            "at least the 16-byte tag",
            id="no-tag",
        ),
        pytest.param(
            SealedSecret(key_id=1, nonce=bytes(12), ciphertext=bytes(16), version=2),
            "only format version 1 can be written",
            id="future-version",
        ),
        pytest.param(
            SealedSecret(key_id=2**32, nonce=bytes(12), ciphertext=bytes(16)),
            "the data key id must fit in 4 bytes",
            id="key-id-too-large",
        ),
    ],
)
def test_encoder_refuses_malformed_values(sealed: SealedSecret, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(sealed)
