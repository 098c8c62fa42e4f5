"""Job groups in cgroup v1: one hierarchy per controller, one group per job in each.

A job's ``memory`` group caps resident memory, page cache and ``/tmp`` (tmpfs pages
are charged to it) and tells afterwards the peak and whether the kernel's OOM killer
fired; its ``pids`` group caps processes and threads together. Entering a v1 group
waits for an RCU grace period when it is not done often (~9 ms per group on a 2-core
VM).
"""

from __future__ import annotations

import contextlib
import os

from gristmill.worker.sandbox import cgroupfs

__all__ = ["CONTROLLERS", "Group", "hierarchies", "job_parent"]

#: The controllers job groups are made for.
CONTROLLERS = ("memory", "pids")


def hierarchies() -> dict[str, cgroupfs.Mount]:
    """controller -> the mount of its v1 hierarchy, for the ``CONTROLLERS`` mounted here."""
    found: dict[str, cgroupfs.Mount] = {}
    for mount in cgroupfs.mounts():
        if mount.fstype == "cgroup":
            for option in mount.options:
                if option in CONTROLLERS:
                    found.setdefault(option, mount)
    return found


def job_parent(controller: str, mount: cgroupfs.Mount) -> tuple[str | None, str]:
    """This process's parent of job groups in ``controller``'s hierarchy, or why none.

    Made under this process's own group (groups left by dead workers are swept first).
    """
    group = cgroupfs.own_groups()[0].get(controller)
    base = None if group is None else mount.directory(group)
    if base is None:
        return None, f"this process's group is not under the v1 mount {mount.point}"
    cgroupfs.sweep_dead_workers(base, _empty)
    try:
        return cgroupfs.own_parent(base), ""
    except OSError as exc:
        return None, f"cannot create groups under {base} ({exc.strerror})"


def _empty(group: str) -> None:
    cgroupfs.kill_members(group, wait_s=2.0)


class Group:
    """One job's group in one v1 hierarchy."""

    def __init__(self, controller: str, path: str) -> None:
        self.controller = controller
        self.path = path

    @classmethod
    def create(
        cls,
        controller: str,
        parent: str,
        name: str,
        *,
        memory_bytes: int | None = None,
        processes: int | None = None,
    ) -> Group:
        """Make the group with its limit. Raises ``OSError`` (nothing left behind)."""
        path = os.path.join(parent, name)
        os.mkdir(path)
        group = cls(controller, path)
        try:
            if controller == "memory" and memory_bytes is not None:
                cgroupfs.write(path, "memory.limit_in_bytes", str(memory_bytes))
                with contextlib.suppress(OSError):  # swap accounting is optional
                    cgroupfs.write(path, "memory.memsw.limit_in_bytes", str(memory_bytes))
            if controller == "pids" and processes is not None:
                cgroupfs.write(path, "pids.max", str(processes))
        except BaseException:
            group.remove()
            raise
        return group

    @property
    def controllers(self) -> tuple[str, ...]:
        return (self.controller,)

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def memory_peak(self) -> int | None:
        return cgroupfs.read_int(self.path, "memory.max_usage_in_bytes")

    def oom_kills(self) -> int:
        return cgroupfs.read_key(self.path, "memory.oom_control", "oom_kill")

    def fork_failures(self) -> int:
        return cgroupfs.read_key(self.path, "pids.events", "max")

    def kill_all(self) -> None:
        """SIGKILL each member (v1 has no way to kill a whole group at once)."""
        cgroupfs.kill_members(self.path)

    def remove(self) -> bool:
        """rmdir the group; False while it still holds processes."""
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return True
