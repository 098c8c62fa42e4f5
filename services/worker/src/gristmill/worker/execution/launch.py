"""Starting a job's process: the one place its argv and environment are built.

A runner describes *what* to run as a ``Command`` (argv relative to the job's workdir,
plus the host paths it needs to read). ``build_argv`` turns that into the argv that is
actually executed: this is where the sandbox (``ExecutorSettings.sandbox``) wraps the
command (``bwrap ... --``, see ``gristmill.worker.sandbox``). The process always starts
in a new session (so it and its children form one process group), with stdin on
``/dev/null`` and stdout/stderr on pipes the executor reads.

A sandboxed job starts in a pre-started launcher when one is ready
(``sandbox.launcher``, ``ExecutorSettings.prestarted_launchers``): a process already in
fresh job cgroups that becomes the job's bubblewrap, sparing the job's start the
cgroup move and the ``sh``/``setpriv`` steps; else (none ready, cgroup limits of the
job's own, a launch prefix of the operator's, a dedicated interpreter) the ordinary
way.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import msgspec
import structlog

from gristmill.worker.execution.job_process import JobProcess
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.settings import ExecutorSettings, default_launch_prefix
from gristmill.worker.sandbox import Limits, ResourceUsage, Sandbox
from gristmill.worker.sandbox import process as sandbox_process
from gristmill.worker.sandbox.job import SHARED_NAME, JobSandbox
from gristmill.worker.sandbox.launcher import LauncherGone, Launchers, close_all, launchers

__all__ = [
    "Command",
    "Launched",
    "OutputPipe",
    "build_argv",
    "build_env",
    "close_launchers",
    "job_limits",
    "job_sandbox",
    "launch",
    "prestarted",
]

_log = structlog.get_logger(__name__)


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """What a runner wants executed, before any sandboxing."""

    argv: tuple[str, ...]
    #: False: stdout and stderr share one pipe, so their order is exact.
    #: True: stdout has its own pipe, so the runner can read what was printed there
    #: (e.g. Bash's last stdout line); the two streams are then merged as they arrive.
    separate_stderr: bool = False
    #: Host paths the command reads (interpreter, bootstrap): what a sandbox must expose.
    readonly_paths: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name


class OutputPipe(msgspec.Struct, frozen=True, kw_only=True):
    """The read end of one of the job's output pipes, owned by whoever reads it."""

    fd: int
    #: ``"stdout"`` (its own pipe), ``"stderr"``, or ``"merged"`` (both on one pipe).
    stream: str
    inode: int


class Launched(msgspec.Struct, frozen=True, kw_only=True):
    process: JobProcess
    outputs: tuple[OutputPipe, ...]

    @property
    def usage(self) -> ResourceUsage:
        """What the sandboxed job used and hit; complete once ``process`` is reaped."""
        if isinstance(self.process, sandbox_process.SandboxedProcess):
            return self.process.usage
        return ResourceUsage()


def build_argv(
    command: Command,
    *,
    workdir: Path,
    settings: ExecutorSettings,
    sandbox: JobSandbox | None = None,
) -> list[str]:
    """The argv the job's process is started with.

    Every job process is started through here: ``command.argv`` wrapped by the job's
    ``sandbox`` (which binds ``workdir`` read-write and ``command.readonly_paths``
    read-only), after ``settings.launch_prefix`` (which a pre-started launcher stands
    in for: it sets the parent-death signal itself).
    """
    del workdir  # the sandbox has it already
    if sandbox is None:
        return [*settings.launch_prefix, *command.argv]
    prefix = () if sandbox.launcher is not None else settings.launch_prefix
    return [*prefix, *sandbox.wrap(command.argv)]


def build_env(request: ExecutionRequest, settings: ExecutorSettings) -> dict[str, str]:
    """The job's entire environment: its own variables plus the basics it lacks."""
    home = str(request.workdir) if settings.sandbox is None else settings.sandbox.policy.workdir
    env = {
        "PATH": settings.default_path,
        "HOME": home,
        "LANG": "C.UTF-8",
    }
    env.update(request.env)
    return env


def launch(
    command: Command,
    *,
    request: ExecutionRequest,
    settings: ExecutorSettings,
    pass_fds: tuple[int, ...] = (),
) -> Launched:
    """Start ``command`` in ``request.workdir`` in a new session (in the running loop).

    ``pass_fds``: more descriptors the command inherits at the same numbers (a
    dedicated interpreter's control socket). Such a process starts the ordinary way,
    never in a pre-started launcher: it starts once for many jobs, so sparing its
    start a few milliseconds gains nothing, and its job cgroup keeps the job's name
    (``job-<id>``), where the dedicated pool looks for its OOM kills.

    Raises ``OSError`` or ``ValueError`` (e.g. a NUL byte in an argument) when the
    process cannot be started; no file descriptor is leaked either way.
    """
    launchers = None if pass_fds else prestarted(settings)
    try:
        return _launch(command, request, settings, pass_fds, launchers=launchers)
    except LauncherGone as exc:
        _log.warning("pre-started launcher gone; the job starts the ordinary way", error=str(exc))
        return _launch(command, request, settings, pass_fds, launchers=None)


def _launch(
    command: Command,
    request: ExecutionRequest,
    settings: ExecutorSettings,
    pass_fds: tuple[int, ...],
    *,
    launchers: Launchers | None,
) -> Launched:
    program = command.argv[0]
    wrapped = bool(settings.launch_prefix) or settings.sandbox is not None
    if wrapped and os.path.isabs(program) and not os.access(program, os.X_OK):
        # Behind a prefix, a missing program would surface only as the prefix's exit code.
        raise FileNotFoundError(errno.ENOENT, "no such executable", program)
    sandbox = None
    if request.shared_dir is not None:
        unsandboxed = settings.sandbox is None
        _place_shared(request.workdir / SHARED_NAME, request.shared_dir, linked=unsandboxed)
    if settings.sandbox is not None:
        box = job_sandbox(request, settings)
        limits = job_limits(request, settings)
        sandbox = JobSandbox(
            box,
            job_id=request.job_id,
            workdir=request.workdir,
            readonly_paths=command.readonly_paths,
            limits=limits,
            shared_dir=request.shared_dir,
            launcher=None if launchers is None else launchers.take(limits),
        )
    read_fds: list[tuple[int, str]] = []
    write_fds: list[int] = []
    try:
        argv = build_argv(command, workdir=request.workdir, settings=settings, sandbox=sandbox)
        env = build_env(request, settings)
        out_r, out_w = os.pipe()
        read_fds.append((out_r, "stdout" if command.separate_stderr else "merged"))
        write_fds.append(out_w)
        err_w = out_w
        if command.separate_stderr:
            err_r, err_w = os.pipe()
            read_fds.append((err_r, "stderr"))
            write_fds.append(err_w)
        inherited = (*pass_fds, *(() if sandbox is None else sandbox.pass_fds))
        # A job with its own uid may not reach the workdir's parents: bwrap binds it
        # from a descriptor and changes into it.
        cwd = str(request.workdir) if sandbox is None else "/"
        if sandbox is not None and sandbox.launcher is not None:
            fds = {fd: fd for fd in inherited} | {1: out_w, 2: err_w}
            popen = sandbox.launcher.start(argv, env=env, cwd=cwd, fds=fds, uid=sandbox.user)
        else:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd,
                env=env,
                start_new_session=True,
                pass_fds=inherited,
            )
    except BaseException:
        for fd, _ in read_fds:
            os.close(fd)
        if sandbox is not None:
            sandbox.finish()
        raise
    finally:
        for fd in write_fds:
            os.close(fd)
    if sandbox is not None:
        sandbox.started()
    outputs = tuple(
        OutputPipe(fd=fd, stream=stream, inode=os.fstat(fd).st_ino) for fd, stream in read_fds
    )
    if sandbox is None:
        return Launched(process=JobProcess(popen), outputs=outputs)
    return Launched(process=sandbox_process.SandboxedProcess(popen, sandbox), outputs=outputs)


def _place_shared(where: Path, shared_dir: Path, *, linked: bool) -> None:
    """Make ``./shared`` in the job's directory: a mount point for the sandbox to bind
    the flow's folder on, or (unsandboxed) a link to it."""
    if where.is_symlink() or where.exists():
        return
    if linked:
        where.symlink_to(shared_dir, target_is_directory=True)
    else:
        where.mkdir()


def job_sandbox(request: ExecutionRequest, settings: ExecutorSettings) -> Sandbox:
    """The worker's sandbox, with the network the request's script asks for: a script
    may give up the group's network (``none``), never gain one."""
    assert settings.sandbox is not None
    sandbox = settings.sandbox
    wanted = request.sandbox.network if request.sandbox is not None else None
    if wanted == "none" and sandbox.policy.network != "none":
        policy = msgspec.structs.replace(sandbox.policy, network="none")
        sandbox = msgspec.structs.replace(sandbox, policy=policy)
    return sandbox


def job_limits(request: ExecutionRequest, settings: ExecutorSettings) -> Limits:
    """The limits ``request`` runs under: the worker group's (``SandboxPolicy.limits``),
    each lowered to the request's script's own where it asks for less."""
    assert settings.sandbox is not None
    limits = settings.sandbox.policy.limits
    if request.sandbox is not None:
        tighter: dict[str, int] = {}
        for field in msgspec.structs.fields(limits):
            wanted = getattr(request.sandbox, field.name, None)
            if wanted is None:
                continue
            current = getattr(limits, field.name)
            tighter[field.name] = wanted if current is None else min(wanted, current)
        limits = msgspec.structs.replace(limits, **tighter)
    if request.language in _RESERVES_ADDRESS_SPACE and limits.address_space_mb is not None:
        # V8 reserves a large address range at start and dies under an address-space
        # limit; its memory stays bounded by the job's memory cgroup where there is one.
        limits = msgspec.structs.replace(limits, address_space_mb=None)
    return limits


#: Runtimes that reserve far more address space than they use (Deno's V8 heap cage).
_RESERVES_ADDRESS_SPACE = frozenset({"deno", "nativets"})


def prestarted(settings: ExecutorSettings) -> Launchers | None:
    """This process's pre-started launchers for ``settings`` (``sandbox.launcher``);
    ``None`` where jobs always start the ordinary way: switched off, no job cgroups
    (no move to spare), or a launch prefix of the operator's (it must run first)."""
    sandbox = settings.sandbox
    if (
        sandbox is None
        or sandbox.cgroups is None
        or settings.prestarted_launchers < 1
        or settings.launch_prefix not in ((), default_launch_prefix())
        or not os.path.isabs(sandbox.bwrap)
    ):
        return None
    return launchers(
        settings.python_bin,
        sandbox.cgroups,
        sandbox.policy.limits,
        size=settings.prestarted_launchers,
    )


def close_launchers() -> None:
    """End this process's waiting pre-started launchers, their cgroups removed: when a
    worker stops (and at exit in any case). A later job starts new ones."""
    close_all()
