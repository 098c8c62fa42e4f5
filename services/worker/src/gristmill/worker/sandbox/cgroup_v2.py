"""Job groups in cgroup v2 (the unified hierarchy): one group per job, for every
controller v2 holds.

The hierarchy is mounted at ``/sys/fs/cgroup`` on a pure v2 host and at
``/sys/fs/cgroup/unified`` on a hybrid one (where each controller is bound either to
its v1 hierarchy or to v2, never to both); this process's group is the ``0::`` line
of ``/proc/self/cgroup``.

**Delegation.** A job group gets a controller only when every group above it enables
that controller for its children (``+pids`` in ``cgroup.subtree_control``), and v2
lets a group do that only while it holds no process itself (the "no internal
processes" rule; the root group is exempt). So ``job_parent``:

1. enables the controllers in the groups above this process's own one, from the
   nearest that has them, where they are not enabled yet;
2. enables them in its own group; when refused because the group holds processes and
   the only one is this process, it moves itself into a leaf beside its jobs' groups,
   ``<own group>/gristmill-worker.<pid>``, and tries again (a group also holding
   other processes is not taken over: the worker needs a group of its own there);
3. makes ``<own group>/gristmill.<pid>`` and enables them in it; each job's group is
   made under it.

What was enabled stays enabled (other groups may rely on it). The parent is removed
at exit; the worker's leaf, by the next worker once this process is gone.

**Per job** (``Group``): ``memory.max``, ``memory.swap.max = 0`` (when the kernel
accounts swap), ``pids.max``; the peak from ``memory.peak`` (kernel 5.19+), else
the highest ``memory.current`` sampled every 50 ms (a lower bound); OOM kills from
``memory.events``; failed forks from ``pids.events``; everything killed at once by
``cgroup.kill`` (kernel 5.14+), else process by process; removed once
``cgroup.events`` says it is no longer populated.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Sequence

import structlog

from gristmill.worker.sandbox import cgroupfs

__all__ = ["WORKER_LEAF_PREFIX", "Group", "held", "hierarchy", "job_parent"]

_log = structlog.get_logger(__name__)

#: The leaf this process moves into when its own group must delegate controllers.
WORKER_LEAF_PREFIX = "gristmill-worker."
_SAMPLE_INTERVAL_S = 0.05
_EMPTY_WAIT_S = 2.0


def hierarchy() -> cgroupfs.Mount | None:
    """The cgroup2 mount that shows this process's group, if any."""
    own = cgroupfs.own_groups()[1]
    for mount in cgroupfs.mounts():
        if mount.fstype == "cgroup2" and (own is None or mount.directory(own) is not None):
            return mount
    return None


def held(mount: cgroupfs.Mount) -> list[str]:
    """The controllers the v2 hierarchy holds, as far as this mount shows it."""
    return cgroupfs.read_words(mount.point, "cgroup.controllers")


class _Refused(Exception):
    """Delegation is not possible; the message says where and why."""


def job_parent(controllers: Sequence[str]) -> tuple[str | None, str]:
    """This process's parent of v2 job groups, with ``controllers`` enabled for them
    (see the module docstring), or why there is none."""
    mount = hierarchy()
    if mount is None:
        return None, "no cgroup v2 hierarchy mounted"
    own = cgroupfs.own_groups()[1]
    base = None if own is None else mount.directory(own)
    if base is None or not os.path.isdir(base):
        return None, f"this process's v2 group ({own}) is not under {mount.point}"
    if os.path.basename(base) == f"{WORKER_LEAF_PREFIX}{os.getpid()}":
        base = os.path.dirname(base)  # moved there by an earlier call: delegate from above
    cgroupfs.sweep_dead_workers(base, _empty)
    _sweep_worker_leaves(base)
    try:
        _enable_above(mount.point, base, controllers)
        _enable_in_own_group(base, controllers)
    except _Refused as exc:
        return None, str(exc)
    try:
        parent = cgroupfs.own_parent(base)
    except OSError as exc:
        return None, f"cannot create groups under {base} ({exc.strerror})"
    try:
        _enable(parent, controllers)
    except OSError as exc:
        cgroupfs.remove_tree(parent)
        return None, f"cannot enable {_plus(controllers)} in {parent} ({exc.strerror})"
    return parent, ""


def _enable_above(top: str, base: str, controllers: Sequence[str]) -> None:
    """Enable ``controllers`` in the groups from the mount's root down to ``base``'s
    parent, where ``base`` does not get them yet."""
    top, base = os.path.normpath(top), os.path.normpath(base)
    missing = [c for c in controllers if c not in cgroupfs.read_words(base, "cgroup.controllers")]
    if not missing:
        return
    if base == top:
        raise _Refused(f"the v2 hierarchy at {top} does not hold {', '.join(missing)}")
    chain = []
    group = os.path.dirname(base)
    while len(group) >= len(top):
        chain.append(group)
        if group == top:
            break
        group = os.path.dirname(group)
    for group in reversed(chain):
        try:
            _enable(group, missing)
        except OSError as exc:
            raise _Refused(
                f"cannot enable {_plus(missing)} in {group}/cgroup.subtree_control "
                f"({exc.strerror}), which {base} needs"
            ) from exc


def _enable_in_own_group(base: str, controllers: Sequence[str]) -> None:
    try:
        _enable(base, controllers)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise _Refused(
                f"cannot enable {_plus(controllers)} in {base}/cgroup.subtree_control "
                f"({exc.strerror})"
            ) from exc
    # EBUSY: the group holds processes, so it may not hand controllers down.
    me = os.getpid()
    others = [pid for pid in cgroupfs.read_pids(base) if pid != me]
    if others:
        shown = ", ".join(map(str, others[:5])) + (", ..." if len(others) > 5 else "")
        raise _Refused(
            f"{base} also holds other processes ({shown}): cgroup v2 lets a group enable "
            "controllers for its subgroups only when it holds no process itself; start "
            "the worker in a cgroup of its own (e.g. systemd Delegate=yes)"
        )
    leaf = os.path.join(base, f"{WORKER_LEAF_PREFIX}{me}")
    try:
        os.makedirs(leaf, exist_ok=True)
        cgroupfs.write(leaf, "cgroup.procs", str(me))
    except OSError as exc:
        cgroupfs.remove_tree(leaf)
        raise _Refused(f"cannot move this worker into {leaf} ({exc.strerror})") from exc
    try:
        _enable(base, controllers)
    except OSError as exc:
        try:  # back where it was: the leaf served nothing
            cgroupfs.write(base, "cgroup.procs", str(me))
            os.rmdir(leaf)
        except OSError:
            pass
        raise _Refused(
            f"cannot enable {_plus(controllers)} in {base}/cgroup.subtree_control even "
            f"with this worker moved out of it ({exc.strerror})"
        ) from exc
    _log.info(
        "cgroup v2: worker moved into a leaf group so that its own group can delegate",
        leaf=leaf,
        controllers=list(controllers),
    )


def _enable(group: str, controllers: Sequence[str]) -> None:
    """Enable ``controllers`` for ``group``'s subgroups. Raises ``OSError``."""
    enabled = cgroupfs.read_words(group, "cgroup.subtree_control")
    wanted = [c for c in controllers if c not in enabled]
    if wanted:
        cgroupfs.write(group, "cgroup.subtree_control", _plus(wanted))
        _log.info("cgroup v2: controllers enabled for subgroups", group=group, controllers=wanted)


def _plus(controllers: Sequence[str]) -> str:
    return " ".join(f"+{c}" for c in controllers)


def _sweep_worker_leaves(base: str) -> None:
    """rmdir the empty leaves of worker processes that are gone."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid = name[len(WORKER_LEAF_PREFIX) :]
        if name.startswith(WORKER_LEAF_PREFIX) and pid.isdigit() and not _alive(pid):
            cgroupfs.remove_tree(os.path.join(base, name))


def _alive(pid: str) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _empty(path: str) -> None:
    Group(path).kill_all()
    deadline = time.monotonic() + _EMPTY_WAIT_S
    while Group(path).populated and time.monotonic() < deadline:
        time.sleep(0.01)


class Group:
    """One job's v2 group."""

    def __init__(self, path: str, controllers: Sequence[str] = ()) -> None:
        self.path = path
        #: The controllers v2 holds for this job (limits are set for these only).
        self.controllers = tuple(controllers)

    @classmethod
    def create(
        cls,
        parent: str,
        name: str,
        controllers: Sequence[str],
        *,
        memory_bytes: int | None = None,
        processes: int | None = None,
    ) -> Group:
        """Make the group with its limits. Raises ``OSError`` (nothing left behind)."""
        path = os.path.join(parent, name)
        os.mkdir(path)
        group = cls(path, controllers)
        try:
            if "memory" in group.controllers:
                if memory_bytes is not None:
                    cgroupfs.write(path, "memory.max", str(memory_bytes))
                    if os.path.exists(os.path.join(path, "memory.swap.max")):
                        cgroupfs.write(path, "memory.swap.max", "0")
                if not os.path.exists(os.path.join(path, "memory.peak")):
                    _sampler.watch(path)
            if "pids" in group.controllers and processes is not None:
                cgroupfs.write(path, "pids.max", str(processes))
        except BaseException:
            group.remove()
            raise
        return group

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    @property
    def populated(self) -> bool:
        return cgroupfs.read_key(self.path, "cgroup.events", "populated") != 0

    def memory_peak(self) -> int | None:
        if "memory" not in self.controllers:
            return None
        peak = cgroupfs.read_int(self.path, "memory.peak")
        return peak if peak is not None else _sampler.highest(self.path)

    def oom_kills(self) -> int:
        return cgroupfs.read_key(self.path, "memory.events", "oom_kill")

    def fork_failures(self) -> int:
        return cgroupfs.read_key(self.path, "pids.events", "max")

    def kill_all(self) -> None:
        """SIGKILL everything in the group at once (``cgroup.kill``), else one by one."""
        try:
            cgroupfs.write(self.path, "cgroup.kill", "1")
        except OSError:  # no cgroup.kill before kernel 5.14 (or the group is gone)
            cgroupfs.kill_members(self.path)

    def remove(self) -> bool:
        """rmdir the group once no longer populated; False while it is."""
        if self.populated:
            return False
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        _sampler.forget(self.path)
        return True


class _PeakSampler:
    """The highest ``memory.current`` seen of each group watched, sampled by a thread
    that runs while any is watched (for kernels without ``memory.peak``)."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._highest: dict[str, int] = {}
        self._running = False

    def watch(self, path: str) -> None:
        with self._lock:
            self._highest[path] = 0
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="gristmill-memory-peak", daemon=True).start()

    def highest(self, path: str) -> int | None:
        """The highest sample so far (one more taken now); ``None`` if not watched."""
        self._sample(path)
        with self._lock:
            return self._highest.get(path)

    def forget(self, path: str) -> None:
        with self._lock:
            self._highest.pop(path, None)

    def _sample(self, path: str) -> None:
        value = cgroupfs.read_int(path, "memory.current")
        with self._lock:
            if value is None and not os.path.isdir(path):
                self._highest.pop(path, None)  # removed without being forgotten
            elif value is not None and value > self._highest.get(path, value):
                self._highest[path] = value

    def _run(self) -> None:
        while True:
            with self._lock:
                paths = list(self._highest)
                if not paths:
                    self._running = False
                    return
            for path in paths:
                self._sample(path)
            time.sleep(self._interval_s)


_sampler = _PeakSampler(_SAMPLE_INTERVAL_S)
