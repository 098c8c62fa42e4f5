"""Finding and killing every process a job started, through ``/proc``.

The job's process is started in its own session, so most of its descendants share
its session and process group. Those that left both (``setsid``) are found by
ancestry while their parent lives, and, once orphaned, by still holding the job's
output pipes. A process that left the session, lost its parent and closed its output
escapes; the sandbox's pid namespace closes that gap.

Processes are tracked as (pid, start time) and signalled through a pidfd after the
start time is checked again, so a recycled pid is never signalled. Nothing here
changes the worker process itself (no subreaper, no signal handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

__all__ = ["ProcessTree", "terminate"]

_PROC = "/proc"
_POLL_S = 0.02
#: Rounds of SIGSTOP-and-look-again before the final SIGKILL, against forks in flight.
_FREEZE_ROUNDS = 8


class _Stat:
    __slots__ = ("pgid", "pid", "ppid", "sid", "start", "state")

    def __init__(self, pid: int, state: str, ppid: int, pgid: int, sid: int, start: int) -> None:
        self.pid = pid
        self.state = state
        self.ppid = ppid
        self.pgid = pgid
        self.sid = sid
        self.start = start


def _read_stat(pid: int) -> _Stat | None:
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ..."; comm may contain spaces and parentheses.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return _Stat(
            pid,
            fields[0].decode(),
            int(fields[1]),
            int(fields[2]),
            int(fields[3]),
            int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    try:
        names = os.listdir(_PROC)
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def _holds_any(pid: int, links: frozenset[str]) -> bool:
    fd_dir = f"{_PROC}/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") in links:
                return True
        except OSError:
            continue
    return False


def _is_gone(stat: _Stat | None, start: int) -> bool:
    return stat is None or stat.start != start or stat.state in ("Z", "X")


class ProcessTree:
    """The processes of one job: its root, the root's session and group, descendants."""

    def __init__(self, root_pid: int, *, pipe_inodes: frozenset[int] = frozenset()) -> None:
        self.root_pid = root_pid
        self._pipe_links = frozenset(f"pipe:[{inode}]" for inode in pipe_inodes)
        self._members: dict[int, int] = {}  # pid -> start time
        self._me = os.getpid()
        self._root_reaped = False

    def forget_root(self) -> None:
        """The root is about to be reaped: its pid, and so its group and session id, may
        be recycled from now on, so stop finding processes by them."""
        self._root_reaped = True

    @property
    def pids(self) -> frozenset[int]:
        return frozenset(self._members)

    def refresh(self, *, pipe_holders: bool = False) -> None:
        """Add every live process that belongs to the job; forget the dead ones.

        With ``pipe_holders``, also add processes holding the job's output pipes
        (slower: it lists every process's file descriptors).
        """
        stats = {s.pid: s for s in map(_read_stat, _all_pids()) if s is not None}
        members = {
            pid: start
            for pid, start in self._members.items()
            if not _is_gone(stats.get(pid), start)
        }
        children: dict[int, list[_Stat]] = {}
        for s in stats.values():
            if s.pid == self._me or s.state in ("Z", "X"):
                continue
            children.setdefault(s.ppid, []).append(s)
            in_session = not self._root_reaped and (
                s.pid == self.root_pid or self.root_pid in (s.sid, s.pgid)
            )
            if in_session or (
                pipe_holders
                and s.ppid != self._me  # the worker's other children are not this job's
                and _holds_any(s.pid, self._pipe_links)
            ):
                members[s.pid] = s.start
        frontier = list(members)
        while frontier:
            for child in children.get(frontier.pop(), ()):
                if child.pid not in members:
                    members[child.pid] = child.start
                    frontier.append(child.pid)
        self._members = members

    def alive(self) -> bool:
        """Whether any tracked process still runs (zombies count as gone)."""
        return any(not _is_gone(_read_stat(pid), start) for pid, start in self._members.items())

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the root's process group and to every tracked process."""
        if not self._root_reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.root_pid, sig)
        for pid, start in list(self._members.items()):
            _signal_exactly(pid, start, sig)

    def kill_group(self) -> None:
        """SIGKILL the root's process group: cheap, no ``/proc`` scan."""
        if not self._root_reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.root_pid, signal.SIGKILL)

    def kill(self, *, pipe_holders: bool = False) -> None:
        """SIGKILL the whole tree now.

        Everyone found is first stopped, and the tree looked at again, until nobody new
        appears: a stopped process cannot fork, so no child is born after the sweep.
        """
        for _ in range(_FREEZE_ROUNDS):
            before = self.pids
            self.refresh(pipe_holders=pipe_holders)
            self.signal(signal.SIGSTOP)
            self.refresh(pipe_holders=pipe_holders)
            if self.pids <= before:
                break
        self.signal(signal.SIGKILL)


def _signal_exactly(pid: int, start: int, sig: int) -> None:
    """Signal ``pid`` only if it is still the process that started at ``start``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd support (old kernel, seccomp): check, then signal by pid
        if not _is_gone(_read_stat(pid), start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return
    try:
        if not _is_gone(_read_stat(pid), start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(pidfd, sig)
    finally:
        os.close(pidfd)


async def terminate(tree: ProcessTree, *, grace_s: float, sandboxed: bool = False) -> None:
    """SIGTERM the tree, give it ``grace_s`` to exit, then SIGKILL what is left.

    ``sandboxed``: the tree is the sandbox's plumbing (bubblewrap and what enters it)
    around the job's own processes in a pid namespace of their own. SIGTERM then goes
    to the job's processes only: bubblewrap dies of it at once and takes the job with
    it (``--die-with-parent``), which would leave the job no grace at all. Once they
    exit, the namespace's init and bubblewrap follow by themselves.
    """
    tree.refresh()
    inner = _inside_namespaces(tree.pids) if sandboxed else []
    if inner:
        for pid, start in inner:
            _signal_exactly(pid, start, signal.SIGTERM)
    else:
        tree.signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while loop.time() < deadline:
        await asyncio.sleep(_POLL_S)
        # Look again: a dying parent orphans its children, and ancestry is lost then.
        tree.refresh()
        if not tree.alive():
            return
    tree.kill()


def _nspids(pid: int) -> list[str]:
    """``pid``'s ids in each pid namespace, outermost first (``NSpid``); [] if gone."""
    try:
        with open(f"{_PROC}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return line.decode().split()[1:]
    except OSError:
        return []
    return []


def _inside_namespaces(pids: frozenset[int]) -> list[tuple[int, int]]:
    """``(pid, start)`` of those of ``pids`` that run in a pid namespace below the
    worker's, other than as its init (bubblewrap's inner process)."""
    depth = len(_nspids(os.getpid())) or 1
    found: list[tuple[int, int]] = []
    for pid in pids:
        ids = _nspids(pid)
        stat = _read_stat(pid)
        if len(ids) > depth and ids[-1] != "1" and stat is not None:
            found.append((pid, stat.start))
    return found
