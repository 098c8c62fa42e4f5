"""Job processes started ahead, each already inside fresh job cgroups.

Moving a process into a cgroup v1 group waits for the kernel (an RCU grace period,
~9 ms here) when moves are rare, as they are between jobs: the biggest part of a
sandboxed job's start. ``Launchers`` keeps a few processes (``_launcher_main.py`` on
the job interpreter) that made that move ahead of time, each into groups of its own
with the worker group's default limits, waiting on a socket. ``take`` hands one out
without waiting (``None`` when none is ready: the job starts the ordinary way);
``Launcher.start`` sends the job's command, environment, uid and descriptors, and the
launcher *becomes* the job's first process (bubblewrap): same pid, still the worker's
child, in a session of its own, so it is waited for and killed like any job process.
It drops to the job's uid with no supplementary groups and sets its parent-death
signal itself, so the ``setpriv`` and ``sh`` steps of the ordinary start are gone too.

A replacement starts when the job ends, or half a second after the take if the job
runs longer: not while the job starts. Started right at the take, the replacement's
own start and cgroup move slowed the job's start by ~7 ms when jobs are far apart
(``bench/sandbox_overhead``).

A launcher serves one job. Jobs whose cgroup limits differ from the defaults (a
script's own ``sandbox`` settings) start the ordinary way, in groups made for them.

A waiting launcher ends when the worker process does (its socket closes); its
groups are swept with the worker's by the next worker (``cgroupfs``). ``close_all``
(at exit, and when a worker stops) ends the waiting ones and removes their groups.
Use from one thread, the event loop's: the job's parent-death signal is tied to the
thread that started its launcher.
"""

from __future__ import annotations

import array
import asyncio
import atexit
import contextlib
import marshal
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from gristmill.worker.sandbox.limits import CgroupRoots, JobCgroup, Limits

__all__ = ["MAX_FDS", "Launcher", "LauncherGone", "Launchers", "close_all", "launchers"]

_log = structlog.get_logger(__name__)
_MAIN = Path(__file__).with_name("_launcher_main.py")
#: Descriptors one job may be handed (the kernel's SCM_MAX_FD).
MAX_FDS = 253
#: When the replacement of a taken launcher starts at the latest, if the job it was
#: taken for still runs.
_REFILL_AFTER_S = 0.5
#: Failed launchers in a row after which none are started any more.
_MAX_FAILURES = 3


class LauncherGone(OSError):
    """The launcher died before it could take the job (nothing of the job started)."""


def _group_limits(limits: Limits) -> tuple[int | None, int | None]:
    """What of ``limits`` a job's cgroups hold (``JobCgroup``): the rest is in its argv."""
    return limits.memory_mb, limits.processes


class Launcher:
    """One pre-started launcher (see the module docstring)."""

    def __init__(
        self,
        python: str,
        roots: CgroupRoots,
        limits: Limits,
        *,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Start it; ``on_done`` is called once it is done with (``done``). Raises
        ``OSError`` (nothing left behind then)."""
        #: Its groups, which become the job's.
        self.cgroup = JobCgroup(roots, f"pre-{uuid.uuid4().hex[:12]}", limits)
        #: ``start`` was called: the process is (or was) the job's.
        self.started = False
        self._ready = False
        self._on_done = on_done
        try:
            self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except BaseException:
            self.cgroup.remove()
            raise
        try:
            with theirs:
                argv = [python, "-S", "-I", str(_MAIN), str(theirs.fileno())]
                self.popen = subprocess.Popen(
                    [*argv, *self.cgroup.procs_files],
                    stdin=subprocess.DEVNULL,
                    # Not the worker's stdout; its stderr for what goes wrong before
                    # the job's own output is in place.
                    stdout=subprocess.DEVNULL,
                    cwd="/",
                    env={},
                    start_new_session=True,
                    pass_fds=(theirs.fileno(),),
                )
        except BaseException:
            self._control.close()
            self.cgroup.remove()
            raise
        self._control.setblocking(False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ready(self) -> bool:
        """It waits in its groups for a job (never blocks). Raises ``OSError`` when it
        failed or died."""
        if not self._ready:
            try:
                answer = self._control.recv(512)
            except BlockingIOError:
                answer = None
            if answer == b"r":
                self._ready = True
            elif answer:  # e<why>: it could not enter its groups
                raise OSError(answer[1:].decode(errors="replace"))
            elif answer is not None:
                raise OSError("the launcher ended before it was ready")
        if self.popen.poll() is not None:
            raise OSError(f"the launcher exited (status {self.popen.returncode})")
        return self._ready

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        fds: Mapping[int, int],
        uid: int | None,
    ) -> subprocess.Popen[bytes]:
        """Make it the job's first process, ``argv[0]`` an absolute path: ``fds`` maps
        each number the job must see to this process's descriptor to put there
        (stdout and stderr included). The caller keeps (and closes) its descriptors.

        Raises ``LauncherGone`` when it died meanwhile (ended then), ``ValueError`` for
        a NUL byte or too many descriptors (the launcher is then left unused).
        """
        if len(fds) > MAX_FDS:
            raise ValueError(f"{len(fds)} descriptors for a job; at most {MAX_FDS}")
        args = [os.fsencode(arg) for arg in argv]
        variables = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        if any(b"\0" in arg for arg in args) or any(
            b"\0" in k or b"\0" in v or b"=" in k for k, v in variables.items()
        ):
            raise ValueError("embedded NUL byte (or '=' in a variable's name)")
        job = {
            "argv": args,
            "env": variables,
            "cwd": os.fsencode(cwd),
            "targets": list(fds),
            "uid": -1 if uid is None else uid,
        }
        payload = marshal.dumps(job)
        message = len(payload).to_bytes(8, "little") + payload
        self.started = True
        try:
            self._control.setblocking(True)
            rights = array.array("i", fds.values())
            sent = self._control.sendmsg(
                [message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
            )
            if sent < len(message):  # (sendall sends even nothing: EPIPE once it exec'd)
                self._control.sendall(message[sent:])
        except OSError as exc:
            # It died before it had the whole message, so it never runs the job: the job
            # can start the ordinary way.
            self._end()
            raise LauncherGone(f"the pre-started launcher is gone ({exc})") from exc
        finally:
            self._control.close()
        return self.popen

    def done(self) -> None:
        """The job it was taken for ended (or never started: it is ended then, its
        groups removed); its set may start a replacement."""
        if not self.started:
            self.discard()
        if self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done()

    def discard(self) -> None:
        """End it unused, its groups removed."""
        self._end()
        self.cgroup.kill_all()
        self.cgroup.remove()

    def _end(self) -> None:
        self._control.close()
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()


class Launchers:
    """Up to ``size`` launchers waiting for jobs with ``limits``' groups (see the
    module docstring)."""

    def __init__(self, python: str, roots: CgroupRoots, limits: Limits, *, size: int) -> None:
        self._python = python
        self._roots = roots
        self._limits = limits
        self._size = size
        self._lock = threading.Lock()
        self._waiting: list[Launcher] = []
        self._failures = 0
        self._refill: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        #: Closed, and not used since: no refill by itself (a job ending, a timer).
        self._closed = False
        #: Jobs these launchers could serve that got one, and that found none ready.
        self.taken = 0
        self.missed = 0

    def serves(self, limits: Limits) -> bool:
        """A job with ``limits`` can start in one of these launchers' groups."""
        return _group_limits(limits) == _group_limits(self._limits)

    def take(self, limits: Limits) -> Launcher | None:
        """A ready launcher for a job with ``limits``, or ``None`` (never waits).

        Its replacement starts once the job ended (``Launcher.done``) or after
        ``_REFILL_AFTER_S``, whichever comes first: not while the job itself starts,
        which it would slow down. With none ready, missing ones start right after.
        """
        if not self.serves(limits):
            return None
        self._closed = False
        found = None
        with self._lock:
            for launcher in list(self._waiting):
                try:
                    ready = launcher.ready()
                except OSError as exc:
                    self._waiting.remove(launcher)
                    launcher.discard()
                    self._failed(exc)
                    continue
                if ready:
                    self._waiting.remove(launcher)
                    self._failures = 0
                    found = launcher
                    break
        if found is None:
            self.missed += 1
            self._refill_soon()
        else:
            self.taken += 1
            self._refill_later(_REFILL_AFTER_S)
        return found

    def ready_count(self) -> int:
        """How many launchers wait ready now (never blocks)."""
        with self._lock:
            count = 0
            for launcher in self._waiting:
                with contextlib.suppress(OSError):  # take() will discard it
                    count += launcher.ready()
            return count

    def fill(self) -> None:
        """Start launchers until ``size`` wait (unless they keep failing)."""
        with self._lock:
            self._closed = False
            while len(self._waiting) < self._size and self._failures < _MAX_FAILURES:
                try:
                    launcher = Launcher(
                        self._python, self._roots, self._limits, on_done=self._refill_soon
                    )
                except OSError as exc:
                    self._failed(exc)
                else:
                    self._waiting.append(launcher)

    def close(self) -> None:
        """End the waiting launchers, their groups removed; none start again until
        the next ``take`` (or ``fill``)."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
            if self._refill is not None:
                self._refill[1].cancel()
                self._refill = None
        for launcher in waiting:
            launcher.discard()

    def _refill_soon(self) -> None:
        self._refill_later(0.0)

    def _refill_later(self, delay_s: float) -> None:
        """``fill`` after ``delay_s`` on the running loop (at once without one), unless
        a refill is due by then already (none once closed)."""
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.fill()
            return
        due = loop.time() + delay_s
        with self._lock:
            if self._refill is not None:
                pending_loop, pending = self._refill
                if pending_loop is loop and not pending.cancelled() and pending.when() <= due:
                    return
                pending.cancel()
            self._refill = (loop, loop.call_at(due, self._refill_now))

    def _refill_now(self) -> None:
        with self._lock:
            self._refill = None
            if self._closed:
                return
        self.fill()

    def _failed(self, exc: OSError) -> None:
        self._failures += 1
        if self._failures < _MAX_FAILURES:
            _log.warning("pre-started job launcher failed", error=str(exc))
        else:
            _log.error(
                "pre-started job launchers keep failing; jobs start the ordinary way",
                error=str(exc),
            )


#: This process's launchers, by interpreter, cgroup parents, group limits and size.
_sets: dict[tuple[str, CgroupRoots, tuple[int | None, int | None], int], Launchers] = {}
_sets_lock = threading.Lock()


def launchers(python: str, roots: CgroupRoots, limits: Limits, *, size: int) -> Launchers:
    """This process's launchers for jobs of ``python``'s worker with ``limits`` by
    default, made (empty: ``take`` fills them) on first use."""
    key = (python, roots, _group_limits(limits), size)
    with _sets_lock:
        found = _sets.get(key)
        if found is None:
            if not _sets:
                atexit.register(close_all)
            found = _sets[key] = Launchers(python, roots, limits, size=size)
        return found


def close_all() -> None:
    """End every waiting launcher of this process, their groups removed."""
    with _sets_lock:
        sets = list(_sets.values())
    for one in sets:
        one.close()
