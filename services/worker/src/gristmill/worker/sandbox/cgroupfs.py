"""cgroup directories as both versions have them: the files read and written, where
this process's groups are, its per-process parent group, and the sweep of the parents
left by dead workers.

Every job group lives under ``<this process's group>/gristmill.<pid>/``, one such
parent per worker process and hierarchy, removed at exit (``own_parent``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import time
from collections.abc import Callable

import msgspec

__all__ = [
    "PARENT_PREFIX",
    "Mount",
    "kill_members",
    "mounts",
    "own_groups",
    "own_parent",
    "read_int",
    "read_key",
    "read_pids",
    "read_words",
    "remove_tree",
    "sweep_dead_workers",
    "write",
]

#: The per-process parent group: ``<own group>/gristmill.<pid>/<job>``.
PARENT_PREFIX = "gristmill."
#: Parent groups this process made (removed at exit).
_made: set[str] = set()


class Mount(msgspec.Struct, frozen=True):
    """A cgroup filesystem mounted here (from ``/proc/self/mountinfo``)."""

    #: The group of the hierarchy shown at ``point`` (``/`` unless a bind or namespace).
    root: str
    point: str
    #: ``cgroup`` (v1) or ``cgroup2``.
    fstype: str
    #: Superblock options: a v1 hierarchy's controllers are among them.
    options: tuple[str, ...]

    def directory(self, group: str) -> str | None:
        """Where ``group`` (a path in the hierarchy) is below ``point``; ``None`` when
        it is not under this mount's root."""
        root = self.root.rstrip("/")
        if not (group + "/").startswith(root + "/"):
            return None
        return os.path.join(self.point, group[len(root) :].lstrip("/"))


def mounts() -> list[Mount]:
    """The cgroup (v1) and cgroup2 mounts of this mount namespace, in mount order."""
    found: list[Mount] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, tail_fields = head.split(), tail.split()
        if len(fields) < 5 or len(tail_fields) < 3:
            continue
        if tail_fields[0] in ("cgroup", "cgroup2"):
            found.append(
                Mount(
                    root=_unescape(fields[3]),
                    point=_unescape(fields[4]),
                    fstype=tail_fields[0],
                    options=tuple(tail_fields[2].split(",")),
                )
            )
    return found


def own_groups() -> tuple[dict[str, str], str | None]:
    """This process's groups: per v1 controller, and in the v2 hierarchy (``0::``)."""
    v1: dict[str, str] = {}
    unified = None
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return v1, unified
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = parts[2]
        else:
            for controller in parts[1].split(","):
                v1[controller] = parts[2]
    return v1, unified


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def own_parent(base: str) -> str:
    """``<base>/gristmill.<pid>``, made if needed and removed at exit. Raises ``OSError``."""
    parent = os.path.join(base, f"{PARENT_PREFIX}{os.getpid()}")
    os.makedirs(parent, exist_ok=True)
    if parent not in _made:
        _made.add(parent)
        atexit.register(remove_tree, parent)
    return parent


def sweep_dead_workers(base: str, empty: Callable[[str], None]) -> None:
    """Remove the parents under ``base`` of worker processes that are gone, emptying
    each job group left in them with ``empty`` first (a job whose worker died while
    bubblewrap was still setting it up)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            pid = name[len(PARENT_PREFIX) :]
            if name.startswith(PARENT_PREFIX) and pid.isdigit() and not _alive(pid):
                parent = os.path.join(base, name)
                with contextlib.suppress(OSError):
                    for entry in os.scandir(parent):
                        if entry.is_dir(follow_symlinks=False):
                            empty(entry.path)
                remove_tree(parent)


def _alive(pid: str) -> bool:
    return os.path.exists(f"/proc/{pid}")


def remove_tree(path: str) -> None:
    """rmdir ``path`` and the empty groups under it (best effort)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def kill_members(group: str, *, wait_s: float = 0.0) -> None:
    """SIGKILL the processes ``group`` lists, one by one, and wait up to ``wait_s``
    until it lists none."""
    deadline = time.monotonic() + wait_s
    while members := read_pids(group):
        for member in members:
            _kill_if_member(member, group)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def _kill_if_member(pid: int, group: str) -> None:
    """SIGKILL ``pid`` through a pidfd, if the group still lists it once the pidfd is
    open (so a recycled pid outside the group is never signalled)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if pid in read_pids(group):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def write(path: str, name: str, value: str) -> None:
    """Write ``value`` to the file ``name`` of the group ``path``. Raises ``OSError``."""
    with open(os.path.join(path, name), "w", encoding="ascii") as f:
        f.write(value)


def read_int(path: str, name: str) -> int | None:
    try:
        with open(os.path.join(path, name), encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_key(path: str, name: str, key: str) -> int:
    """The value of ``key`` in a flat-keyed file (``memory.events``...); 0 if absent."""
    try:
        with open(os.path.join(path, name), encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == key:
                    return int(parts[1])
    except (OSError, ValueError):
        pass
    return 0


def read_words(path: str, name: str) -> list[str]:
    """The space-separated words of a file (``cgroup.controllers``...); none if unreadable."""
    try:
        with open(os.path.join(path, name), encoding="ascii") as f:
            return f.read().split()
    except OSError:
        return []


def read_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            return [int(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []
