"""Every job runs in a sandbox: bubblewrap namespaces, a seccomp filter, limits.

``detect(policy)`` checks what this host can enforce and returns a ``Sandbox``; the
worker refuses to start without one unless the operator opts out explicitly
(``--insecure-no-sandbox``). The executor then starts each job through it
(``execution.launch``). What a job gets:

* **Isolation** (``bwrap.py``): its own user, pid, ipc, uts and cgroup namespaces
  (and network namespace with ``network="none"``); no capabilities; no new
  privileges; a read-only root holding ``/usr``, the libraries, a minimal ``/etc``
  (``etc.py``), a new ``/proc``, a minimal ``/dev``, size-capped ``/tmp``; its own
  directory read-write at ``/job``; the paths its runner reads, read-only. It sees
  no other job, no worker file, no worker environment variable (its environment is
  built for it), no host process.
* **Identity**: uid and gid 1000 inside; on the host, its own uid
  (``job_uid_base + n``) when the worker runs as root, else the worker's uid.
* **System calls** (``seccomp.py``): the kernel-administration and cross-process
  ones fail with ``EPERM``; creating namespaces is refused.
* **Limits** (``limits.py``): rlimits (address space, CPU, processes, files, file
  size, no core dumps) and, where this process may create cgroups, memory and pids
  limits per job through cgroup v1 or v2 (whichever holds each controller), which
  also report the memory peak and OOM kills (``ResourceUsage``).
"""

from __future__ import annotations

from gristmill.worker.sandbox.detect import detect
from gristmill.worker.sandbox.limits import Limits, ResourceUsage
from gristmill.worker.sandbox.policy import (
    Network,
    Sandbox,
    SandboxPolicy,
    SandboxUnavailable,
    describe,
)

__all__ = [
    "Limits",
    "Network",
    "ResourceUsage",
    "Sandbox",
    "SandboxPolicy",
    "SandboxUnavailable",
    "describe",
    "detect",
]
