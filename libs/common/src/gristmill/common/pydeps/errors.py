"""The one error this package and the worker's environment builder raise."""

from __future__ import annotations

from typing import Any

from gristmill.common.errors import GristmillError

__all__ = ["DependencyError"]


class DependencyError(GristmillError):
    """A script's Python dependencies could not be read, resolved or installed.

    ``requirement`` names the requirement at fault when it is known (as the script
    wrote it, else as uv reported it); ``stderr`` is uv's own report, verbatim;
    ``transient`` is true when trying again later may succeed (network, timeout,
    a lock held too long), false when the script must change.
    """

    code = "dependency_error"

    def __init__(
        self,
        message: str,
        *,
        requirement: str | None = None,
        stderr: str | None = None,
        transient: bool = False,
        location: str | None = None,
    ) -> None:
        data: dict[str, Any] = {"transient": transient}
        if requirement is not None:
            data["requirement"] = requirement
        if stderr is not None:
            data["stderr"] = stderr
        super().__init__(message, location=location, **data)
        self.requirement = requirement
        self.stderr = stderr
        self.transient = transient
