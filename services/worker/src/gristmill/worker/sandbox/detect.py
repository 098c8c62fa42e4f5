"""Check that this host can sandbox jobs, and with what: ``detect``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import msgspec

from gristmill.worker.sandbox import seccomp
from gristmill.worker.sandbox.etc import host_etc
from gristmill.worker.sandbox.job import JobSandbox, signal_from_status
from gristmill.worker.sandbox.limits import find_cgroup_roots
from gristmill.worker.sandbox.policy import Sandbox, SandboxPolicy, SandboxUnavailable

__all__ = ["detect"]

#: bubblewrap options the sandbox relies on (``--size`` and ``--perms`` came in 0.5/0.6,
#: the ``-fd`` binds in 0.7).
_REQUIRED_OPTIONS = (
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "--ro-bind-data",
    "--ro-bind-fd",
    "--bind-fd",
    "--remount-ro",
    "--perms",
    "--size",
    "--seccomp",
)
_SYSTEM_ENTRIES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)"
_PROBE_TIMEOUT_S = 30.0


def detect(policy: SandboxPolicy | None = None) -> Sandbox:
    """The sandbox this host provides for ``policy``, after running a job in it once.

    What the host cannot enforce but the sandbox can do without (no seccomp filter
    for this architecture, no writable cgroups, no per-job uid) is listed in
    ``Sandbox.notes``. Raises ``SandboxUnavailable`` when jobs cannot be sandboxed at
    all (no bubblewrap, or it fails here): the message says why and what to do.
    Blocks for a few tens of milliseconds.
    """
    policy = policy or SandboxPolicy()
    bwrap = policy.bwrap or shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {_INSTALL_HINT}")
    version = _version(bwrap)
    help_text = _run([bwrap, "--help"]).stdout
    missing = [option for option in _REQUIRED_OPTIONS if option not in help_text]
    if missing:
        raise SandboxUnavailable(
            f"bubblewrap {version} at {bwrap} lacks {', '.join(missing)}: "
            "install bubblewrap 0.8 or newer"
        )
    prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if prlimit is None or setpriv is None:
        raise SandboxUnavailable("prlimit and setpriv (util-linux) are needed; install util-linux")
    notes: list[str] = []
    use_seccomp = policy.seccomp and seccomp.supported()
    if policy.seccomp and not use_seccomp:
        notes.append(f"no seccomp filter: it describes x86_64 only, this is {os.uname().machine}")
    cgroups = None
    if policy.cgroups:
        cgroups, why = find_cgroup_roots(policy.cgroups)
        if why:
            notes.append(f"cgroup limits incomplete ({why}); rlimits still apply")
    job_uids = policy.job_uid_base is not None and os.geteuid() == 0
    if policy.job_uid_base is not None and not job_uids:
        notes.append("jobs run as the worker's uid: only a root worker can give each its own")
    sandbox = Sandbox(
        policy=policy,
        bwrap=bwrap,
        version=version,
        prlimit=prlimit,
        setpriv=setpriv,
        sh="/bin/sh",
        seccomp=use_seccomp,
        cgroups=cgroups,
        job_uids=job_uids,
        system=_system_entries(),
        host_etc=host_etc(network=policy.network == "host"),
    )
    failure = _probe(sandbox)
    if failure is not None and job_uids:
        # Per-job uids need unprivileged user namespaces (bubblewrap then runs as that
        # uid); some kernels or security modules forbid them.
        fallback = msgspec.structs.replace(sandbox, job_uids=False)
        if _probe(fallback) is None:
            notes.append(f"jobs run as the worker's uid: a per-job uid failed ({failure})")
            sandbox, failure = fallback, None
    if failure is not None:
        raise SandboxUnavailable(f"bubblewrap {version} cannot sandbox a job here: {failure}")
    return msgspec.structs.replace(sandbox, notes=tuple(notes))


def _version(bwrap: str) -> str:
    try:
        output = _run([bwrap, "--version"]).stdout
    except OSError as exc:
        raise SandboxUnavailable(f"cannot run {bwrap}: {exc}") from exc
    match = re.search(r"(\d+(?:\.\d+)+)", output)
    return match.group(1) if match else output.strip() or "unknown"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False, env={}
    )


def _system_entries() -> tuple[tuple[str, str], ...]:
    entries = []
    for path in _SYSTEM_ENTRIES:
        if os.path.islink(path):
            entries.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            entries.append((path, ""))
    return tuple(entries)


def _probe(sandbox: Sandbox) -> str | None:
    """Run a shell in the sandbox as a job would run; what went wrong, if anything."""
    with tempfile.TemporaryDirectory(prefix="gristmill-sandbox-probe-") as tmp:
        try:
            job = JobSandbox(
                sandbox,
                job_id=uuid.uuid4(),
                workdir=Path(tmp),
                readonly_paths=(),
                limits=sandbox.policy.limits,
            )
        except OSError as exc:
            return f"preparing the sandbox failed: {exc}"
        try:
            argv = job.wrap([sandbox.sh, "-c", "echo ok > probe && cat probe"])
            process = subprocess.Popen(
                argv,
                env={"PATH": "/usr/bin:/bin", "HOME": sandbox.policy.workdir},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd="/",
                pass_fds=job.pass_fds,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            job.finish()
            return str(exc)
        try:
            job.started()
            job.complete_handshake()
            output, _ = process.communicate(timeout=_PROBE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            process.kill()
            output, _ = process.communicate()
            return f"{exc}: {output.decode(errors='replace').strip()[-500:]}"
        finally:
            job.finish()
        if process.returncode != 0 or output.strip() != b"ok":
            status = signal_from_status(process.returncode)
            text = output.decode(errors="replace").strip()[-500:] or "no output"
            return f"exit status {status}: {text}"
    return None
