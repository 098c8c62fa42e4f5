"""A pre-started job launcher: ``python3 -S -I <this file> <control fd> <cgroup.procs>...``.

Run by the job interpreter (Python 3.9 or newer, standard library only), started by
``launcher.Launcher``. It enters the given cgroups (in cgroup v1 a move waits for an
RCU grace period when moves are rare: here, ahead of any job), writes ``r`` on its
control socket (``e<why>`` if it could not), and waits for one job: an 8-byte
length, then a marshalled dict of bytes and ints (``argv``, ``env``, ``cwd``,
``targets``: the number each descriptor sent along must have, in the order sent;
``uid``: ``-1`` keeps the worker's). It puts the descriptors in place, closes every
other one above stderr, takes the job's uid (no supplementary groups), asks to be
killed when the worker dies, and becomes the job's command.

The worker going away before that ends it quietly (status 0); any failure once it
has the job exits with status 125 and a line on stderr (the job's output then).

It imports C modules where the Python ones cost its start milliseconds (``socket``
and ``signal`` import ``enum``), and neither ``typing`` nor ``contextlib``.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: the C module under signal
import _socket
import ctypes
import fcntl
import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported when run: typing costs the start milliseconds
    from typing import Any, NoReturn

_PR_SET_PDEATHSIG = 1
#: The kernel's limit of descriptors per message (SCM_MAX_FD).
_MAX_FDS = 253
_HEADER = 8
_LIBC = ctypes.CDLL(None, use_errno=True)


def _fail(message: str) -> NoReturn:
    try:
        os.write(2, ("gristmill launcher: " + message + "\n").encode(errors="replace"))
    finally:
        os._exit(125)


def _receive(control: _socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The job's message and the descriptors sent with it (close-on-exec)."""
    data = b""
    fds: list[int] = []
    wanted = None
    space = _socket.CMSG_SPACE(_MAX_FDS * 4)
    while wanted is None or len(data) < wanted:
        try:
            chunk, ancdata, flags, _ = control.recvmsg(1 << 16, space, _socket.MSG_CMSG_CLOEXEC)
        except OSError:
            chunk, ancdata, flags = b"", [], 0
        for level, kind, payload in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += memoryview(payload)[: len(payload) - len(payload) % 4].cast("i").tolist()
        if flags & _socket.MSG_CTRUNC:
            _fail("too many descriptors")
        if not chunk:
            if data or fds:
                _fail("the job's message was cut short")
            os._exit(0)  # the worker went away without giving a job
        data += chunk
        if wanted is None and len(data) >= _HEADER:
            wanted = _HEADER + int.from_bytes(data[:_HEADER], "little")
    return marshal.loads(data[_HEADER:]), fds  # noqa: S302  # from the worker that started it


def _place(received: list[int], targets: list[int]) -> None:
    """Give each received descriptor its target number (inheritable); close every
    other descriptor above stderr."""
    if len(received) != len(targets):
        _fail(f"{len(received)} descriptors for {len(targets)} places")
    floor = max([2, *received, *targets]) + 1
    # Out of the way first, so that no target overwrites a descriptor still to place.
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in received]
    for fd in received:
        os.close(fd)
    for i, target in enumerate(targets):  # (zip's strict= is newer than Python 3.9)
        os.dup2(moved[i], target, inheritable=True)
    keep = {0, 1, 2, *targets}
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:  # noqa: SIM105  # contextlib would cost the start milliseconds
                os.close(int(name))
            except OSError:
                pass  # the listing's own descriptor, closed already


def main() -> None:
    parent = os.getppid()
    control = _socket.socket(fileno=int(sys.argv[1]))
    try:
        for path in sys.argv[2:]:
            with open(path, "w", encoding="ascii") as f:
                f.write("0")
    except OSError as exc:
        try:
            control.sendall(b"e" + str(exc).encode(errors="replace")[:500])
        finally:
            os._exit(125)
    try:
        control.sendall(b"r")
    except OSError:
        os._exit(0)  # the worker went away
    job, fds = _receive(control)
    control.detach()  # closed by _place with the rest
    try:
        _place(fds, job["targets"])
        uid = job["uid"]
        if uid >= 0:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        # After the uid change, which clears it: die with the worker ...
        if _LIBC.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0) != 0:
            _fail("prctl: " + os.strerror(ctypes.get_errno()))
        # ... which may have died before that.
        if os.getppid() != parent:
            _fail("the worker is gone")
        os.chdir(job["cwd"])
        # What Python ignores for itself: a job gets the defaults, as from a fork.
        for signum in (_signal.SIGPIPE, _signal.SIGXFSZ):
            _signal.signal(signum, _signal.SIG_DFL)
        os.execve(job["argv"][0], job["argv"], job["env"])  # noqa: S606  # the job's command
    except OSError as exc:
        _fail(str(exc))


main()
