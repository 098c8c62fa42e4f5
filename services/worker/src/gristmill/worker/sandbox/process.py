"""A sandboxed job's first process: bubblewrap, reporting for the job inside it.

bubblewrap exits with its job's exit status, or with ``128 + N`` when a signal N
killed the job (the shell's convention: bubblewrap cannot report a death by signal
otherwise). ``reap`` turns ``128 + N`` back into ``-N``, as if the job's process had
been the worker's child, so a job killed by ``SIGKILL`` (by the OOM killer, say) is
told apart from one that failed. The price: a sandboxed job that *exits* with a
status from 129 to 192 is reported as killed by that signal.

With a per-job uid, bubblewrap waits for the worker to map the job's user namespace
(``JobSandbox.handshake_step``): that happens here, on the event loop, as soon as
bubblewrap reports its namespace, so that starting a job never blocks the loop.
"""

from __future__ import annotations

import contextlib
import subprocess

import msgspec
import structlog

from gristmill.worker.execution.job_process import JobProcess
from gristmill.worker.sandbox.job import JobSandbox, signal_from_status
from gristmill.worker.sandbox.limits import ResourceUsage

__all__ = ["SandboxedProcess"]

_log = structlog.get_logger(__name__)


class SandboxedProcess(JobProcess):
    """``JobProcess`` of a job in a ``JobSandbox``; reaping it also finishes the sandbox."""

    def __init__(self, popen: subprocess.Popen[bytes], job: JobSandbox) -> None:
        self._job = job
        #: What the job used and hit; complete once the process is reaped.
        self.usage = ResourceUsage(limits=job.limits)
        self._returncode: int | None = None
        self._setup_error: str | None = None
        self._handshake_fd = job.handshake_fd
        super().__init__(popen)
        if self._handshake_fd is not None:
            self._loop.add_reader(self._handshake_fd, self._handshake_step)

    def _handshake_step(self) -> None:
        # Unwatched while the step runs: it closes the descriptor when done.
        fd = self._handshake_fd
        self._stop_handshake()
        try:
            done = self._job.handshake_step()
        except OSError as exc:
            self._setup_error = str(exc)
            _log.warning("sandbox setup failed; job killed", error=self._setup_error)
            with contextlib.suppress(ProcessLookupError):
                self._popen.kill()
            return
        if not done and fd is not None:
            self._handshake_fd = fd
            self._loop.add_reader(fd, self._handshake_step)

    def _stop_handshake(self) -> None:
        if self._handshake_fd is not None:
            with contextlib.suppress(ValueError, RuntimeError):  # loop closed
                self._loop.remove_reader(self._handshake_fd)
            self._handshake_fd = None

    def oom_kills(self) -> int:
        """OOM kills in the job's memory cgroup so far (v1 or v2; 0 without one)."""
        return self._job.oom_kills()

    def reap(self) -> int:
        if self._returncode is None:
            returncode = super().reap()
            self._stop_handshake()
            usage = self._job.finish()
            if self._setup_error is not None:
                usage = msgspec.structs.replace(usage, sandbox_error=self._setup_error)
            self.usage = usage
            self._returncode = signal_from_status(returncode)
        return self._returncode
