"""The stored format of an encrypted secret value.

Binary form (version 1), all integers big-endian::

    offset  size  field
    0       1     format version (1)
    1       4     data key id (unsigned)
    5       12    GCM nonce
    17      16+   AES-256-GCM ciphertext followed by its 16-byte tag

Text form, for a text column: ``"$gm1$" + base64url(binary form)`` without padding.
"""

from __future__ import annotations

import base64
import binascii
import re

import msgspec

from gristmill.common.errors import InvalidRequest
from gristmill.common.secrets.master import NONCE_BYTES

__all__ = [
    "FORMAT_VERSION",
    "TEXT_PREFIX",
    "SealedSecret",
    "decode",
    "decode_text",
    "encode",
    "encode_text",
]

FORMAT_VERSION = 1
TEXT_PREFIX = f"$gm{FORMAT_VERSION}$"
TAG_BYTES = 16
_KEY_ID_BYTES = 4
HEADER_BYTES = 1 + _KEY_ID_BYTES + NONCE_BYTES
_MIN_BYTES = HEADER_BYTES + TAG_BYTES
_TEXT = re.compile(r"\$gm(\d{1,3})\$([A-Za-z0-9_-]*)")


class SealedSecret(msgspec.Struct, frozen=True, kw_only=True):
    """An encrypted secret value, split into its header fields and GCM output."""

    key_id: int
    nonce: bytes
    #: GCM ciphertext with the 16-byte tag appended.
    ciphertext: bytes
    version: int = FORMAT_VERSION


def encode(sealed: SealedSecret) -> bytes:
    """The binary form."""
    if sealed.version != FORMAT_VERSION:
        raise ValueError(f"only format version {FORMAT_VERSION} can be written")
    if not 0 <= sealed.key_id < 2 ** (8 * _KEY_ID_BYTES):
        raise ValueError(f"the data key id must fit in {_KEY_ID_BYTES} bytes")
    if len(sealed.nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    if len(sealed.ciphertext) < TAG_BYTES:
        raise ValueError(f"the ciphertext must hold at least the {TAG_BYTES}-byte tag")
    return (
        bytes([FORMAT_VERSION])
        + sealed.key_id.to_bytes(_KEY_ID_BYTES, "big")
        + sealed.nonce
        + sealed.ciphertext
    )


def decode(data: bytes, *, location: str | None = None) -> SealedSecret:
    """Parse the binary form; ``InvalidRequest`` (at ``location``) when it is malformed.

    Only the structure is checked here; authenticity is checked when decrypting.
    """
    if not data:
        raise InvalidRequest("encrypted value is empty", location=location)
    if data[0] != FORMAT_VERSION:
        raise InvalidRequest(
            f"encrypted value has unsupported format version {data[0]} "
            f"(this version reads {FORMAT_VERSION})",
            location=location,
        )
    if len(data) < _MIN_BYTES:
        raise InvalidRequest(
            f"encrypted value is truncated: {len(data)} bytes, at least {_MIN_BYTES} expected",
            location=location,
        )
    return SealedSecret(
        key_id=int.from_bytes(data[1 : 1 + _KEY_ID_BYTES], "big"),
        nonce=data[1 + _KEY_ID_BYTES : HEADER_BYTES],
        ciphertext=data[HEADER_BYTES:],
    )


def encode_text(sealed: SealedSecret) -> str:
    """The text form, ``$gm1$<base64url>``."""
    return TEXT_PREFIX + base64.urlsafe_b64encode(encode(sealed)).rstrip(b"=").decode("ascii")


def decode_text(text: str, *, location: str | None = None) -> SealedSecret:
    """Parse the text form; ``InvalidRequest`` (at ``location``) when it is malformed."""
    match = _TEXT.fullmatch(text)
    if match is None:
        raise InvalidRequest(
            f"not an encrypted value: expected '{TEXT_PREFIX}' followed by base64url",
            location=location,
        )
    version, body = int(match.group(1)), match.group(2)
    if version != FORMAT_VERSION:
        raise InvalidRequest(
            f"encrypted value has unsupported format version {version} "
            f"(this version reads {FORMAT_VERSION})",
            location=location,
        )
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            "encrypted value is truncated: its base64url body has an impossible length",
            location=location,
        ) from None
    return decode(data, location=location)
