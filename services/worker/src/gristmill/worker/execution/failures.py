"""The errors the executor itself reports (as opposed to errors the job's code raised)."""

from __future__ import annotations

import signal
from collections.abc import Iterable

from gristmill.common.contracts.jobs import ExitReason, JobError

__all__ = [
    "canceled",
    "exited_with_code",
    "killed_by_signal",
    "launch_failed",
    "timed_out",
    "unsupported_language",
]


def timed_out(timeout_s: float, *, signal_number: int | None) -> JobError:
    return JobError(
        name="Timeout",
        message=f"job timed out after {_duration(timeout_s)} and was killed",
        exit_reason=ExitReason.TIMEOUT,
        signal=signal_number,
    )


def canceled(*, signal_number: int | None = None) -> JobError:
    return JobError(
        name="Canceled",
        message="job was canceled",
        exit_reason=ExitReason.CANCELED,
        signal=signal_number,
    )


def killed_by_signal(signal_number: int, *, output_tail: str | None) -> JobError:
    message = f"process was killed by signal {signal_number} ({_signal_name(signal_number)})"
    if signal_number == signal.SIGKILL:
        message += "; it may have run out of memory"
    return JobError(
        name="Signal",
        message=message,
        stack=output_tail or None,
        exit_reason=ExitReason.SIGNAL,
        signal=signal_number,
    )


def exited_with_code(
    program: str, exit_code: int, *, detail: str = "", output_tail: str | None
) -> JobError:
    return JobError(
        name="ExitCode",
        message=f"{program} exited with code {exit_code}{detail}",
        stack=output_tail or None,
        exit_code=exit_code,
    )


def launch_failed(program: str, exc: BaseException) -> JobError:
    return JobError(name="LaunchError", message=f"could not start {program}: {exc}")


def unsupported_language(language: str, supported: Iterable[str]) -> JobError:
    return JobError(
        name="UnsupportedLanguage",
        message=(
            f"language {language!r} is not supported by this worker "
            f"(supported: {', '.join(sorted(supported))})"
        ),
        location="language",
    )


def _duration(seconds: float) -> str:
    if seconds < 60 or seconds % 60:
        return f"{seconds:g} s"
    minutes = int(seconds // 60)
    if minutes < 60 or minutes % 60:
        return f"{minutes} min"
    return f"{minutes // 60} h"


def _signal_name(signal_number: int) -> str:
    try:
        return signal.Signals(signal_number).name
    except ValueError:
        return "unknown signal"
