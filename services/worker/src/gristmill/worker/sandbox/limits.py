"""What a job may use, and how it is held to it: rlimits and cgroups (v1 or v2).

* **rlimits** are set by ``prlimit`` (util-linux) *inside* the job's user namespace,
  right before the job's program starts: address space, CPU seconds, open files,
  file size, processes and core dumps (always 0). Inside the namespace matters for
  ``RLIMIT_NPROC``: the kernel counts processes per user *per user namespace*, so the
  count is the job's own processes, whatever uid the job has on the host. (Set before
  the namespace exists, it would count every process of that host uid, the worker's
  included.) A job cannot raise a hard limit again: that needs ``CAP_SYS_RESOURCE``
  in the initial user namespace.
* **cgroups**, per controller (``memory`` and, if asked, ``pids``): each is limited
  through the hierarchy that holds it on this host, its cgroup v1 hierarchy
  (``cgroup_v1.py``) or the v2 unified one (``cgroup_v2.py``): a hybrid host may
  have one in each. Where this process may create groups under its own, each job gets
  one group per v1 controller and one v2 group for all the v2 ones, entered by the
  job's first process (a shell that then becomes bubblewrap) writing ``0`` to their
  ``cgroup.procs`` before anything of the job runs, so everything the job runs is
  inside. The memory group caps resident memory, page cache and ``/tmp`` (tmpfs pages
  are charged to it) and tells afterwards the peak and whether the kernel's OOM
  killer fired; the pids group caps processes and threads together. The groups are
  removed once the job is reaped. Entering a group waits for an RCU grace period
  when it is not done often (~9 ms per group on a 2-core VM): the main cost of the
  sandbox, paid by the job's start.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence

import msgspec

from gristmill.worker.sandbox import cgroup_v1, cgroup_v2

__all__ = [
    "CgroupRoots",
    "JobCgroup",
    "Limits",
    "ResourceUsage",
    "find_cgroup_roots",
    "prlimit_args",
]

_MIB = 1024 * 1024


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


# -- cgroups --------------------------------------------------------------------------


class CgroupRoots(msgspec.Struct, frozen=True, kw_only=True):
    """Where this worker process creates its jobs' groups."""

    #: The parent of the jobs' groups for each controller: a directory of the
    #: controller's v1 hierarchy, or ``unified`` when cgroup v2 holds the controller.
    memory: str | None = None
    pids: str | None = None
    #: The parent of the jobs' v2 groups (one per job, for all the controllers v2
    #: holds); set when v2 holds one of those asked for.
    unified: str | None = None

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(name for name in ("memory", "pids") if getattr(self, name) is not None)

    def version(self, controller: str) -> int | None:
        """The cgroup version limiting ``controller`` (1 or 2); ``None``: neither."""
        parent = getattr(self, controller, None)
        if parent is None:
            return None
        return 2 if parent == self.unified else 1


def find_cgroup_roots(
    controllers: Sequence[str] = ("memory", "pids"),
) -> tuple[CgroupRoots | None, str]:
    """This process's job-group parents for ``controllers``, and why one is missing.

    A controller is limited through cgroup v1 where a v1 hierarchy of it is mounted,
    else through v2 where the unified hierarchy holds it, when this process may create
    groups under its own there (``gristmill.<pid>``, removed at exit; groups left by
    dead workers are swept first; for v2 see ``cgroup_v2.job_parent``).
    """
    v1 = cgroup_v1.hierarchies()
    unified = cgroup_v2.hierarchy()
    in_v2 = cgroup_v2.held(unified) if unified is not None else []
    found: dict[str, str] = {}
    missing: list[str] = []
    through_v2: list[str] = []
    for controller in controllers:
        if controller in v1:
            parent, why = cgroup_v1.job_parent(controller, v1[controller])
            if parent is None:
                missing.append(f"{controller}: {why}")
            else:
                found[controller] = parent
        elif controller in in_v2:
            through_v2.append(controller)
        elif unified is None:
            missing.append(f"{controller}: no cgroup v1 hierarchy of it, no cgroup v2 mounted")
        else:
            missing.append(
                f"{controller}: no cgroup v1 hierarchy of it mounted, and the cgroup v2 one "
                f"at {unified.point} does not hold it"
            )
    parent = None
    if through_v2:
        parent, why = cgroup_v2.job_parent(through_v2)
        if parent is None:
            missing.append(f"{'+'.join(through_v2)} (cgroup v2): {why}")
        else:
            found.update(dict.fromkeys(through_v2, parent))
    roots = CgroupRoots(**found, unified=parent) if found else None
    return roots, "; ".join(missing)


class JobCgroup:
    """One job's groups: created with its limits, entered by its first process."""

    def __init__(self, roots: CgroupRoots, name: str, limits: Limits) -> None:
        self._groups: list[cgroup_v1.Group | cgroup_v2.Group] = []
        memory_bytes = _bytes(limits.memory_mb)
        try:
            if roots.unified is not None:
                in_v2 = [c for c in roots.controllers if roots.version(c) == 2]
                self._groups.append(
                    cgroup_v2.Group.create(
                        roots.unified,
                        name,
                        in_v2,
                        memory_bytes=memory_bytes,
                        processes=limits.processes,
                    )
                )
            if roots.version("memory") == 1 and memory_bytes is not None:
                assert roots.memory is not None
                self._groups.append(
                    cgroup_v1.Group.create("memory", roots.memory, name, memory_bytes=memory_bytes)
                )
            if roots.version("pids") == 1 and limits.processes is not None:
                assert roots.pids is not None
                self._groups.append(
                    cgroup_v1.Group.create("pids", roots.pids, name, processes=limits.processes)
                )
        except BaseException:
            self.remove()
            raise

    @property
    def paths(self) -> dict[str, str]:
        """The groups not removed yet: v1 ones by controller, the v2 one as ``unified``."""
        return {
            group.controller if isinstance(group, cgroup_v1.Group) else "unified": group.path
            for group in self._groups
        }

    @property
    def procs_files(self) -> list[str]:
        """The files the job's first process writes ``0`` to, to enter its groups."""
        return [group.procs_file for group in self._groups]

    def usage(self) -> tuple[int | None, int, int]:
        """(peak memory bytes, OOM kills, failed forks); read before ``remove``."""
        memory = self._holding("memory")
        pids = self._holding("pids")
        return (
            None if memory is None else memory.memory_peak(),
            0 if memory is None else memory.oom_kills(),
            0 if pids is None else pids.fork_failures(),
        )

    def _holding(self, controller: str) -> cgroup_v1.Group | cgroup_v2.Group | None:
        return next((group for group in self._groups if controller in group.controllers), None)

    def kill_all(self) -> None:
        """SIGKILL whatever is still in the groups (the job's leftovers, if any)."""
        for group in self._groups:
            group.kill_all()

    def remove(self) -> bool:
        """Remove the groups; False while some still hold processes."""
        self._groups = [group for group in self._groups if not group.remove()]
        return not self._groups
