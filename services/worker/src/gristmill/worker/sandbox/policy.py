"""The sandbox an operator asks for (``SandboxPolicy``) and the one a host provides
(``Sandbox``, made by ``detect``)."""

from __future__ import annotations

from typing import Literal

import msgspec

from gristmill.common.errors import GristmillError
from gristmill.worker.sandbox.etc import HostEtc
from gristmill.worker.sandbox.limits import CgroupRoots, Limits

__all__ = ["Network", "Sandbox", "SandboxPolicy", "SandboxUnavailable", "describe"]

#: ``host``: the job shares the worker's network (it can call the gateway back);
#: ``none``: a network namespace of its own with only a loopback interface.
Network = Literal["host", "none"]


class SandboxUnavailable(GristmillError):
    """This host cannot run jobs in the sandbox asked for; the message says why."""

    code = "sandbox_unavailable"


class SandboxPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What every job of a worker (group) runs under; from settings."""

    network: Network = "host"
    #: Default limits of each job (a job may bring its own, see ``launch``).
    limits: Limits = msgspec.field(default_factory=Limits)
    #: Run each job as its own host uid and gid (workers running as root only):
    #: ``job_uid_base + 100 * (worker pid % 10000) + n``, ``n`` free among the worker
    #: process's running jobs. The job then shares no uid with the worker or any host
    #: account: root-only files and the worker's processes are out of its reach even
    #: by mistake. ``None`` runs jobs as the worker's uid (still mapped to ``uid``
    #: inside, without capabilities). Keep the million uids from the base clear of
    #: real accounts and of subordinate-id ranges (``/etc/subuid``).
    job_uid_base: int | None = 2_000_000_000
    #: Install the seccomp filter (``sandbox.seccomp``) where it exists (x86_64).
    seccomp: bool = True
    #: cgroup controllers to limit each job with, through v1 or v2 (whichever holds
    #: each on this host), where this process may create groups: ``memory`` (the
    #: memory limit, its peak, OOM kills) and ``pids``. ``pids`` is off by default:
    #: ``RLIMIT_NPROC`` in the job's user namespace already caps its processes and
    #: threads, and each group costs the job's start a move between cgroups, which
    #: waits for an RCU grace period (~9 ms here).
    cgroups: tuple[str, ...] = ("memory",)
    #: Where the job's directory appears: its working directory and ``HOME``.
    workdir: str = "/job"
    #: The job's uid and gid *inside* its user namespace.
    uid: int = 1000
    gid: int = 1000
    hostname: str = "gristmill"
    #: More host paths to show read-only at the same place (e.g. a runtime in /opt).
    extra_readonly_paths: tuple[str, ...] = ()
    #: bubblewrap to run; ``None``: ``bwrap`` on ``PATH``.
    bwrap: str | None = None

    def __post_init__(self) -> None:
        if self.network not in ("host", "none"):
            raise ValueError(f"network must be 'host' or 'none', not {self.network!r}")
        if not set(self.cgroups) <= {"memory", "pids"}:
            raise ValueError(f"cgroups may name memory and pids, not {self.cgroups!r}")
        if self.uid <= 0 or self.gid <= 0:
            raise ValueError("the job's uid and gid inside must not be 0 (root)")
        if not self.workdir.startswith("/") or self.workdir == "/":
            raise ValueError("workdir must be an absolute path below /")
        if self.job_uid_base is not None and not 0 < self.job_uid_base < 2**31 - 2_000_000:
            raise ValueError("job_uid_base must be a positive uid below 2**31 - 2000000")


class Sandbox(msgspec.Struct, frozen=True, kw_only=True):
    """A policy together with what this host provides to enforce it (see ``detect``)."""

    policy: SandboxPolicy
    bwrap: str
    #: ``bwrap --version``, e.g. ``0.8.0``.
    version: str
    #: util-linux ``prlimit`` (sets the rlimits inside the job's namespaces).
    prlimit: str
    #: util-linux ``setpriv`` (starts bubblewrap as the job's own uid).
    setpriv: str = "/usr/bin/setpriv"
    #: The shell that puts the job's first process in its cgroups.
    sh: str = "/bin/sh"
    #: Whether the seccomp filter is installed.
    seccomp: bool = False
    #: Where job cgroups are created; ``None``: no cgroup limits (rlimits only).
    cgroups: CgroupRoots | None = None
    #: Whether each job runs as its own host uid (``policy.job_uid_base``).
    job_uids: bool = False
    #: Top-level system entries: ``(path, link target)``, an empty target for a
    #: directory bound read-only (``/usr``, ``/lib64``...).
    system: tuple[tuple[str, str], ...] = ()
    host_etc: HostEtc = msgspec.field(default_factory=HostEtc)
    #: What could not be enforced on this host, and why (logged at start).
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for operators (the ``workers.sandbox`` column, logs)."""
        parts = [
            f"bwrap {self.version}",
            f"network={self.policy.network}",
            f"seccomp={'on' if self.seccomp else 'off'}",
            f"cgroups={self._cgroups()}",
            f"uid={'per-job' if self.job_uids else 'worker'}",
        ]
        return "; ".join(parts)

    def _cgroups(self) -> str:
        """Each controller asked for and where its limit comes from: ``memory(v1)``,
        ``pids(v2)``, ``pids(missing)`` (the reason is in ``notes``)."""
        found = self.cgroups.controllers if self.cgroups is not None else ()
        wanted = dict.fromkeys([*self.policy.cgroups, *found])
        if not wanted:
            return "none"
        sources = []
        for controller in wanted:
            version = self.cgroups.version(controller) if self.cgroups is not None else None
            sources.append(f"{controller}({'missing' if version is None else f'v{version}'})")
        return "+".join(sources)


def describe(sandbox: Sandbox | None) -> str:
    """How jobs run: ``Sandbox.describe()``, or a warning when they are not sandboxed."""
    if sandbox is None:
        return "none (insecure: jobs run unsandboxed)"
    return sandbox.describe()
