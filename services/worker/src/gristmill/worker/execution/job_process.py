"""The job's first process, whose exit we notice without reaping it.

Until it is reaped, an exited process keeps its pid, and so the id of the process
group and session it leads: nothing new can take that number. The executor sweeps
the job's leftovers by that id while the process is still a zombie, and only then
reaps it, so it can never signal an unrelated process that recycled the pid. (This
is also why the process is not started through ``asyncio``'s subprocess support,
whose child watcher reaps at once.)

Exit is noticed through a pidfd (readable once the process exits), or where pidfds
are unavailable, by polling ``waitid(..., WNOWAIT)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess

__all__ = ["JobProcess"]

_POLL_S = 0.01


class JobProcess:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._loop = asyncio.get_running_loop()
        self._exited = asyncio.Event()
        self._reap_on_exit = False
        self._poll: asyncio.Handle | None = None
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:  # no pidfd support (old kernel, seccomp): poll instead
            self._pidfd = None
            self._poll = self._loop.call_soon(self._check)
        else:
            self._loop.add_reader(self._pidfd, self._on_exit)

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    async def wait_exited(self) -> None:
        """Return once the process has exited; it stays unreaped (a zombie)."""
        await self._exited.wait()

    def reap(self) -> int:
        """Collect the exited process's status: ``-N`` if signal N killed it."""
        if not self.exited:
            raise RuntimeError("the job process has not exited yet")
        self._stop_watching()
        return self._popen.wait()

    def reap_when_exited(self) -> None:
        """Reap now if the process has exited, else as soon as it does (no waiting)."""
        if self.exited:
            self.reap()
        else:
            self._reap_on_exit = True

    def _check(self) -> None:
        self._poll = None
        try:
            status = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere: it has exited all the same
            self._on_exit()
            return
        if status is None:
            self._poll = self._loop.call_later(_POLL_S, self._check)
        else:
            self._on_exit()

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
        self._exited.set()
        if self._reap_on_exit:
            self.reap()

    def _stop_watching(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, RuntimeError):  # loop closed
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
