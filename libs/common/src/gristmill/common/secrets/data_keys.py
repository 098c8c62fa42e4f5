"""Workspace data keys: the keys that encrypt secret values, stored only wrapped.

A workspace has one active data key (it encrypts) and may keep older ones (they only
decrypt). Ids are small integers, 1, 2, ...; each ciphertext header names the id of
the key that made it.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gristmill.common.errors import GristmillError, InvalidRequest
from gristmill.common.secrets.master import KEY_BYTES, MasterKeyring, WrappedKey

__all__ = [
    "StoredWorkspaceKeys",
    "WorkspaceKeys",
    "decode_stored_keys",
    "encode_stored_keys",
    "rewrap_stored_keys",
]

_MAX_KEY_ID = 2**32 - 1


class StoredWorkspaceKeys(msgspec.Struct, frozen=True, kw_only=True):
    """A workspace's data keys as stored: every one wrapped by a master key.

    Safe to keep in a JSON (or bytea) column: it holds no key material in clear.
    """

    workspace: str
    active_key_id: int
    keys: tuple[WrappedKey, ...]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StoredWorkspaceKeys)


def encode_stored_keys(stored: StoredWorkspaceKeys) -> bytes:
    """JSON bytes (``bytes`` fields as base64)."""
    return _encoder.encode(stored)


def decode_stored_keys(data: bytes | str) -> StoredWorkspaceKeys:
    """Decode what ``encode_stored_keys`` wrote.

    Raises ``msgspec.ValidationError`` or ``msgspec.DecodeError`` on a malformed payload.
    """
    return _decoder.decode(data)


def _check_workspace(workspace: str) -> None:
    if not workspace or "\0" in workspace:
        raise InvalidRequest(
            f"workspace id {workspace!r} is invalid: it must be non-empty, without NUL",
            location="workspace",
        )


class WorkspaceKeys:
    """A workspace's data keys in clear (in memory only): an active id and ``{id: key}``.

    Immutable: rotation returns a new value. Its ``repr`` names ids only.
    """

    __slots__ = ("_active_key_id", "_ciphers", "_keys", "_workspace")

    def __init__(self, *, workspace: str, active_key_id: int, keys: Mapping[int, bytes]) -> None:
        _check_workspace(workspace)
        for key_id, key in keys.items():
            if not 1 <= key_id <= _MAX_KEY_ID:
                raise ValueError(f"data key id {key_id} is out of range 1..{_MAX_KEY_ID}")
            if len(key) != KEY_BYTES:
                raise ValueError(f"data key {key_id} must be {KEY_BYTES} bytes, got {len(key)}")
        if active_key_id not in keys:
            raise ValueError(f"the active data key {active_key_id} is not among the keys")
        self._workspace = workspace
        self._active_key_id = active_key_id
        self._keys = dict(keys)
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @classmethod
    def create(cls, workspace: str) -> WorkspaceKeys:
        """A new workspace's keys: one random data key, id 1, active."""
        return cls(workspace=workspace, active_key_id=1, keys={1: _new_key()})

    @property
    def workspace(self) -> str:
        return self._workspace

    @property
    def active_key_id(self) -> int:
        return self._active_key_id

    @property
    def key_ids(self) -> tuple[int, ...]:
        """Every data key id, in increasing order."""
        return tuple(sorted(self._keys))

    def new_data_key(self) -> WorkspaceKeys:
        """Data-key rotation: add a random key with the next id and make it active.

        Older keys stay, so existing ciphertexts still decrypt; ``reencrypt`` moves them.
        """
        next_id = max(self._keys) + 1
        if next_id > _MAX_KEY_ID:  # pragma: no cover - four billion rotations
            raise ValueError("no data key id left")
        keys = {**self._keys, next_id: _new_key()}
        return WorkspaceKeys(workspace=self._workspace, active_key_id=next_id, keys=keys)

    def without_key(self, key_id: int) -> WorkspaceKeys:
        """Retire an old data key once no ciphertext uses it (the active one cannot go)."""
        if key_id == self._active_key_id:
            raise InvalidRequest(
                f"data key {key_id} of workspace {self._workspace!r} is active and cannot be "
                "retired; rotate first",
                location="key_id",
            )
        if key_id not in self._keys:
            raise InvalidRequest(
                f"workspace {self._workspace!r} has no data key {key_id}", location="key_id"
            )
        keys = {k: v for k, v in self._keys.items() if k != key_id}
        return WorkspaceKeys(
            workspace=self._workspace, active_key_id=self._active_key_id, keys=keys
        )

    @property
    def active_cipher(self) -> AESGCM:
        """The AES-GCM cipher of the active data key."""
        return self._ciphers[self._active_key_id]

    def cipher(self, key_id: int) -> AESGCM | None:
        """The AES-GCM cipher of data key ``key_id``, or ``None`` if the workspace lacks it."""
        return self._ciphers.get(key_id)

    def wrap(self, keyring: MasterKeyring) -> StoredWorkspaceKeys:
        """The stored form: every key wrapped by the keyring's active master key."""
        wrapped = tuple(
            keyring.wrap(self._keys[key_id], workspace=self._workspace, key_id=key_id)
            for key_id in self.key_ids
        )
        return StoredWorkspaceKeys(
            workspace=self._workspace, active_key_id=self._active_key_id, keys=wrapped
        )

    @classmethod
    def unwrap(cls, stored: StoredWorkspaceKeys, keyring: MasterKeyring) -> WorkspaceKeys:
        """Decrypt the stored form (each key with whichever master key wrapped it).

        Raises ``GristmillError`` (an operator problem) when a master key is missing or
        the stored form is inconsistent or tampered with.
        """
        _check_workspace(stored.workspace)
        keys: dict[int, bytes] = {}
        for wrapped in stored.keys:
            if wrapped.key_id in keys:
                raise GristmillError(
                    f"stored keys of workspace {stored.workspace!r} list data key "
                    f"{wrapped.key_id} twice",
                    workspace=stored.workspace,
                )
            keys[wrapped.key_id] = keyring.unwrap(wrapped, workspace=stored.workspace)
        if stored.active_key_id not in keys:
            raise GristmillError(
                f"stored keys of workspace {stored.workspace!r} lack their active data key "
                f"{stored.active_key_id}",
                workspace=stored.workspace,
            )
        return cls(workspace=stored.workspace, active_key_id=stored.active_key_id, keys=keys)

    def __repr__(self) -> str:
        return (
            f"WorkspaceKeys(workspace={self._workspace!r}, "
            f"active_key_id={self._active_key_id}, key_ids={list(self.key_ids)!r})"
        )


def rewrap_stored_keys(stored: StoredWorkspaceKeys, keyring: MasterKeyring) -> StoredWorkspaceKeys:
    """Master-key rotation: the same data keys, each wrapped by the active master key.

    Keys already wrapped by it are kept as they are, so running this twice is a no-op.
    Secrets need no change: their data keys are the same.
    """
    rewrapped = tuple(keyring.rewrap(w, workspace=stored.workspace) for w in stored.keys)
    return StoredWorkspaceKeys(
        workspace=stored.workspace, active_key_id=stored.active_key_id, keys=rewrapped
    )


def _new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)
