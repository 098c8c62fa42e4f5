"""What to run (``ExecutionRequest``) and how it ended (``ExecutionOutcome``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec

from gristmill.common.contracts.jobs import ExitReason, JobError, JobStatus
from gristmill.common.contracts.sandbox import SandboxRequest

__all__ = ["ExecutionOutcome", "ExecutionRequest"]


class ExecutionRequest(msgspec.Struct, frozen=True, kw_only=True):
    job_id: uuid.UUID
    #: ``python3`` or ``bash``; anything else ends the job with ``UnsupportedLanguage``.
    language: str
    code: str
    #: ``main``'s keyword arguments (Python) or the positional arguments, in order (Bash).
    args: dict[str, Any]
    #: The job's whole environment. Nothing of the worker's is inherited; only ``PATH``,
    #: ``HOME`` (the workdir) and ``LANG`` are filled in when missing.
    env: dict[str, str]
    #: Wall-clock limit from process start; ``None`` for none.
    timeout_s: float | None
    #: A private, existing, empty directory: the job's working directory. The caller
    #: creates it and removes it afterwards; the executor writes the script (and, for
    #: Python, a ``.gristmill/`` control directory) into it.
    workdir: Path
    #: Python: directories of installed packages (``pyenv.ensure_env``) the job imports
    #: from, searched after the standard library. The job only reads them.
    python_path: tuple[str, ...] = ()
    #: The script's own, tighter sandbox settings (applied within the worker group's).
    sandbox: SandboxRequest | None = None
    #: A step of a same_worker flow: the flow's folder, kept by the worker across its
    #: steps, which the job sees read-write as ``shared`` in its working directory.
    shared_dir: Path | None = None


class ExecutionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    success: bool
    #: What ``main`` returned (Python) or the script's result (Bash); ``None`` on failure.
    result: Any
    error: JobError | None
    #: The process's exit status; ``None`` when it was killed by a signal or never started.
    exit_code: int | None
    #: From process start to process exit (0 when the job never started).
    duration_ms: int
    exit_reason: ExitReason
    #: True when output beyond ``ExecutorSettings.log_max_bytes`` was dropped.
    log_truncated: bool = False
    #: Bytes the job wrote to stdout and stderr, including dropped ones.
    log_bytes: int = 0
    #: Highest memory use of the job (its sandbox's memory cgroup), when measured.
    memory_peak_bytes: int | None = None

    @property
    def status(self) -> JobStatus:
        if self.success:
            return JobStatus.SUCCESS
        if self.exit_reason is ExitReason.CANCELED:
            return JobStatus.CANCELED
        return JobStatus.FAILURE
