"""What a language runner is: it prepares a job's command and reads its result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from gristmill.common.contracts.jobs import JobError
from gristmill.worker.execution.launch import Command
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.settings import ExecutorSettings

__all__ = [
    "Builds",
    "Envelope",
    "Finished",
    "ReportedError",
    "ResultUnreadable",
    "RunResult",
    "Runner",
    "collect_envelope",
    "read_result_file",
]


class Finished(msgspec.Struct, frozen=True, kw_only=True):
    """A job process that exited by itself (it was neither killed nor timed out)."""

    exit_code: int
    workdir: Path
    #: The end of stdout, for commands with ``separate_stderr`` (else empty) ...
    stdout_tail: str
    #: ... and whether its beginning was dropped.
    stdout_tail_cut: bool
    #: The last lines of all output, for error messages.
    output_tail: str


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    result: Any = None
    error: JobError | None = None


class Runner(Protocol):
    """One language. Adding a language is one module with one of these, registered
    in ``runners/__init__.py``."""

    @property
    def language(self) -> str:
        """The job ``language`` label this runner handles (e.g. ``python3``)."""
        ...

    def prepare(self, request: ExecutionRequest, settings: ExecutorSettings) -> Command:
        """Write what the job needs into ``request.workdir``; say what to run there.

        May raise ``OSError`` (the job then fails with ``LaunchError``).
        """
        ...

    def collect(self, finished: Finished, settings: ExecutorSettings) -> RunResult:
        """Turn an exited process (and what it left in the workdir) into a result."""
        ...


@runtime_checkable
class Builds(Protocol):
    """A runner with a step before ``prepare`` that runs a tool (a compiler) outside
    the job's process, in the tools' sandbox (``gristmill.worker.sandbox.tools``)."""

    async def build(self, request: ExecutionRequest, settings: ExecutorSettings) -> None:
        """Make what ``prepare`` needs; a failure is left for ``prepare``/``collect``
        to report as the job's error (e.g. a compile log in the job's directory)."""
        ...


class ResultUnreadable(Exception):
    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


def read_result_file(path: Path, *, max_bytes: int, label: str) -> bytes | None:
    """The bytes of a result file, ``None`` if there is none.

    Raises ``ResultUnreadable`` when it is larger than ``max_bytes`` or unreadable.
    """
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ResultUnreadable(
            JobError(name="InvalidResult", message=f"could not read {label}: {exc}", location=label)
        ) from exc
    if len(data) > max_bytes:
        raise ResultUnreadable(
            JobError(
                name="ResultTooLarge",
                message=f"{label} is larger than the limit of {max_bytes} bytes",
                location=label,
            )
        )
    return data


class ReportedError(msgspec.Struct, frozen=True, kw_only=True):
    """A failure as a job's bootstrap writes it into the result file."""

    name: str
    message: str
    stack: str | None = None
    location: str | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """The result file every bootstrap writes: ``{"ok": true, "result": ...}`` or the error."""

    ok: bool
    result: Any = None
    error: ReportedError | None = None


_envelope = msgspec.json.Decoder(Envelope)


def collect_envelope(
    finished: Finished,
    settings: ExecutorSettings,
    result_file: str,
    *,
    missing: Callable[[], JobError],
    failed_without_error: str,
    nonzero_after_ok: Callable[[], JobError] | None = None,
) -> RunResult:
    """Read a job's result envelope from ``result_file`` (relative to its workdir).

    ``missing`` describes a job that wrote no result; ``nonzero_after_ok``, if given,
    one that reported a result but then exited with a non-zero status.
    """
    try:
        data = read_result_file(
            finished.workdir / result_file, max_bytes=settings.max_result_bytes, label="result"
        )
    except ResultUnreadable as exc:
        return RunResult(error=exc.error)
    if data is None:
        return RunResult(error=missing())
    try:
        envelope = _envelope.decode(data)
    except msgspec.DecodeError as exc:
        return RunResult(
            error=JobError(
                name="InvalidResult",
                message=f"the job's result could not be read: {exc}",
                exit_code=finished.exit_code,
            )
        )
    if envelope.ok:
        if finished.exit_code != 0 and nonzero_after_ok is not None:
            return RunResult(error=nonzero_after_ok())
        return RunResult(result=envelope.result)
    reported = envelope.error or ReportedError(name="Error", message=failed_without_error)
    return RunResult(
        error=JobError(
            name=reported.name,
            message=reported.message,
            stack=reported.stack or None,
            location=reported.location,
            exit_code=finished.exit_code,
        )
    )
