"""The bubblewrap command line of one job.

What the job sees and may do:

* its own user, pid, ipc, uts and (where the kernel has it) cgroup namespaces, and a
  network namespace of its own when the policy's network is ``none``; no
  capabilities; ``no_new_privs`` (bubblewrap sets it); a new session (no terminal to
  inject keystrokes into); killed with its worker (``--die-with-parent``);
* a root that is an empty tmpfs, remounted read-only once populated: ``/usr`` and the
  top-level ``/bin``, ``/lib``... (links or read-only binds, as on the host), part of
  ``/etc`` (``etc.py``), a new ``/proc`` for its pid namespace, a minimal ``/dev``,
  size-capped ``/tmp`` and ``/dev/shm``;
* its directory, read-write at ``policy.workdir`` (also its working directory), with
  a same_worker flow's folder read-write at ``shared`` in it for that flow's steps, and
  the host paths its runner reads (interpreter, packages, client library)
  read-only, at their host paths (programs find their files by those paths).

Host paths are handed to bubblewrap as open file descriptors, so a job running as
its own uid needs no permission on their parent directories.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gristmill.worker.sandbox.policy import Sandbox

__all__ = ["bwrap_options", "readonly_mounts"]

_MIB = 1024 * 1024
# Paths inside the job's own mount namespace (fresh tmpfs), not host temporary files.
_TMP = "/tmp"  # noqa: S108  # the job's private tmpfs
_SHM = "/dev/shm"  # noqa: S108  # the job's private tmpfs
_VAR_TMP = "/var/tmp"  # noqa: S108  # a link to the job's /tmp


def bwrap_options(
    sandbox: Sandbox,
    *,
    workdir_fd: int,
    readonly: Sequence[tuple[int, str]],
    files: Sequence[tuple[int, str]],
    seccomp_fd: int | None,
    tmp_mb: int,
    writable: Sequence[tuple[int, str]] = (),
    shared: tuple[int, str] | None = None,
) -> list[str]:
    """bubblewrap's options, up to (not including) ``--`` and the command.

    ``readonly``: ``(fd, path)`` host paths to show read-only at ``path``; ``files``:
    ``(fd, path)`` files written for the job; ``seccomp_fd``: the filter program;
    ``writable``: ``(fd, path)`` more host directories to show read-write at ``path``
    (the dependency installer's cache; never given to a user's job); ``shared``:
    ``(fd, name)`` a host directory shown read-write at ``name`` inside the job's
    directory (the folder of a same_worker flow).
    """
    policy = sandbox.policy
    args = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if policy.network == "none":
        args.append("--unshare-net")
    args += [
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(policy.uid),
        "--gid",
        str(policy.gid),
        "--hostname",
        policy.hostname,
    ]
    for path, target in sandbox.system:
        args += ["--symlink", target, path] if target else ["--ro-bind", path, path]
    for path in sandbox.host_etc.binds:
        args += ["--ro-bind", path, path]
    for target, path in sandbox.host_etc.links:
        args += ["--symlink", target, path]
    for fd, path in files:
        args += ["--perms", "0444", "--ro-bind-data", str(fd), path]
    size = str(tmp_mb * _MIB)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", size, "--tmpfs", _TMP]
    args += ["--perms", "1777", "--size", size, "--tmpfs", _SHM]
    args += ["--symlink", "../tmp", _VAR_TMP]
    for fd, path in readonly:
        args += ["--ro-bind-fd", str(fd), path]
    for fd, path in writable:
        args += ["--bind-fd", str(fd), path]
    args += ["--bind-fd", str(workdir_fd), policy.workdir]
    if shared is not None:
        args += ["--bind-fd", str(shared[0]), f"{policy.workdir.rstrip('/')}/{shared[1]}"]
    args += ["--chdir", policy.workdir]
    args += ["--remount-ro", "/"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args


def readonly_mounts(sandbox: Sandbox, paths: Sequence[str]) -> list[str]:
    """The host paths to bind for a command that reads ``paths``, parents first.

    Paths the sandbox shows anyway (``/usr``...) are left out, and so are paths
    inside another one bound. An interpreter outside them (``<prefix>/bin/python``)
    brings its whole installation (``<prefix>``): it finds its library by its own
    location.
    """
    shown = [path for path, _ in sandbox.system] + list(sandbox.host_etc.binds)
    wanted: list[str] = []
    for raw in (*paths, *sandbox.policy.extra_readonly_paths):
        path = os.path.abspath(raw)
        if not os.path.exists(path):
            continue
        wanted.append(path)
        real = os.path.realpath(path)
        if os.path.isfile(real) and os.path.basename(os.path.dirname(real)) == "bin":
            prefix = os.path.dirname(os.path.dirname(real))
            if prefix != "/":
                wanted.append(prefix)
    mounts: list[str] = []
    for path in sorted(set(wanted), key=lambda p: (p.count("/"), p)):
        if not any(_within(path, outer) for outer in (*shown, *mounts)):
            mounts.append(path)
    return mounts


def _within(path: str, outer: str) -> bool:
    return path == outer or path.startswith(outer.rstrip("/") + "/")
