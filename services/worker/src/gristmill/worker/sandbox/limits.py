"""What a job may use, and how it is held to it: rlimits and cgroup v1 groups.

* **rlimits** are set by ``prlimit`` (util-linux) *inside* the job's user namespace,
  right before the job's program starts: address space, CPU seconds, open files,
  file size, processes and core dumps (always 0). Inside the namespace matters for
  ``RLIMIT_NPROC``: the kernel counts processes per user *per user namespace*, so the
  count is the job's own processes, whatever uid the job has on the host. (Set before
  the namespace exists, it would count every process of that host uid, the worker's
  included.) A job cannot raise a hard limit again: that needs ``CAP_SYS_RESOURCE``
  in the initial user namespace.
* **cgroups** (v1 ``memory`` and, if asked, ``pids`` hierarchies, when this process
  may create groups under its own): one group per job, entered by the job's first
  process (a shell that then becomes bubblewrap) before anything of the job runs, so
  everything the job runs is inside. The memory group caps resident memory, page
  cache and ``/tmp`` (tmpfs pages are charged to it), and tells afterwards the peak
  and whether the kernel's OOM killer fired; the pids group caps processes and
  threads together. The groups are removed once the job is reaped. Entering a v1
  group waits for an RCU grace period when it is not done often (~9 ms per group on
  a 2-core VM): the main cost of the sandbox, paid by the job's start.

cgroup v2 (the unified hierarchy) is not used yet: there, a delegated subtree and the
"no processes in inner groups" rule would have to be arranged first.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import signal
import time
from collections.abc import Sequence

import msgspec

__all__ = [
    "CgroupRoots",
    "JobCgroup",
    "Limits",
    "ResourceUsage",
    "find_cgroup_roots",
    "prlimit_args",
]

_MIB = 1024 * 1024
#: The per-process parent group: ``<own group>/gristmill.<pid>/<job>``.
_PARENT_PREFIX = "gristmill."
#: Parent groups this process made (removed at exit).
_made: set[str] = set()


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What one job may use. ``None`` leaves a resource unlimited."""

    #: Memory of the whole job (all processes, page cache, ``/tmp``): the cgroup limit.
    #: The kernel's OOM killer ends the job beyond it. Needs a writable memory cgroup.
    memory_mb: int | None = 1024
    #: Virtual address space per process (``RLIMIT_AS``): allocations beyond it fail
    #: (``MemoryError`` in Python). Generous on purpose: threads and some libraries
    #: reserve far more address space than they touch. The only memory bound on hosts
    #: without a writable memory cgroup.
    address_space_mb: int | None = 8192
    #: CPU seconds per process (``RLIMIT_CPU``): ``SIGXCPU`` at the limit, ``SIGKILL``
    #: one second later. The job's timeout bounds wall-clock time either way.
    cpu_s: int | None = None
    #: Processes and threads of the job (``RLIMIT_NPROC`` in its user namespace, and
    #: the pids cgroup when there is one): ``fork`` fails with ``EAGAIN`` beyond it.
    processes: int | None = 512
    #: Open file descriptors per process (``RLIMIT_NOFILE``).
    open_files: int | None = 4096
    #: Largest file a process may write (``RLIMIT_FSIZE``): ``EFBIG`` beyond it.
    file_size_mb: int | None = 1024
    #: Size of the job's private ``/tmp`` and of its ``/dev/shm`` (memory-backed).
    tmp_mb: int = 512

    def __post_init__(self) -> None:
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{field.name} must be positive (or None: unlimited)")


class ResourceUsage(msgspec.Struct, frozen=True, kw_only=True):
    """What a sandboxed job used and which of its limits it hit."""

    #: The limits it ran under; ``None`` when it did not run in a sandbox.
    limits: Limits | None = None
    #: Highest memory use of the job's cgroup (bytes); ``None`` without a memory cgroup.
    memory_peak_bytes: int | None = None
    #: Processes of the job the kernel's OOM killer ended.
    oom_kills: int = 0
    #: Times the job's ``fork``/``clone`` failed because of the pids cgroup limit.
    process_limit_hits: int = 0
    #: Why the sandbox could not be set up (the job was killed before it ran).
    sandbox_error: str | None = None


def prlimit_args(limits: Limits) -> list[str]:
    """``prlimit`` options setting soft and hard limits (never above the worker's own)."""
    wanted: list[tuple[str, int, int | None, int | None]] = [
        ("core", resource.RLIMIT_CORE, 0, 0),
        ("as", resource.RLIMIT_AS, *_same(_bytes(limits.address_space_mb))),
        ("cpu", resource.RLIMIT_CPU, *_cpu(limits.cpu_s)),
        ("nproc", resource.RLIMIT_NPROC, *_same(limits.processes)),
        ("nofile", resource.RLIMIT_NOFILE, *_same(limits.open_files)),
        ("fsize", resource.RLIMIT_FSIZE, *_same(_bytes(limits.file_size_mb))),
    ]
    args = []
    for name, which, soft, hard in wanted:
        if soft is None or hard is None:
            continue
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:  # an unprivileged job cannot raise it
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        args.append(f"--{name}={soft}:{hard}")
    return args


def _bytes(mb: int | None) -> int | None:
    return None if mb is None else mb * _MIB


def _same(value: int | None) -> tuple[int | None, int | None]:
    return value, value


def _cpu(seconds: int | None) -> tuple[int | None, int | None]:
    # Soft first (SIGXCPU, catchable, reported as the CPU limit), hard a second later.
    return (None, None) if seconds is None else (seconds, seconds + 1)


# -- cgroup v1 ------------------------------------------------------------------------


class CgroupRoots(msgspec.Struct, frozen=True, kw_only=True):
    """Where this worker process creates its jobs' groups (cgroup v1 directories)."""

    memory: str | None = None
    pids: str | None = None

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(name for name in ("memory", "pids") if getattr(self, name) is not None)


def find_cgroup_roots(
    controllers: Sequence[str] = ("memory", "pids"),
) -> tuple[CgroupRoots | None, str]:
    """This process's job-group parents for ``controllers``, and why one is missing.

    A controller is usable when its v1 hierarchy is mounted and this process may
    create a group under its own one (it makes ``gristmill.<pid>`` there, removed at
    exit; groups left by dead workers are swept first).
    """
    mounts = _v1_mounts()
    own = _own_groups()
    found: dict[str, str] = {}
    missing: list[str] = []
    for controller in controllers:
        mount = mounts.get(controller)
        if mount is None:
            missing.append(f"{controller}: no cgroup v1 hierarchy mounted")
            continue
        mount_root, mount_point = mount
        group = own.get(controller)
        if group is None or not (group + "/").startswith(mount_root.rstrip("/") + "/"):
            missing.append(f"{controller}: this process's group is not under the mount")
            continue
        base = os.path.join(mount_point, group[len(mount_root.rstrip("/")) :].lstrip("/"))
        _sweep_dead_workers(base)
        parent = os.path.join(base, f"{_PARENT_PREFIX}{os.getpid()}")
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            missing.append(f"{controller}: cannot create groups under {base} ({exc.strerror})")
            continue
        if parent not in _made:
            _made.add(parent)
            atexit.register(_remove_tree, parent)
        found[controller] = parent
    roots = CgroupRoots(**found) if found else None
    return roots, "; ".join(missing)


def _v1_mounts() -> dict[str, tuple[str, str]]:
    """controller -> (root inside the hierarchy, mount point), from mountinfo."""
    mounts: dict[str, tuple[str, str]] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return mounts
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, tail_fields = head.split(), tail.split()
        if len(fields) < 5 or len(tail_fields) < 3 or tail_fields[0] != "cgroup":
            continue
        for option in tail_fields[2].split(","):
            if option in ("memory", "pids"):
                mounts.setdefault(option, (_unescape(fields[3]), _unescape(fields[4])))
    return mounts


def _own_groups() -> dict[str, str]:
    groups: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return groups
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                groups[controller] = parts[2]
    return groups


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def _sweep_dead_workers(base: str) -> None:
    """Remove the groups of worker processes that are gone, killing what is left in
    them (a job whose worker died while bubblewrap was still setting it up)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            pid = name[len(_PARENT_PREFIX) :]
            if (
                name.startswith(_PARENT_PREFIX)
                and pid.isdigit()
                and not os.path.exists(f"/proc/{pid}")
            ):
                parent = os.path.join(base, name)
                with contextlib.suppress(OSError):
                    for entry in os.scandir(parent):
                        if entry.is_dir(follow_symlinks=False):
                            _empty(entry.path)
                _remove_tree(parent)


def _empty(group: str, *, wait_s: float = 2.0) -> None:
    """SIGKILL the members of ``group`` and wait (briefly) until they are gone."""
    deadline = time.monotonic() + wait_s
    while members := _read_pids(group):
        for member in members:
            _kill_if_member(member, group)
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _remove_tree(path: str) -> None:
    """rmdir ``path`` and the empty groups under it (best effort)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(entry.path)
    with contextlib.suppress(OSError):
        os.rmdir(path)


class JobCgroup:
    """One job's groups: created with its limits, entered by its first process."""

    def __init__(self, roots: CgroupRoots, name: str, limits: Limits) -> None:
        self.paths: dict[str, str] = {}
        try:
            if roots.memory is not None and limits.memory_mb is not None:
                path = self._create("memory", roots.memory, name)
                limit = str(limits.memory_mb * _MIB)
                _write(path, "memory.limit_in_bytes", limit)
                with contextlib.suppress(OSError):  # swap accounting is optional
                    _write(path, "memory.memsw.limit_in_bytes", limit)
            if roots.pids is not None and limits.processes is not None:
                path = self._create("pids", roots.pids, name)
                _write(path, "pids.max", str(limits.processes))
        except BaseException:
            self.remove()
            raise

    def _create(self, controller: str, parent: str, name: str) -> str:
        path = os.path.join(parent, name)
        os.mkdir(path)
        self.paths[controller] = path
        return path

    @property
    def procs_files(self) -> list[str]:
        """The files the job's first process writes ``0`` to, to enter its groups."""
        return [os.path.join(path, "cgroup.procs") for path in self.paths.values()]

    def usage(self) -> tuple[int | None, int, int]:
        """(peak memory bytes, OOM kills, failed forks); read before ``remove``."""
        peak: int | None = None
        oom_kills = fork_failures = 0
        memory = self.paths.get("memory")
        if memory is not None:
            peak = _read_int(memory, "memory.max_usage_in_bytes")
            oom_kills = _read_key(memory, "memory.oom_control", "oom_kill")
        pids = self.paths.get("pids")
        if pids is not None:
            fork_failures = _read_key(pids, "pids.events", "max")
        return peak, oom_kills, fork_failures

    def kill_all(self) -> None:
        """SIGKILL whatever is still in the groups (the job's leftovers, if any)."""
        for path in self.paths.values():
            for pid in _read_pids(path):
                _kill_if_member(pid, path)

    def remove(self) -> bool:
        """Remove the groups; False while some still hold processes."""
        for controller, path in list(self.paths.items()):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            del self.paths[controller]
        return not self.paths


def _write(path: str, name: str, value: str) -> None:
    with open(os.path.join(path, name), "w", encoding="ascii") as f:
        f.write(value)


def _read_int(path: str, name: str) -> int | None:
    try:
        with open(os.path.join(path, name), encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _read_key(path: str, name: str, key: str) -> int:
    try:
        with open(os.path.join(path, name), encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == key:
                    return int(parts[1])
    except (OSError, ValueError):
        pass
    return 0


def _read_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            return [int(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def _kill_if_member(pid: int, group: str) -> None:
    """SIGKILL ``pid`` through a pidfd, if the group still lists it once the pidfd is
    open (so a recycled pid outside the group is never signalled)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if pid in _read_pids(group):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)
