"""The errors the executor itself reports (as opposed to errors the job's code raised)."""

from __future__ import annotations

import signal
from collections.abc import Iterable

import msgspec

from gristmill.common.contracts.jobs import ExitReason, JobError
from gristmill.worker.sandbox import ResourceUsage

__all__ = [
    "canceled",
    "exited_with_code",
    "killed_by_signal",
    "launch_failed",
    "limits_hit",
    "out_of_memory",
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


def killed_by_signal(
    signal_number: int, *, output_tail: str | None, usage: ResourceUsage | None = None
) -> JobError:
    """The job's process died of a signal; ``usage`` tells whether one of its limits
    sent it (the OOM killer, the CPU or file size limit)."""
    limits = usage.limits if usage is not None else None
    if usage is not None and usage.sandbox_error is not None:
        return JobError(
            name="SandboxError",
            message=f"the job's sandbox could not be set up: {usage.sandbox_error}",
            stack=output_tail or None,
        )
    if usage is not None and usage.oom_kills:
        return out_of_memory(usage, signal_number=signal_number, output_tail=output_tail)
    if limits is not None and limits.cpu_s is not None and signal_number == signal.SIGXCPU:
        return JobError(
            name="CpuLimit",
            message=f"job used its {_duration(limits.cpu_s)} of CPU time and was killed",
            stack=output_tail or None,
            exit_reason=ExitReason.TIMEOUT,
            signal=signal_number,
        )
    if limits is not None and limits.file_size_mb is not None and signal_number == signal.SIGXFSZ:
        return JobError(
            name="FileSizeLimit",
            message=f"job wrote a file larger than {limits.file_size_mb} MiB and was killed",
            stack=output_tail or None,
            exit_reason=ExitReason.SIGNAL,
            signal=signal_number,
        )
    message = f"process was killed by signal {signal_number} ({_signal_name(signal_number)})"
    measured = usage is not None and usage.memory_peak_bytes is not None  # no OOM kill seen
    if signal_number == signal.SIGKILL and not measured:
        message += "; it may have run out of memory"
    return JobError(
        name="Signal",
        message=message,
        stack=output_tail or None,
        exit_reason=ExitReason.SIGNAL,
        signal=signal_number,
    )


def out_of_memory(
    usage: ResourceUsage, *, signal_number: int | None, output_tail: str | None
) -> JobError:
    """The kernel's OOM killer ended the job (its memory cgroup was full)."""
    limit = usage.limits.memory_mb if usage.limits is not None else None
    return JobError(
        name="OutOfMemory",
        message=f"job ran out of memory (limit {limit} MiB) and was killed",
        stack=output_tail or None,
        exit_reason=ExitReason.OOM,
        signal=signal_number,
    )


def limits_hit(error: JobError | None, usage: ResourceUsage) -> JobError | None:
    """``error`` (a job's own failure) marked ``OOM`` when memory ran out: the job
    raised ``MemoryError`` (its address space limit), or the OOM killer ended one of
    its processes."""
    if error is None or error.exit_reason is not ExitReason.ERROR:
        return error
    limits = usage.limits
    if usage.oom_kills and limits is not None and limits.memory_mb is not None:
        note = f"out of memory: limit {limits.memory_mb} MiB"
    elif error.name == "MemoryError" and limits is not None and limits.address_space_mb:
        note = f"out of memory: address space limit {limits.address_space_mb} MiB per process"
    elif error.name == "MemoryError":
        note = "out of memory"
    else:
        return error
    message = f"{error.message} ({note})" if error.message else note
    return msgspec.structs.replace(error, exit_reason=ExitReason.OOM, message=message)


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
