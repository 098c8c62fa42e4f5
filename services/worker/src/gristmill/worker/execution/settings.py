"""How the executor runs jobs: interpreters, log limits, kill grace, the launch prefix,
the sandbox."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import msgspec

from gristmill.worker.sandbox import Sandbox, describe

__all__ = ["ExecutorSettings", "default_bash_bin", "default_launch_prefix", "default_python_bin"]

_SYSTEM_PYTHON = "/usr/bin/python3"
#: The oldest interpreter the Python bootstrap supports.
_MIN_PYTHON = (3, 9)


@functools.cache
def default_python_bin() -> str:
    """The fastest real interpreter: the system ``python3`` when it runs, else ours.

    ``sys.executable`` is resolved through symlinks so a virtualenv's ``bin/python`` or a
    version manager's shim is never what jobs start. Probed once per process.
    """
    if _interpreter_works(_SYSTEM_PYTHON):
        return _SYSTEM_PYTHON
    return os.path.realpath(sys.executable)


@functools.cache
def default_launch_prefix() -> tuple[str, ...]:
    """Ties the job's process to the worker: if the worker dies, the job gets SIGKILL.

    ``setpriv --pdeathsig`` sets the parent-death signal and execs the job (about a
    millisecond). Without it, a job outlives a killed worker until it ends by itself.
    """
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None:
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--")


@functools.cache
def default_bash_bin() -> str:
    return shutil.which("bash", path="/usr/bin:/bin") or "/bin/bash"


def _interpreter_works(path: str) -> bool:
    if not os.access(path, os.X_OK):
        return False
    check = f"import sys; sys.exit(sys.version_info < {_MIN_PYTHON!r})"
    try:
        done = subprocess.run(
            [path, "-I", "-S", "-c", check],
            env={},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


_NON_NEGATIVE = (
    "log_max_bytes",
    "log_flush_bytes",
    "log_flush_quiet_s",
    "log_flush_max_delay_s",
    "kill_grace_s",
    "max_result_bytes",
    "prestarted_launchers",
)


class ExecutorSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: Interpreter for ``python3`` jobs (3.9 or newer; started with ``-I -S``).
    python_bin: str = msgspec.field(default_factory=default_python_bin)
    bash_bin: str = msgspec.field(default_factory=default_bash_bin)
    #: Log bytes kept per job; the rest is read and dropped after one notice line.
    log_max_bytes: int = 2 * 1024 * 1024
    #: Deliver a log chunk once this many bytes are waiting ...
    log_flush_bytes: int = 16 * 1024
    #: ... or once the output has been quiet this long ...
    log_flush_quiet_s: float = 0.05
    #: ... or, for a job that never pauses, at the latest this long after the first byte.
    log_flush_max_delay_s: float = 0.25
    #: Between SIGTERM and SIGKILL when a job times out or is canceled.
    kill_grace_s: float = 2.0
    #: How long to wait for the output pipes to close after the job's process exited.
    drain_timeout_s: float = 0.5
    #: Results larger than this fail the job instead of being loaded.
    max_result_bytes: int = 16 * 1024 * 1024
    #: ``PATH`` for jobs whose environment does not set one.
    default_path: str = "/usr/local/bin:/usr/bin:/bin"
    #: Prepended to every job's argv (e.g. ``("nice", "-n", "10")``); see ``launch.build_argv``.
    launch_prefix: tuple[str, ...] = msgspec.field(default_factory=lambda: default_launch_prefix())
    #: The sandbox every job runs in (``sandbox.detect()``); ``None`` runs jobs as plain
    #: child processes, which only an explicitly insecure worker does.
    sandbox: Sandbox | None = None
    #: Job processes kept started ahead per worker process, each already in fresh job
    #: cgroups with the sandbox's default limits (``sandbox.launcher``), so that a job's
    #: start does not wait for its cgroup move; 0 switches them off. Used by sandboxed
    #: jobs with cgroups whose cgroup limits are the defaults, and only with the default
    #: (or no) ``launch_prefix``.
    prestarted_launchers: int = 2

    def __post_init__(self) -> None:
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"ExecutorSettings.{name} must not be negative")
        if self.drain_timeout_s <= 0:
            raise ValueError("ExecutorSettings.drain_timeout_s must be positive")

    @property
    def sandbox_mode(self) -> str:
        """How jobs run, in one line (``workers.sandbox``, logs)."""
        return describe(self.sandbox)
