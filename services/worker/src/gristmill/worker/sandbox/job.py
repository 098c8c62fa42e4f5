"""One job's sandbox, from the moment its command is built until it is reaped.

``JobSandbox`` holds what the job's process needs handed over at start (file
descriptors of the paths it sees, the files written for it, the seccomp program),
its host uid when jobs get their own, and its cgroups. ``wrap`` turns the runner's
argv into the sandboxed one::

    sh -c '<enter the job's cgroups>' ... --      (with cgroups)
      setpriv --reuid U --regid U ... --          (with a per-job uid U)
        bwrap <options> --
          prlimit <rlimits> --                    (inside: see limits.py)
            <the runner's argv>

The shell moves itself (so everything it becomes and starts) into the job's cgroups.
In cgroup v1 a move waits for an RCU grace period when moves are rare (milliseconds):
the job's own first process waits, never the worker's event loop. A pre-started
launcher (``launcher.py``) did that move ahead of time and takes the job's uid
itself: the job's argv is then bubblewrap's alone.

With a per-job uid, bubblewrap runs as that uid and waits, once it has created the
job's user namespace, for ``handshake_step`` to write the namespace's uid and gid
maps (``--userns-block-fd``). Uid 0 inside is host root, so that bubblewrap, which
has every capability in the new namespace while it sets it up, can reach the paths
it binds even below directories only root may enter; the job's uid maps to its own
host uid. bubblewrap drops all capabilities before the job starts.

``finish`` (after the job's first process was reaped) reads what the job used,
kills anything of it still running, removes its cgroups and frees its uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
import structlog

from gristmill.worker.sandbox import seccomp
from gristmill.worker.sandbox.bwrap import bwrap_options, readonly_mounts
from gristmill.worker.sandbox.etc import synthesized
from gristmill.worker.sandbox.launcher import Launcher
from gristmill.worker.sandbox.limits import JobCgroup, Limits, ResourceUsage, prlimit_args
from gristmill.worker.sandbox.policy import Sandbox

__all__ = ["SHARED_NAME", "JobSandbox", "chown_tree", "signal_from_status"]

_log = structlog.get_logger(__name__)

#: Enters each cgroup.procs file given before ``--`` (writing 0 moves the writer),
#: then becomes the rest of the command line.
_ENTER_CGROUPS = (
    'while [ "$1" != -- ]; do '
    'echo 0 >"$1" || { echo "gristmill: cannot enter the job\'s cgroup ($1)" >&2; exit 125; }; '
    'shift; done; shift; exec "$@"'
)
#: How long bubblewrap may take to create the job's namespaces (blocking callers).
_HANDSHAKE_TIMEOUT_S = 10.0
_REMOVE_DELAYS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_SIGNAL_STATUS = range(129, 129 + signal.SIGRTMAX)
#: Where a same_worker flow's folder appears in the job's directory.
SHARED_NAME = "shared"


def signal_from_status(returncode: int) -> int:
    """``-N`` for bubblewrap's ``128 + N`` (its job died of signal N), else as is.

    bubblewrap cannot report a death by signal otherwise (it follows the shell's
    convention), so a job that itself exits with 129 to 192 is read as killed.
    """
    if returncode in _SIGNAL_STATUS:
        return -(returncode - 128)
    return returncode


#: Host uids of one worker process's jobs: ``job_uid_base + 100 * (pid % 10000) + n``,
#: so that jobs of different worker processes on one host rarely share a uid (they
#: could do no harm to each other if they did: nothing of one is visible to another).
_UIDS_PER_PROCESS = 100
_PROCESS_SLOTS = 10_000


class _UidSlots:
    """Offsets from ``job_uid_base`` in use by this process's running jobs.

    Jobs that share a folder (steps of one same_worker flow) running at the same time
    share one slot (``key``): each can then read and write what the others made.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: set[int] = set()
        #: key -> (slot, jobs holding it), and back.
        self._shared: dict[str, tuple[int, int]] = {}
        self._keys: dict[int, str] = {}

    def acquire(self, key: str | None = None) -> int:
        with self._lock:
            if key is not None and key in self._shared:
                slot, holders = self._shared[key]
                self._shared[key] = (slot, holders + 1)
                return slot
            first = (os.getpid() % _PROCESS_SLOTS) * _UIDS_PER_PROCESS
            slot = next(
                first + n for n in range(len(self._used) + 1) if first + n not in self._used
            )
            self._used.add(slot)
            if key is not None:
                self._shared[key] = (slot, 1)
                self._keys[slot] = key
            return slot

    def release(self, slot: int) -> None:
        with self._lock:
            key = self._keys.get(slot)
            if key is not None:
                _, holders = self._shared[key]
                if holders > 1:
                    self._shared[key] = (slot, holders - 1)
                    return
                del self._shared[key], self._keys[slot]
            self._used.discard(slot)


_slots = _UidSlots()


class _Info(msgspec.Struct):
    child_pid: int = msgspec.field(name="child-pid")


_info = msgspec.json.Decoder(_Info)


class JobSandbox:
    """The sandbox of one job process (see the module docstring)."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        job_id: uuid.UUID,
        workdir: Path,
        readonly_paths: Sequence[str],
        limits: Limits,
        writable_paths: Sequence[str] = (),
        user: int | None = None,
        shared_dir: Path | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        """Prepare everything the job's process will be handed.

        ``writable_paths``: host directories shown read-write at their own paths
        besides ``workdir``; ``user``: a fixed host uid to run as instead of one of
        the per-job uids (where jobs get their own), which ``workdir`` is given to;
        ``shared_dir``: a same_worker flow's folder, read-write at ``./shared`` (an
        empty directory ``SHARED_NAME`` in ``workdir``), given to the job's uid too;
        ``launcher``: a pre-started process, already in groups made for ``limits``,
        to become the job's first process (ended by ``finish`` if it never does).

        Raises ``OSError`` (nothing is left behind then, the launcher included).
        """
        self.sandbox = sandbox
        self.limits = limits
        #: The job's host uid (and gid); ``None``: the worker's.
        self.user: int | None = None
        self._child_fds: list[int] = []  # handed to the process, closed here once started
        self._handshake: tuple[int, int] | None = None  # our ends: (info, userns block)
        self._info = b""
        self._slot: int | None = None
        #: The pre-started process that becomes the job's first one, if any.
        self.launcher = launcher
        self._cgroup: JobCgroup | None = None if launcher is None else launcher.cgroup
        self._finished = False
        policy = sandbox.policy
        handshake: list[str] = []
        try:
            if sandbox.job_uids and policy.job_uid_base is not None:
                if user is None:
                    key = None if shared_dir is None else str(shared_dir)
                    self._slot = _slots.acquire(key)
                    self.user = policy.job_uid_base + self._slot
                else:
                    self.user = user
                chown_tree(workdir, self.user)
                if shared_dir is not None:
                    chown_tree(shared_dir, self.user)
                info_r, info_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                os.set_blocking(info_w, True)
                self._handshake = (info_r, -1)  # so that finish() closes it if what follows fails
                self._keep(info_w)
                block_r, block_w = os.pipe2(os.O_CLOEXEC)
                self._handshake = (info_r, block_w)
                self._keep(block_r)
                handshake = ["--info-fd", str(info_w), "--userns-block-fd", str(block_r)]
            if sandbox.cgroups is not None and self._cgroup is None:
                self._cgroup = JobCgroup(sandbox.cgroups, f"job-{job_id}", limits)
            workdir_fd = self._keep(os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            readonly = [
                (self._keep(os.open(path, os.O_PATH | os.O_CLOEXEC)), path)
                for path in readonly_mounts(sandbox, readonly_paths)
            ]
            writable = [
                (self._keep(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)), path)
                for path in writable_paths
            ]
            shared = None
            if shared_dir is not None:
                flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
                shared = (self._keep(os.open(shared_dir, flags)), SHARED_NAME)
            written = synthesized(
                uid=policy.uid,
                gid=policy.gid,
                home=policy.workdir,
                hostname=policy.hostname,
                host=sandbox.host_etc,
            )
            files = [(self._memfd(path, content), path) for path, content in written.items()]
            filter_fd = self._memfd("seccomp", seccomp.program()) if sandbox.seccomp else None
            self._options = handshake + bwrap_options(
                sandbox,
                workdir_fd=workdir_fd,
                readonly=readonly,
                files=files,
                seccomp_fd=filter_fd,
                tmp_mb=limits.tmp_mb,
                writable=writable,
                shared=shared,
            )
        except BaseException:
            self.finish()
            raise

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """Descriptors the job's first process must inherit."""
        return tuple(self._child_fds)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The sandboxed command line that runs ``argv``."""
        sandbox = self.sandbox
        command = [sandbox.bwrap, *self._options, "--"]
        rlimits = prlimit_args(self.limits)
        if rlimits:
            command += [sandbox.prlimit, *rlimits, "--"]
        command += argv
        if self.launcher is not None:
            return command  # in the job's cgroups already; it takes the job's uid itself
        if self.user is not None:
            # Here rather than by the worker's fork: the fork stays a cheap vfork.
            user = str(self.user)
            switch = ["--reuid", user, "--regid", user, "--clear-groups", "--pdeathsig", "KILL"]
            command = [sandbox.setpriv, *switch, "--", *command]
        if self._cgroup is not None and self._cgroup.procs_files:
            enter = [sandbox.sh, "-c", _ENTER_CGROUPS, "gristmill-cgroup"]
            command = [*enter, *self._cgroup.procs_files, "--", *command]
        return command

    def started(self) -> None:
        """The process was started with ``pass_fds``: close our copies."""
        self._close_child_fds()

    @property
    def handshake_fd(self) -> int | None:
        """Readable when ``handshake_step`` has something to do; ``None`` once done
        (or without a per-job uid, where there is no handshake)."""
        return None if self._handshake is None else self._handshake[0]

    def handshake_step(self) -> bool:
        """Read what bubblewrap reported; once its user namespace exists, map it and
        let it go on. True when done (never blocks).

        Raises ``OSError`` when bubblewrap failed first, or the mapping failed (its
        child is killed then: not yet tied to its parent's life, it would wait forever).
        """
        if self._handshake is None:
            return True
        info_r, block_w = self._handshake
        try:
            chunk = os.read(info_r, 4096)
        except BlockingIOError:
            return False
        except OSError:
            self._close_handshake()
            raise
        if not chunk:
            self._close_handshake()
            raise OSError("bubblewrap exited before creating the job's namespaces")
        self._info += chunk
        if b"}" not in self._info:
            return False
        self._close_handshake_read()
        try:
            pid = _info.decode(self._info).child_pid
        except msgspec.DecodeError as exc:
            self._close_handshake()
            raise OSError(f"unexpected bubblewrap info {self._info!r}") from exc
        try:
            _write_id_maps(pid, self.sandbox.policy.uid, self.sandbox.policy.gid, self.user)
            os.write(block_w, b"1")
        except BaseException:
            _kill(pid)
            raise
        finally:
            self._close_handshake()
        return True

    def complete_handshake(self, timeout_s: float = _HANDSHAKE_TIMEOUT_S) -> None:
        """``handshake_step`` until done, blocking (for callers without an event loop).

        Raises ``OSError`` as ``handshake_step`` does, or ``TimeoutError``.
        """
        deadline = time.monotonic() + timeout_s
        while (fd := self.handshake_fd) is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError(f"bubblewrap did not start within {timeout_s:g} s")
            self.handshake_step()

    def oom_kills(self) -> int:
        """OOM kills in the job's memory cgroup so far (0 without one): for a process
        that outlives its jobs (a dedicated interpreter), read while it runs."""
        if self._cgroup is None or self._finished:
            return 0
        return self._cgroup.usage()[1]

    def finish(self) -> ResourceUsage:
        """What the job used; its leftovers killed, its cgroups and uid released.

        Call once the job's first process was reaped (or was never started). Later
        calls return an empty report.
        """
        if self._finished:
            return ResourceUsage(limits=self.limits)
        self._finished = True
        if self.launcher is not None:
            self.launcher.done()  # ended if it never became the job's
        self._close_child_fds()
        self._close_handshake()
        usage = ResourceUsage(limits=self.limits)
        cgroup = self._cgroup
        if cgroup is not None:
            peak, oom_kills, fork_failures = cgroup.usage()
            usage = ResourceUsage(
                limits=self.limits,
                memory_peak_bytes=peak,
                oom_kills=oom_kills,
                process_limit_hits=fork_failures,
            )
            cgroup.kill_all()
        _release(cgroup, self._slot)
        return usage

    def _keep(self, fd: int) -> int:
        self._child_fds.append(fd)
        return fd

    def _memfd(self, name: str, content: bytes) -> int:
        fd = self._keep(os.memfd_create(f"gristmill{name.replace('/', '-')}", os.MFD_CLOEXEC))
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def _close_child_fds(self) -> None:
        for fd in self._child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child_fds.clear()

    def _close_handshake_read(self) -> None:
        if self._handshake is not None and self._handshake[0] >= 0:
            with contextlib.suppress(OSError):
                os.close(self._handshake[0])
            self._handshake = (-1, self._handshake[1])

    def _close_handshake(self) -> None:
        if self._handshake is not None:
            for fd in self._handshake:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._handshake = None


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        pidfd = os.pidfd_open(pid)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)


def _write_id_maps(pid: int, uid: int, gid: int, host_id: int | None) -> None:
    """Map ``uid``/``gid`` inside to ``host_id`` and 0 to host root (see module doc)."""
    assert host_id is not None
    with open(f"/proc/{pid}/uid_map", "w", encoding="ascii") as f:
        f.write(f"0 0 1\n{uid} {host_id} 1\n")
    with open(f"/proc/{pid}/setgroups", "w", encoding="ascii") as f:
        f.write("deny")
    with open(f"/proc/{pid}/gid_map", "w", encoding="ascii") as f:
        f.write(f"0 0 1\n{gid} {host_id} 1\n")


def chown_tree(root: Path, uid: int) -> None:
    """Give ``root`` and everything in it to ``uid`` (never following links out of it)."""
    os.chown(root, uid, uid, follow_symlinks=False)
    for directory, subdirs, names in os.walk(root):
        for name in (*subdirs, *names):
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)


def _release(cgroup: JobCgroup | None, slot: int | None) -> None:
    """Remove the cgroups, then free the uid, once the job's processes are gone.

    The last ones may still be exiting (their pid namespace is torn down when the
    job's first process exits): retried on the running loop, else here, briefly.
    """
    if cgroup is None or cgroup.remove():
        if slot is not None:
            _slots.release(slot)
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        for delay in _REMOVE_DELAYS_S[:5]:
            time.sleep(delay)
            cgroup.kill_all()
            if cgroup.remove():
                break
        else:
            _log.warning("job cgroup still busy; left behind", paths=list(cgroup.paths.values()))
        if slot is not None:
            _slots.release(slot)
        return

    def retry(attempt: int) -> None:
        cgroup.kill_all()
        if cgroup.remove() or attempt + 1 >= len(_REMOVE_DELAYS_S):
            if cgroup.paths:
                _log.warning(
                    "job cgroup still busy; left behind", paths=list(cgroup.paths.values())
                )
            if slot is not None:
                _slots.release(slot)
            return
        loop.call_later(_REMOVE_DELAYS_S[attempt + 1], retry, attempt + 1)

    loop.call_later(_REMOVE_DELAYS_S[0], retry, 0)
