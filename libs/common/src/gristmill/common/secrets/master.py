"""Master keys: loaded from the deployment, they wrap (encrypt) workspace data keys.

A keyring holds one or more master keys, each with an id. The first one is active
and wraps new data keys; all of them can unwrap. Master keys never encrypt secret
values directly.

Configuration (exactly one of the two variables):

``GRISTMILL_MASTER_KEY``
    One or more entries separated by commas or whitespace.
``GRISTMILL_MASTER_KEY_FILE``
    A path to a file holding the same entries, one per line; blank lines and lines
    starting with ``#`` are ignored.

An entry is ``<id>:<base64 of 32 bytes>``, or a bare ``<base64>`` whose id is
``default`` (allowed when it is the only entry). The first entry is the active key.
``openssl rand -base64 32`` makes a key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gristmill.common.errors import GristmillError, InvalidRequest

__all__ = [
    "DEFAULT_MASTER_KEY_ID",
    "KEY_BYTES",
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "NONCE_BYTES",
    "MasterKeyring",
    "WrappedKey",
]

#: Length of every key (master and data): AES-256.
KEY_BYTES = 32
#: GCM nonce length (96 bits).
NONCE_BYTES = 12
MASTER_KEY_ENV = "GRISTMILL_MASTER_KEY"
MASTER_KEY_FILE_ENV = "GRISTMILL_MASTER_KEY_FILE"
#: The id of a master key given without one (a bare base64 entry).
DEFAULT_MASTER_KEY_ID = "default"

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_DATA_KEY_ID = 2**32 - 1
# Domain separation: what a master key wraps is a data key, bound to its workspace and id.
_WRAP_CONTEXT = b"gristmill/data-key/v1\0"


class WrappedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A workspace data key encrypted by a master key (stored form, JSON/bytea-safe).

    ``bytes`` fields encode as base64 in JSON. The ciphertext includes the GCM tag;
    the associated data binds it to its workspace and ``key_id``, so a wrapped key
    copied to another workspace or renumbered fails to unwrap.
    """

    #: The data key's id inside its workspace (1, 2, ...; it appears in ciphertext headers).
    key_id: int
    #: Which master key wrapped it.
    master_key_id: str
    nonce: bytes
    ciphertext: bytes


def _wrap_aad(workspace: str, key_id: int) -> bytes:
    return _WRAP_CONTEXT + workspace.encode() + b"\0" + key_id.to_bytes(4, "big")


class MasterKeyring:
    """The deployment's master keys; the first (active) one wraps, every one unwraps.

    Immutable. Its ``repr`` names key ids only, never key material.
    """

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        """``keys`` are ``(id, 32-byte key)`` pairs, the active one first."""
        ordered: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise InvalidRequest(
                    f"master key id {key_id!r} is invalid: use 1-64 letters, digits, '.', '_' "
                    "or '-'",
                    location="master_key",
                )
            if key_id in ordered:
                raise InvalidRequest(
                    f"master key id {key_id!r} appears twice", location="master_key"
                )
            if len(key) != KEY_BYTES:
                raise InvalidRequest(
                    f"master key {key_id!r} must be {KEY_BYTES} bytes, got {len(key)}",
                    location="master_key",
                )
            ordered[key_id] = AESGCM(key)
        if not ordered:
            raise InvalidRequest("the master keyring needs at least one key", location="master_key")
        self._keys = ordered
        self._active = next(iter(ordered))

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def from_env_or_file(cls, environ: Mapping[str, str] | None = None) -> MasterKeyring:
        """Load from ``GRISTMILL_MASTER_KEY`` or the file ``GRISTMILL_MASTER_KEY_FILE`` names.

        Errors are ``InvalidRequest`` whose ``location`` is the variable (and the entry),
        and never quote the value.
        """
        env = os.environ if environ is None else environ
        inline = env.get(MASTER_KEY_ENV, "").strip()
        path = env.get(MASTER_KEY_FILE_ENV, "").strip()
        if inline and path:
            raise InvalidRequest(
                f"set only one of {MASTER_KEY_ENV} and {MASTER_KEY_FILE_ENV}",
                location=MASTER_KEY_ENV,
            )
        if path:
            return cls.from_file(Path(path))
        if inline:
            return cls.parse(inline.replace(",", " ").split(), source=MASTER_KEY_ENV)
        raise InvalidRequest(
            f"no master key: set {MASTER_KEY_ENV} (base64 of {KEY_BYTES} bytes, e.g. from "
            f"`openssl rand -base64 32`) or {MASTER_KEY_FILE_ENV} (a file holding it)",
            location=MASTER_KEY_ENV,
        )

    @classmethod
    def from_file(cls, path: Path) -> MasterKeyring:
        """Load the entries in ``path`` (one per line, ``#`` comments)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise InvalidRequest(
                f"cannot read the master key file {str(path)!r}: {reason}",
                location=MASTER_KEY_FILE_ENV,
            ) from None
        entries = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return cls.parse(entries, source=str(path))

    @classmethod
    def parse(cls, entries: list[str], *, source: str) -> MasterKeyring:
        """Build a keyring from ``[id:]base64`` entries; ``source`` names them in errors."""
        if not entries:
            raise InvalidRequest(f"{source} holds no master key", location=source)
        pairs: list[tuple[str, bytes]] = []
        for index, entry in enumerate(entries, start=1):
            where = f"{source} entry {index}"
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                key_id, encoded = DEFAULT_MASTER_KEY_ID, entry
                if len(entries) > 1:
                    raise InvalidRequest(
                        "with several master keys every entry needs an id: '<id>:<base64>'",
                        location=where,
                    )
            if not _KEY_ID.fullmatch(key_id):
                raise InvalidRequest(
                    "the master key id is invalid: use 1-64 letters, digits, '.', '_' or '-'",
                    location=where,
                )
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(
                    f"master key {key_id!r} is not valid base64", location=where
                ) from None
            if len(key) != KEY_BYTES:
                raise InvalidRequest(
                    f"master key {key_id!r} must decode to {KEY_BYTES} bytes, got {len(key)}",
                    location=where,
                )
            pairs.append((key_id, key))
        try:
            return cls(pairs)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, location=source) from None

    @staticmethod
    def generate_key() -> bytes:
        """A new random 32-byte key (base64-encode it for ``GRISTMILL_MASTER_KEY``)."""
        return AESGCM.generate_key(bit_length=KEY_BYTES * 8)

    # -- use --------------------------------------------------------------------------

    @property
    def active_id(self) -> str:
        """The id of the key that wraps new data keys."""
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, the active one first."""
        return tuple(self._keys)

    def wrap(self, data_key: bytes, *, workspace: str, key_id: int) -> WrappedKey:
        """Encrypt ``data_key`` (data key ``key_id`` of ``workspace``) with the active key."""
        if len(data_key) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes, got {len(data_key)}")
        if not 1 <= key_id <= _MAX_DATA_KEY_ID:
            raise ValueError(f"data key id {key_id} is out of range 1..{_MAX_DATA_KEY_ID}")
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._keys[self._active].encrypt(nonce, data_key, _wrap_aad(workspace, key_id))
        return WrappedKey(
            key_id=key_id, master_key_id=self._active, nonce=nonce, ciphertext=ciphertext
        )

    def unwrap(self, wrapped: WrappedKey, *, workspace: str) -> bytes:
        """Decrypt a data key of ``workspace``.

        Raises ``GristmillError`` (an operator problem, not a user one) when its master
        key is not in the keyring or the wrapped key does not authenticate.
        """
        where = f"data key {wrapped.key_id} of workspace {workspace!r}"
        aead = self._keys.get(wrapped.master_key_id)
        if aead is None:
            raise GristmillError(
                f"{where} is wrapped by master key {wrapped.master_key_id!r}, which is not "
                f"in the master keyring (keys: {', '.join(self._keys)}); add it back to "
                f"{MASTER_KEY_ENV} until every data key is rewrapped",
                workspace=workspace,
                key_id=wrapped.key_id,
                master_key_id=wrapped.master_key_id,
            )
        if not 1 <= wrapped.key_id <= _MAX_DATA_KEY_ID:
            raise GristmillError(f"{where} has an id out of range", workspace=workspace)
        try:
            key = aead.decrypt(
                wrapped.nonce, wrapped.ciphertext, _wrap_aad(workspace, wrapped.key_id)
            )
        except (InvalidTag, ValueError):
            raise GristmillError(
                f"{where} cannot be unwrapped with master key {wrapped.master_key_id!r}: "
                "wrong key material for that id, wrong workspace, or tampered data",
                workspace=workspace,
                key_id=wrapped.key_id,
                master_key_id=wrapped.master_key_id,
            ) from None
        if len(key) != KEY_BYTES:  # pragma: no cover - only a forged, authenticated blob
            raise GristmillError(f"{where} has the wrong length", workspace=workspace)
        return key

    def rewrap(self, wrapped: WrappedKey, *, workspace: str) -> WrappedKey:
        """The same data key wrapped by the active master key (unchanged if it already is)."""
        if wrapped.master_key_id == self._active:
            return wrapped
        key = self.unwrap(wrapped, workspace=workspace)
        return self.wrap(key, workspace=workspace, key_id=wrapped.key_id)

    def __repr__(self) -> str:
        return f"MasterKeyring(active_id={self._active!r}, key_ids={list(self._keys)!r})"
