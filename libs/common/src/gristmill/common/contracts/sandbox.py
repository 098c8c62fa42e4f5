"""What a script asks of the sandbox its jobs run in (its ``sandbox`` setting).

Saved with the script (``{"sandbox": {"network": "none", "memory_mb": 256}}`` beside
``timeout`` and the other settings) and carried by each of its jobs in ``meta``. A
worker applies it *within* what its group allows: a limit is the smaller of the
script's and the group's, and a script may ask for no network on a worker group with
the host's network, never the other way round.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from gristmill.common.errors import InvalidRequest

__all__ = ["META_KEY", "SandboxRequest", "decode_sandbox_request"]

#: The key of a job's ``meta`` holding its script's ``SandboxRequest``.
META_KEY = "sandbox"


class SandboxRequest(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Tighter limits for one script's jobs; ``None`` keeps the worker group's."""

    #: ``none``: no network at all (an empty network namespace); ``host``: the group's.
    network: Literal["host", "none"] | None = None
    memory_mb: int | None = None
    address_space_mb: int | None = None
    cpu_s: int | None = None
    processes: int | None = None
    open_files: int | None = None
    file_size_mb: int | None = None
    tmp_mb: int | None = None

    def __post_init__(self) -> None:
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            if field.name != "network" and value is not None and value <= 0:
                raise ValueError(f"{field.name} must be a positive integer, got {value}")


def decode_sandbox_request(value: Any, *, location: str = "sandbox") -> SandboxRequest | None:
    """``value`` (a script's ``sandbox`` setting) checked; ``InvalidRequest`` says what
    is wrong and where."""
    if value is None:
        return None
    try:
        return msgspec.convert(value, SandboxRequest)
    except msgspec.ValidationError as exc:
        where = location
        message = str(exc)
        if " - at `$." in message:
            message, _, field = message.partition(" - at `$.")
            where = f"{location}.{field.rstrip('`')}"
        raise InvalidRequest(f"invalid sandbox setting: {message}", location=where) from None
