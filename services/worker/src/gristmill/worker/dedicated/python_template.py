"""A warm Python interpreter for one script version, inside the job sandbox.

Started once per script version by the worker (``interpreter.py``), inside the same
bubblewrap sandbox as an ordinary job, with the script's packages on ``sys.path``::

    python -I -S -B -X utf8 -c LOADER SOCKET_FD CODE_DIR SANDBOXED

It imports what the script imports at its top level (once: that is the warm part),
says ``ready``, and then serves ``run`` frames one at a time (``protocol.py``). For
each job it forks: the child starts a new session, takes the job's output pipe as
stdout and stderr, enters the job's own directory, replaces its environment by the
job's (read from a file there: the job's token never passes through this process),
and runs the job exactly as an ordinary one (``python_bootstrap.run``: the script's
module is executed afresh, ``main(**args)`` is called, the result is written to a
file). So globals, the working directory and the environment are the job's own;
only imported modules are shared, as they were before the fork.

When the child has exited, every other process in the sandbox is killed (the job's
leftovers: under bubblewrap this process is pid 2, next to bubblewrap's pid 1), the
sandbox's private ``/tmp`` and ``/dev/shm`` are emptied, and ``done`` goes back
with the exit status. ``kill`` frames signal the running job; the interpreter stays.

The process is not dumpable, so that a job, which runs as the same user, cannot
open its memory through ``/proc`` and plant something for the next job.

Standard library only, Python 3.9 compatible, like ``python_bootstrap.py``.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import select
import signal
import socket
import struct
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__: list[str] = []

_HEADER = struct.Struct(">I")
_MAX_FRAME = 64 * 1024
_MAX_FDS = 4
_PR_SET_DUMPABLE = 4
#: How long to keep killing leftovers that still appear (a fork in flight).
_SWEEP_ROUNDS = 200
_PRIVATE_TMP = ("/tmp", "/dev/shm")  # noqa: S108  # the sandbox's own tmpfs mounts


class _Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self.fds: list[int] = []

    def send(self, frame: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        body = json.dumps(frame, separators=(",", ":")).encode()
        data = _HEADER.pack(len(body)) + body
        if fds:
            rights = struct.pack(f"{len(fds)}i", *fds)
            sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def receive(self) -> dict[str, Any] | None:
        """The next frame (blocking); ``None`` when the worker closed the socket."""
        while True:
            if len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if size > _MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes")
                end = _HEADER.size + size
                if len(self._buf) >= end:
                    frame = json.loads(self._buf[_HEADER.size : end])
                    self._buf = self._buf[end:]
                    return frame  # type: ignore[no-any-return]  # a JSON object by protocol
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(_MAX_FDS * 4))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    count = len(payload) // 4
                    self.fds.extend(struct.unpack(f"{count}i", payload[: count * 4]))
            if not data:
                return None
            self._buf += data


def serve(argv: list[str]) -> int:
    sock_fd, code_dir, sandboxed = int(argv[0]), argv[1], argv[2] == "1"
    started_at = time.time()
    _not_dumpable()
    channel = _Channel(socket.socket(fileno=sock_fd))
    errors = _warm_up(code_dir)
    channel.send(
        {
            "t": "ready",
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "started_at": started_at,
            "warmup_errors": errors,
            "modules": len(sys.modules),
        }
    )
    spare = _Spare(channel)
    while True:
        frame = channel.receive()
        if frame is None or frame.get("t") == "stop":
            spare.sock.close()  # it exits on seeing the end of its socket
            return 0
        if frame.get("t") != "run":
            continue  # e.g. a kill for a job that already ended
        if not channel.fds:
            raise ValueError("run frame without the job's output pipe")
        out_fd = channel.fds.pop(0)
        for extra in channel.fds:
            os.close(extra)
        channel.fds.clear()
        done = _run(channel, spare, frame, out_fd, sandboxed)
        channel.send(done)
        # The next job's process, forked while the worker records this one's end.
        spare = _Spare(channel)


class _Spare:
    """A process forked ahead of its job, waiting for the job's frame and output pipe.

    Forked from the interpreter between jobs (never while a job runs), it holds
    nothing of any job until it is handed one; then it becomes that job's process.
    """

    def __init__(self, channel: _Channel) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                channel.sock.close()
                ours.close()
                handed = _Channel(theirs)
                frame = handed.receive()
                if frame is None or not handed.fds:
                    os._exit(0)  # the interpreter is stopping
                theirs.close()
            except BaseException:
                os._exit(0)
            _child(frame, handed.fds[0])  # never returns
        theirs.close()
        self.pid = pid
        self.sock = ours

    def hand(self, frame: dict[str, Any], out_fd: int) -> bool:
        """Give it its job; False if it is gone (it is reaped then)."""
        try:
            _Channel(self.sock).send(frame, (out_fd,))
            return True
        except OSError:
            _signal_job(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            return False
        finally:
            self.sock.close()


def _run(
    channel: _Channel, spare: _Spare, frame: dict[str, Any], out_fd: int, sandboxed: bool
) -> dict[str, Any]:
    if not spare.hand(frame, out_fd):
        spare = _Spare(channel)
        spare.hand(frame, out_fd)
    os.close(out_fd)
    pid = spare.pid
    status, maxrss = _wait(channel, pid, sandboxed)
    swept = _sweep(pid, sandboxed)
    if sandboxed:
        for directory in _PRIVATE_TMP:
            _empty(directory)
    return {
        "t": "done",
        "job": frame["job"],
        "status": status,
        "maxrss_kb": maxrss,
        "rss_kb": _rss_kb(),
        "swept": swept,
    }


def _child(frame: dict[str, Any], out_fd: int) -> None:
    code = 70
    try:
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        if out_fd > 2:
            os.close(out_fd)
        os.chdir(frame["job"])
        with open(frame["env"], "rb") as f:
            env = marshal.load(f)  # noqa: S302  # written by the worker for this job
        os.environ.clear()
        os.environ.update(env)
        # Imported by the loader before this module, from the runners' directory.
        bootstrap: Any = sys.modules["python_bootstrap"]
        # Absolute, so that a job changing its directory still gets its result written.
        args, result = os.path.abspath(frame["args"]), os.path.abspath(frame["result"])
        code = bootstrap.run(frame["code"], args, result)
    except BaseException as exc:  # the job could not be set up: say so on its output
        with contextlib.suppress(OSError):
            os.write(2, f"gristmill: the job could not start: {exc!r}\n".encode())
    finally:
        _exit(code)


def _exit(code: int) -> None:
    """Leave as a finished interpreter would (streams flushed, non-daemon threads
    joined, ``atexit`` handlers run), without tearing down what the fork shared."""
    try:
        threading = sys.modules.get("threading")
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        import atexit

        run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
        if run_exit_functions is not None:
            run_exit_functions()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:  # noqa: S110  # exiting regardless is the point
        pass
    os._exit(code)


def _wait(channel: _Channel, pid: int, sandboxed: bool) -> tuple[int, int]:
    """Wait for the job's process, obeying ``kill`` frames meanwhile."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    poller = select.poll()
    poller.register(channel.sock.fileno(), select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    try:
        while True:
            ready = {fd for fd, _ in poller.poll(None if pidfd is not None else 5)}
            if channel.sock.fileno() in ready:
                frame = channel.receive()
                if frame is None:  # the worker is gone: so is the job
                    _signal_job(pid, signal.SIGKILL)
                    _sweep(pid, sandboxed)
                    os._exit(0)
                if frame.get("t") == "kill":
                    _signal_job(pid, int(frame["signal"]))
                    if int(frame["signal"]) == signal.SIGKILL:
                        _sweep(pid, sandboxed)
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done == pid:
                return os.waitstatus_to_exitcode(status), int(usage.ru_maxrss)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _signal_job(pid: int, number: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, number)  # the job's process leads its own session and group


def _sweep(job_pid: int, sandboxed: bool) -> int:
    """Kill whatever the job left running; the number of processes killed.

    In the sandbox's pid namespace every process but bubblewrap (pid 1) and this one
    belongs to the job. Without the sandbox only the job's process group is known.
    """
    if not sandboxed:
        _signal_job(job_pid, signal.SIGKILL)
        return 0
    me = os.getpid()
    killed: set[int] = set()
    for _ in range(_SWEEP_ROUNDS):
        alive = [pid for pid in _pids() if pid not in (1, me) and not _is_zombie(pid)]
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.001)
    return len(killed)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return True
    return raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3] in (b"Z", b"X")


def _empty(directory: str) -> None:
    """Remove everything below ``directory`` (the sandbox's own tmpfs)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _empty(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def _rss_kb() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: no other process of this user may open this one's
    memory (``/proc/<pid>/mem``) or attach to it; its children inherit it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    except (ImportError, AttributeError) as exc:
        raise OSError(f"cannot make the interpreter undumpable: {exc}") from exc


def _warm_up(code_dir: str) -> list[str]:
    """Run the script's top-level imports (only those: its other top-level code runs
    in each job, with the job's environment). Failures are the job's to report."""
    import ast

    errors: list[str] = []
    try:
        with open(os.path.join(code_dir, "main.py"), "rb") as f:
            source = f.read()
        tree = ast.parse(source, "main.py")
        # Compiling once here makes each job's compile of the script several times
        # faster (the compiler's first use in a process is the slow one).
        compile(source, "main.py", "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError) as exc:
        return [f"{type(exc).__name__}: {exc}"]
    scratch: dict[str, Any] = {"__name__": "main"}
    for node in tree.body:
        relative = isinstance(node, ast.ImportFrom) and node.level
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or relative:
            continue
        module = ast.Module(body=[node], type_ignores=[])
        try:
            exec(compile(module, "main.py", "exec"), scratch)  # noqa: S102  # the script's own imports
        except BaseException as exc:  # reported by the job that runs the script
            errors.append(f"line {node.lineno}: {type(exc).__name__}: {exc}")
    return errors
