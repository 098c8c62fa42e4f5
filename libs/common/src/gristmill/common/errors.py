"""One exception tree for everything a user or an operator can cause.

Each error has a stable ``code`` and carries data (the offending ``location``, a
retry delay, ...). The gateway maps codes to HTTP statuses; nothing here knows HTTP.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "Forbidden",
    "GristmillError",
    "InvalidRequest",
    "JobNotRunning",
    "LeaseLost",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
]


class GristmillError(Exception):
    """Base of every error Gristmill raises on purpose."""

    code = "internal"

    def __init__(self, message: str, *, location: str | None = None, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.location is not None:
            body["location"] = self.location
        if self.data:
            body["data"] = self.data
        return body

    def __str__(self) -> str:
        if self.location:
            return f"{self.location}: {self.message}"
        return self.message


class InvalidRequest(GristmillError):
    """The input is malformed or breaks a rule; ``location`` names the field."""

    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


class NotFound(GristmillError):
    code = "not_found"


class Conflict(GristmillError):
    code = "conflict"


class Unauthorized(GristmillError):
    code = "unauthorized"


class Forbidden(GristmillError):
    code = "forbidden"


class JobNotRunning(Conflict):
    code = "job_not_running"


class LeaseLost(Conflict):
    """A worker tried to finish a job it no longer owns (it was recovered or canceled)."""

    code = "lease_lost"
