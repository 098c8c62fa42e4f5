"""Encrypting and decrypting secret values with a workspace's data keys."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

from gristmill.common.errors import InvalidRequest
from gristmill.common.secrets.ciphertext import SealedSecret, decode_text, encode_text
from gristmill.common.secrets.data_keys import WorkspaceKeys
from gristmill.common.secrets.master import NONCE_BYTES

__all__ = ["decrypt_secret", "encrypt_secret", "needs_reencrypt", "reencrypt"]


def _associated_data(workspace: str, path: str) -> bytes:
    if not path or "\0" in path:
        raise InvalidRequest(
            f"secret path {path!r} is invalid: it must be non-empty, without NUL",
            location="path",
        )
    # The workspace id was checked (non-empty, no NUL) when the keys were built, so the
    # NUL separator makes (workspace, path) -> bytes one-to-one.
    return workspace.encode() + b"\0" + path.encode()


def encrypt_secret(keys: WorkspaceKeys, path: str, plaintext: str) -> str:
    """Encrypt ``plaintext`` for secret ``path`` of ``keys.workspace`` with the active key.

    A fresh random nonce is drawn each time, so equal values encrypt differently. The
    result (``$gm1$...``) decrypts only in the same workspace, under the same path.
    """
    aad = _associated_data(keys.workspace, path)
    nonce = os.urandom(NONCE_BYTES)
    body = keys.active_cipher.encrypt(nonce, plaintext.encode("utf-8"), aad)
    return encode_text(SealedSecret(key_id=keys.active_key_id, nonce=nonce, ciphertext=body))


def decrypt_secret(keys: WorkspaceKeys, path: str, ciphertext: str) -> str:
    """Decrypt what ``encrypt_secret`` returned for the same workspace and ``path``.

    Raises ``InvalidRequest`` naming the secret when the value is malformed, names a
    data key the workspace does not have, or fails authentication (another workspace,
    another path, or altered bytes). Messages never include key material or plaintext.
    """
    aad = _associated_data(keys.workspace, path)
    sealed = decode_text(ciphertext, location=f"secret {path}")
    cipher = keys.cipher(sealed.key_id)
    if cipher is None:
        raise InvalidRequest(
            f"secret {path} cannot be decrypted: it was encrypted with data key "
            f"{sealed.key_id}, which workspace {keys.workspace!r} does not have "
            f"(keys: {', '.join(map(str, keys.key_ids))}); wrong workspace or tampered data",
            workspace=keys.workspace,
            path=path,
            key_id=sealed.key_id,
        )
    try:
        data = cipher.decrypt(sealed.nonce, sealed.ciphertext, aad)
        return data.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        raise InvalidRequest(
            f"secret {path} cannot be decrypted: wrong workspace, wrong path, or tampered data",
            workspace=keys.workspace,
            path=path,
        ) from None


def needs_reencrypt(keys: WorkspaceKeys, ciphertext: str) -> bool:
    """Whether ``ciphertext`` was made with a data key other than the active one.

    Reads only the header (no decryption), so a rotation command can skip current rows.
    """
    return decode_text(ciphertext).key_id != keys.active_key_id


def reencrypt(keys: WorkspaceKeys, path: str, ciphertext: str) -> str:
    """Data-key rotation: the same value encrypted with the active data key.

    Returns ``ciphertext`` unchanged (once it is checked to decrypt) when it already uses
    the active key, so a second rotation pass rewrites nothing. Raises as
    ``decrypt_secret`` does.
    """
    sealed = decode_text(ciphertext, location=f"secret {path}")
    if sealed.key_id == keys.active_key_id:
        # Still authenticate: a rotation pass must not bless a tampered or misplaced value.
        decrypt_secret(keys, path, ciphertext)
        return ciphertext
    return encrypt_secret(keys, path, decrypt_secret(keys, path, ciphertext))
