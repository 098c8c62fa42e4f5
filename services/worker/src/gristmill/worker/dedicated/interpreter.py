"""One warm interpreter: a sandboxed template process that runs a script's jobs.

``WarmInterpreter.start`` starts the template of the script's language through the
executor's own ``launch`` (so exactly the sandbox of an ordinary job: bubblewrap
namespaces, seccomp, rlimits, the memory cgroup, a per-job uid) with a socket to it,
and waits until it is warm. ``run`` hands it one job (see ``protocol.py``) and turns
the outcome into an ``ExecutionOutcome`` as the executor would: same result file,
same errors, same log delivery (``LogPump``), same timeout and cancel (SIGTERM, then
SIGKILL after the grace period).

Two templates:

* Python (``python_template.py``) forks a process per job, which takes an output
  pipe of the job's own (sent with the ``run`` frame) and can be stopped alone:
  a timeout or cancel kills the job's process, the interpreter stays;
* Bun (``bun_template.mjs``, ``bun.py``) runs each job in its own process: its output
  is relayed to the job's log (``relay.py``), and a timeout or cancel stops the
  interpreter (SIGTERM, SIGKILL after the grace period), which is then replaced. A
  job that kills the interpreter (``process.exit``, a crash) is reported from the
  interpreter's exit, as the executor reports a cold job's.

Layout under ``base_dir`` (``<jobs dir>/dedicated``), per interpreter ``<id>``
(``<worker pid>-<script version key>-<random>``):

* ``<id>/``: its read-write directory (``/job`` inside), holding one directory per
  running job (``/job/<job id>``: the job's script, arguments, environment and
  result), removed with everything else found there after each job;
* ``<id>.code/``: the script and the workspace modules it imports, read-only inside,
  read by the warm-up;
* ``<id>.trash/``: what jobs left, moved out of sight after each job and deleted in
  a thread.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import hashlib
import marshal
import os
import shutil
import signal
import socket
import uuid
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from gristmill.common.contracts.jobs import ExitReason, JobError
from gristmill.worker.dedicated.bun import BunTemplate
from gristmill.worker.dedicated.protocol import (
    Done,
    FrameBuffer,
    FromInterpreter,
    Kill,
    ProtocolError,
    Ready,
    Run,
    Stop,
    ToInterpreter,
    encode,
)
from gristmill.worker.dedicated.relay import OutputRelay
from gristmill.worker.dependencies import write_modules
from gristmill.worker.execution import (
    ExecutionOutcome,
    ExecutionRequest,
    ExecutorSettings,
    OnLog,
    failures,
)
from gristmill.worker.execution.launch import Command, Launched, OutputPipe, job_limits, launch
from gristmill.worker.execution.logs import LogPump
from gristmill.worker.execution.process_tree import ProcessTree, terminate
from gristmill.worker.execution.runners.base import Finished, Runner
from gristmill.worker.execution.runners.python import BOOTSTRAP, PythonRunner
from gristmill.worker.pyenv import sys_path_code
from gristmill.worker.sandbox import ResourceUsage
from gristmill.worker.sandbox.job import chown_tree
from gristmill.worker.sandbox.process import SandboxedProcess
from gristmill.worker.sdk import SDK_DIR

__all__ = ["InterpreterFailed", "Spec", "WarmInterpreter"]

_log = structlog.get_logger(__name__)

_TEMPLATE = Path(__file__).with_name("python_template.py")
_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
#: The environment file in the job's directory (its token is in it).
_ENV_FILE = ".gristmill/env.marshal"
_MARSHAL_VERSION = 4
#: After SIGKILL was sent, how long the interpreter may take to report the job's end
#: before it is considered stuck and replaced.
_KILL_WAIT_S = 5.0
_STOP_WAIT_S = 2.0


class InterpreterFailed(Exception):
    """The interpreter could not be started or warmed up; the message says why."""


class Spec(msgspec.Struct, frozen=True, kw_only=True):
    """What a warm interpreter is for: one version of one script, with its packages."""

    workspace: str
    path: str
    code: str
    #: The job ``language`` (``WARM_LANGUAGES`` in ``pool.py``): which template runs it.
    language: str = "python3"
    #: Directories of installed packages (``Prepared.python_path``).
    python_path: tuple[str, ...] = ()
    #: Workspace scripts it imports (``Prepared.modules``).
    modules: dict[str, str] = msgspec.field(default_factory=dict)
    #: The script's own, tighter sandbox settings (``ExecutionRequest.sandbox``, where
    #: the executor has them): the interpreter's sandbox is started with them.
    sandbox: Any = None

    @property
    def key(self) -> str:
        """Equal for jobs one interpreter may serve."""
        digest = hashlib.sha256()
        for part in (self.language, self.workspace, self.path, self.code, *self.python_path):
            digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
        for name in sorted(self.modules):
            digest.update(f"{name}\0{self.modules[name]}\0".encode("utf-8", "surrogatepass"))
        digest.update(msgspec.json.encode(self.sandbox))
        return digest.hexdigest()


class Template(Protocol):
    """How one language's warm interpreter is started and fed jobs (one per interpreter)."""

    #: Whether jobs run in the interpreter's own process (else in a forked child, with
    #: its own output pipe, stopped alone).
    @property
    def in_process(self) -> bool: ...

    #: Reads a finished job's result, as for an ordinary job of the language.
    @property
    def runner(self) -> Runner: ...

    def command(
        self, *, code_dir: Path, workdir: Path, sock_fd: int, settings: ExecutorSettings
    ) -> Command:
        """Lay out the script in ``code_dir``; the interpreter's command. May raise
        ``OSError``."""
        ...

    def prepare(
        self,
        request: ExecutionRequest,
        job_dir: Path,
        env: dict[str, str],
        settings: ExecutorSettings,
    ) -> Run:
        """Write the job's files into ``job_dir`` (which exists); the frame that runs it.
        ``env`` is the job's whole environment."""
        ...


class PythonTemplate:
    """``python3`` jobs: ``python_template.py``, a forked process per job."""

    in_process = False
    runner = PythonRunner()

    def __init__(self, spec: Spec) -> None:
        self._spec = spec

    def command(
        self, *, code_dir: Path, workdir: Path, sock_fd: int, settings: ExecutorSettings
    ) -> Command:
        del workdir
        python_path = _lay_out(self._spec, code_dir)
        return Command(
            argv=(
                settings.python_bin,
                *_FLAGS,
                "-c",
                _loader(python_path),
                str(sock_fd),
                str(code_dir),
                "1" if settings.sandbox is not None else "0",
            ),
            readonly_paths=(
                settings.python_bin,
                str(BOOTSTRAP.parent),
                str(_TEMPLATE.parent),
                *python_path,
                str(code_dir),
            ),
        )

    def prepare(
        self,
        request: ExecutionRequest,
        job_dir: Path,
        env: dict[str, str],
        settings: ExecutorSettings,
    ) -> Run:
        job = msgspec.structs.replace(request, workdir=job_dir, python_path=())
        # The runner writes the script, the arguments and clears the result, exactly
        # as for an ordinary job; its argv ends with their paths.
        code, args, result = self.runner.prepare(job, settings).argv[-3:]
        env_file = job_dir / _ENV_FILE
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps(env, _MARSHAL_VERSION))
        return Run(job=job_dir.name, code=code, args=args, result=result, env=_ENV_FILE)


def template_for(spec: Spec) -> Template:
    """The template of ``spec``'s language. Raises ``InterpreterFailed`` for a language
    without one."""
    if spec.language == "python3":
        return PythonTemplate(spec)
    if spec.language == "bun":
        return BunTemplate(spec)
    raise InterpreterFailed(f"no warm interpreter for {spec.language!r} jobs")


class WarmInterpreter:
    """A started, warm interpreter; ``run`` one job at a time, then ``close``."""

    def __init__(
        self,
        spec: Spec,
        *,
        settings: ExecutorSettings,
        workdir: Path,
        code_dir: Path,
        sock: socket.socket,
        launched: Launched,
        pump: LogPump,
        template: Template,
    ) -> None:
        self.spec = spec
        self.key = spec.key
        self._template = template
        #: The interpreter's output, to the running job's log (templates running jobs
        #: in their own process); ``None``: its output is its own log.
        self._relay = OutputRelay() if template.in_process else None
        #: A job is being run (between the ``run`` frame and its end).
        self._busy = False
        #: How the interpreter's process ended, once it did and was reaped.
        self._returncode: int | None = None
        #: What a Bun warm-up left in the interpreter's directory (Bun installs the
        #: script's packages there when its cache is out of the sandbox's reach): kept
        #: for the interpreter's life; all else found there goes after each job.
        self._kept: frozenset[str] = frozenset()
        self._settings = settings
        self._workdir = workdir
        self._code_dir = code_dir
        self._sock = sock
        self._launched = launched
        self._pump = pump
        self._tree = ProcessTree(
            launched.process.pid, pipe_inodes=frozenset(o.inode for o in launched.outputs)
        )
        self._frames: asyncio.Queue[FromInterpreter | None] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read_frames())
        self._owner = os.stat(workdir).st_uid  # the sandbox gave the directory to the job uid
        self._own = _request(workdir, spec.sandbox, spec.language)
        self._limits = job_limits(self._own, settings) if settings.sandbox else None
        self._closed = False
        #: Why the interpreter takes no more jobs: ``jobs`` (it ran its share),
        #: ``memory`` (it grew too large), ``crash`` (a job's process was killed by a
        #: signal or ended without a result; for Bun, a job that ended the interpreter),
        #: ``died`` (the interpreter itself died or stopped answering), ``killed`` (it
        #: was stopped with the job it ran: Bun), what its last ``done`` asked for
        #: (``uncaught``, ``globals``: Bun), ``closed``; ``None`` while it serves.
        self.retired: str | None = None
        self.ready: Ready | None = None
        #: Jobs run so far.
        self.jobs = 0
        #: The sandbox's first process on the host (``sh``/``setpriv``/``bwrap``).
        self.host_pid = launched.process.pid
        #: The interpreter's resident memory after its last job, KiB.
        self.rss_kb = 0
        self._oom_seen = 0
        self._trash = workdir.with_name(workdir.name + ".trash")
        self._deleting: set[asyncio.Future[None]] = set()

    # -- start ---------------------------------------------------------------------------

    @classmethod
    async def start(
        cls, spec: Spec, *, settings: ExecutorSettings, base_dir: Path, timeout_s: float = 30.0
    ) -> WarmInterpreter:
        """Start and warm up an interpreter for ``spec``. Raises ``InterpreterFailed``."""
        # The worker's pid first: a later worker removes what a dead one left.
        ident = f"{os.getpid()}-{spec.key[:12]}-{uuid.uuid4().hex[:8]}"
        workdir = base_dir / ident
        code_dir = base_dir / f"{ident}.code"
        template = template_for(spec)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _make_dirs(workdir, code_dir)
            command = template.command(
                code_dir=code_dir, workdir=workdir, sock_fd=theirs.fileno(), settings=settings
            )
            launched = launch(
                command,
                request=_request(workdir, spec.sandbox, spec.language),
                settings=settings,
                pass_fds=(theirs.fileno(),),
            )
        except (OSError, ValueError) as exc:
            ours.close()
            _remove(workdir, code_dir, workdir.with_name(workdir.name + ".trash"))
            raise InterpreterFailed(f"could not start the warm interpreter: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        pump = LogPump(_interpreter_output(spec), settings=settings, job_id=uuid.uuid4())
        interpreter = cls(
            spec,
            settings=settings,
            workdir=workdir,
            code_dir=code_dir,
            sock=ours,
            launched=launched,
            pump=pump,
            template=template,
        )
        try:
            if interpreter._relay is not None:
                await pump.attach([await interpreter._relay.start(launched.outputs[0])])
            else:
                await pump.attach(launched.outputs)
            frame = await interpreter._next_frame(timeout_s)
            if not isinstance(frame, Ready):
                raise InterpreterFailed(
                    "the warm interpreter did not start" + _tail(interpreter._pump.output_tail())
                )
        except BaseException:
            await interpreter.close()
            raise
        interpreter.ready = frame
        if template.in_process:
            with contextlib.suppress(OSError):
                interpreter._kept = frozenset(os.listdir(workdir))
        return interpreter

    # -- one job ---------------------------------------------------------------------------

    async def run(
        self, request: ExecutionRequest, *, on_log: OnLog, cancel: asyncio.Event
    ) -> ExecutionOutcome:
        """Run ``request`` (its ``workdir`` is not used: the job gets a directory in the
        interpreter's own) and report how it ended, as ``execute`` would.

        Raises ``InterpreterFailed`` when the interpreter was found dead before the job
        started (it is closed then; the job may run elsewhere).
        """
        if self.retired is not None or self._closed:
            raise RuntimeError("this warm interpreter takes no more jobs")
        self.jobs += 1
        loop = asyncio.get_running_loop()
        name = str(request.job_id)
        job_dir = self._workdir / name
        try:
            run = self._prepare(request, job_dir)
        except OSError as exc:
            self._clear()
            return _failed(failures.launch_failed("the job in its warm interpreter", exc))
        pump = LogPump(on_log, settings=self._settings, job_id=request.job_id)
        started = loop.time()
        try:
            await self._hand_over(run, pump)
            done, stopped_by = await self._wait_done(name, cancel, request.timeout_s)
            self._busy = False
            duration_ms = round((loop.time() - started) * 1000)
            if self._relay is not None:
                self._relay.end_job()
            if done is None:  # dead, stuck or stopped: everything of it goes, the job too
                self.retired = "killed" if self._relay and stopped_by else "died"
                await self.close()
            if not await pump.wait_closed(self._settings.drain_timeout_s):
                _log.warning("dedicated job output still open after the job ended; abandoned")
            await pump.finish()
            outcome = self._outcome(
                done, stopped_by, duration_ms, pump, job_dir, run, request.timeout_s
            )
        except BaseException:
            pump.abort()
            await self.close()
            raise
        finally:
            self._clear()
        return outcome

    def _prepare(self, request: ExecutionRequest, job_dir: Path) -> Run:
        """Write the job's files into its directory; the frame that runs them."""
        job_dir.mkdir()
        run = self._template.prepare(
            request, job_dir, self._job_env(request, job_dir), self._settings
        )
        if self._owner != os.geteuid():  # the job runs as the sandbox's uid: give it all
            chown_tree(job_dir, self._owner)
        return run

    async def _hand_over(self, run: Run, pump: LogPump) -> None:
        """Send ``run``, with the job's output going to ``pump``: a pipe of its own sent
        along (a forked job takes it), or the interpreter's output relayed to it.
        Raises ``InterpreterFailed`` when the interpreter is gone (the job did not start)."""
        if self._relay is not None:
            await pump.attach([await self._relay.begin_job()])
            self._busy = True
            try:
                self._send(run)
            except OSError as exc:  # it died while idle
                raise InterpreterFailed(f"the warm interpreter is gone: {exc}") from exc
            return
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            await pump.attach(
                [OutputPipe(fd=read_fd, stream="merged", inode=os.fstat(read_fd).st_ino)]
            )
            self._busy = True
            try:
                self._send(run, fds=(write_fd,))
            except OSError as exc:  # it died while idle
                raise InterpreterFailed(f"the warm interpreter is gone: {exc}") from exc
        finally:
            os.close(write_fd)

    def _job_env(self, request: ExecutionRequest, job_dir: Path) -> dict[str, str]:
        """The job's whole environment, as ``launch.build_env`` makes it, with its own
        directory as ``HOME``."""
        inside = self._settings.sandbox.policy.workdir if self._settings.sandbox else None
        home = f"{inside}/{job_dir.name}" if inside else str(job_dir)
        env = {"PATH": self._settings.default_path, "HOME": home, "LANG": "C.UTF-8"}
        env.update(request.env)
        return env

    async def _wait_done(
        self, name: str, cancel: asyncio.Event, timeout_s: float | None
    ) -> tuple[Done | None, ExitReason | None]:
        """The job's ``done`` frame (``None``: the interpreter died, is stuck, or was
        stopped with the job), and why it was stopped, if it was."""
        done_task = asyncio.ensure_future(self._next_done(name))
        cancel_task = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait(
                {done_task, cancel_task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if done_task.done():
                return done_task.result(), None
            stopped_by = ExitReason.CANCELED if cancel_task.done() else ExitReason.TIMEOUT
            if self._relay is not None:  # the job is the interpreter's process: stop it
                await terminate(
                    self._tree,
                    grace_s=self._settings.kill_grace_s,
                    sandboxed=self._settings.sandbox is not None,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_KILL_WAIT_S):
                        await self._launched.process.wait_exited()
                return None, stopped_by
            for number, wait_s in (
                (signal.SIGTERM, self._settings.kill_grace_s),
                (signal.SIGKILL, _KILL_WAIT_S),
            ):
                with contextlib.suppress(OSError):
                    self._send(Kill(signal=number))
                await asyncio.wait({done_task}, timeout=wait_s)
                if done_task.done():
                    return done_task.result(), stopped_by
            return None, stopped_by
        finally:
            done_task.cancel()
            cancel_task.cancel()

    async def _next_done(self, name: str) -> Done | None:
        while True:
            frame = await self._frames.get()
            if frame is None:
                self._frames.put_nowait(None)  # the end stays visible to later readers
                return None
            if isinstance(frame, Done) and frame.job == name:
                return frame

    def _outcome(
        self,
        done: Done | None,
        stopped_by: ExitReason | None,
        duration_ms: int,
        pump: LogPump,
        job_dir: Path,
        run: Run,
        timeout_s: float | None,
    ) -> ExecutionOutcome:
        usage = ResourceUsage(limits=self._limits)

        def outcome(
            *, result: object = None, error: JobError | None = None, status: int | None = None
        ) -> ExecutionOutcome:
            return ExecutionOutcome(
                success=error is None,
                result=result if error is None else None,
                error=error,
                exit_code=status if status is not None and status >= 0 else None,
                duration_ms=duration_ms,
                exit_reason=ExitReason.OK if error is None else error.exit_reason,
                log_truncated=pump.truncated,
                log_bytes=pump.total_bytes,
                memory_peak_bytes=done.maxrss_kb * 1024 if done and done.maxrss_kb else None,
            )

        status = done.status if done is not None else None
        # A job run in the interpreter's own process that ended it: how the interpreter
        # ended is how the job ended (as for an ordinary job's process).
        ended = done is None and self._relay is not None and self._returncode is not None
        if ended:
            status = self._returncode
        signal_number = -status if status is not None and status < 0 else None
        if stopped_by is ExitReason.TIMEOUT:
            assert timeout_s is not None
            return outcome(
                error=failures.timed_out(timeout_s, signal_number=signal_number), status=status
            )
        if stopped_by is ExitReason.CANCELED:
            return outcome(error=failures.canceled(signal_number=signal_number), status=status)
        if done is None and not ended:
            self.retired = "died"
            return outcome(
                error=JobError(
                    name="InterpreterDied",
                    message="the script's warm interpreter exited during the job"
                    + _tail(self._pump.output_tail()),
                    stack=pump.output_tail() or None,
                    exit_reason=ExitReason.SIGNAL,
                )
            )
        assert status is not None
        if signal_number is not None:
            self.retired = "crash"
            if ended:  # the interpreter's sandbox accounting is the job's
                usage = self._launched.usage
            elif (oom_kills := self._oom_kills()) > self._oom_seen:
                self._oom_seen = oom_kills  # the memory cgroup's OOM killer ended it
                usage = msgspec.structs.replace(usage, oom_kills=1)
            return outcome(
                error=failures.killed_by_signal(
                    signal_number, output_tail=pump.output_tail(), usage=usage
                ),
                status=status,
            )
        if ended or not (job_dir / run.result).exists():
            # os._exit() or process.exit() in main, or a failure before the bootstrap
            # ran: the job is failed and the interpreter replaced, in case the job
            # damaged what it shares.
            self.retired = "crash"
        elif done is not None and done.retire:
            self.retired = done.retire
        finished = Finished(
            exit_code=status,
            workdir=job_dir,
            stdout_tail="",
            stdout_tail_cut=False,
            output_tail=pump.output_tail(),
        )
        ran = self._template.runner.collect(finished, self._settings)
        return outcome(
            result=ran.result, error=failures.limits_hit(ran.error, usage), status=status
        )

    @property
    def alive(self) -> bool:
        """Whether it can take a job (not retired, closed, exited or disconnected)."""
        return (
            self.retired is None
            and not self._closed
            and not self._launched.process.exited
            and not self._reader.done()
        )

    def _oom_kills(self) -> int:
        """OOM kills so far in the interpreter's memory cgroup (0 without one)."""
        process = self._launched.process
        return process.oom_kills() if isinstance(process, SandboxedProcess) else 0

    # -- after a job -----------------------------------------------------------------------

    def note_done(self, *, max_jobs: int, max_rss_kb: int) -> None:
        """Retire the interpreter if it ran its share of jobs or grew too large."""
        if self.retired is None and self.jobs >= max_jobs:
            self.retired = "jobs"
        elif self.retired is None and self.rss_kb > max_rss_kb:
            self.retired = "memory"

    def _clear(self) -> None:
        """Take whatever jobs left out of the interpreter's directory (but what the
        warm-up left there).

        Each entry is renamed into ``<id>.trash`` beside it (outside what the sandbox
        shows: gone for the next job at once) and deleted there in a thread, off the
        path of the job's completion. An entry that cannot be moved is deleted here.
        """
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._workdir):
                if entry.name in self._kept:
                    continue
                target = self._trash / uuid.uuid4().hex
                try:
                    os.rename(entry.path, target)
                except OSError:
                    target = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    task = asyncio.get_running_loop().run_in_executor(
                        None, functools.partial(shutil.rmtree, target, ignore_errors=True)
                    )
                    self._deleting.add(task)
                    task.add_done_callback(self._deleting.discard)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(target)

    # -- the socket ------------------------------------------------------------------------

    def _send(self, frame: ToInterpreter, *, fds: tuple[int, ...] = ()) -> None:
        """Send one frame (never blocks: frames are small and the interpreter reads them
        as they come). Raises ``OSError`` when the interpreter is gone."""
        data = encode(frame)
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            sent = self._sock.sendmsg([data], ancillary)
        else:
            sent = self._sock.send(data)
        if sent != len(data):
            raise OSError("the warm interpreter's socket is full")

    async def _read_frames(self) -> None:
        loop = asyncio.get_running_loop()
        frames = FrameBuffer()
        try:
            while True:
                data = await loop.sock_recv(self._sock, 65536)
                if not data:
                    break
                for frame in frames.feed(data):
                    if isinstance(frame, Done):
                        self.rss_kb = frame.rss_kb
                    self._frames.put_nowait(frame)
        except (OSError, ProtocolError) as exc:
            _log.warning("dedicated interpreter: bad socket", error=str(exc))
        finally:
            self._frames.put_nowait(None)

    async def _next_frame(self, timeout_s: float) -> FromInterpreter | None:
        try:
            async with asyncio.timeout(timeout_s):
                return await self._frames.get()
        except TimeoutError:
            return None

    # -- the end ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the interpreter (killing it if it does not stop) and remove its files."""
        if self._closed:
            return
        self._closed = True
        self.retired = self.retired or "closed"
        process = self._launched.process
        if self._busy and self._relay is not None:
            self._tree.kill()  # busy with a job in its own process: it would not stop
        with contextlib.suppress(OSError):
            self._send(Stop())
        try:
            async with asyncio.timeout(_STOP_WAIT_S):
                await process.wait_exited()
        except TimeoutError:
            self._tree.kill()
            await process.wait_exited()
        self._tree.kill_group()
        self._tree.forget_root()
        self._returncode = process.reap()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._sock.close()
        if not await self._pump.wait_closed(self._settings.drain_timeout_s):
            self._tree.kill(pipe_holders=True)
        await self._pump.finish()
        if self._relay is not None:
            self._relay.close()
        if self._deleting:
            await asyncio.gather(*self._deleting, return_exceptions=True)
        _remove(self._workdir, self._code_dir, self._trash)


def _make_dirs(workdir: Path, code_dir: Path) -> None:
    """Make the interpreter's directories (see the module docstring)."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    workdir.mkdir()
    code_dir.mkdir()
    workdir.with_name(workdir.name + ".trash").mkdir(mode=0o700)


def _lay_out(spec: Spec, code_dir: Path) -> tuple[str, ...]:
    """Write a Python script and its workspace modules; its ``sys.path`` additions."""
    (code_dir / "main.py").write_text(spec.code, encoding="utf-8", errors="replace")
    python_path = list(spec.python_path)
    if spec.modules:
        write_modules(code_dir / "_workspace", spec.modules)
        python_path.append(str(code_dir / "_workspace"))
    # The in-job client library comes after the job's own packages.
    python_path.append(str(SDK_DIR))
    return tuple(python_path)


def _request(workdir: Path, sandbox: Any, language: str) -> ExecutionRequest:
    """The interpreter's own request: no job's arguments, environment or token; the
    script's sandbox settings and language, from which ``launch`` takes its limits."""
    extra: dict[str, Any] = {} if sandbox is None else {"sandbox": sandbox}
    return ExecutionRequest(
        job_id=uuid.uuid5(uuid.NAMESPACE_URL, str(workdir)),
        language=language,
        code="",
        args={},
        env={},
        timeout_s=None,
        workdir=workdir,
        **extra,
    )


def _loader(python_path: tuple[str, ...]) -> str:
    """The ``-c`` program: packages on ``sys.path``, the bootstrap and the template
    imported from their directories (which then leave ``sys.path``), serve."""
    runners, here = str(BOOTSTRAP.parent), str(_TEMPLATE.parent)
    return (
        "".join(sys_path_code(Path(directory)) for directory in python_path)
        + "import sys;"
        + f"sys.path[0:0]=[{runners!r},{here!r}];"
        + "sys.dont_write_bytecode=False;"
        + f"import {BOOTSTRAP.stem};import {_TEMPLATE.stem} as t;"
        + "sys.dont_write_bytecode=True;"
        + f"sys.path.remove({runners!r});sys.path.remove({here!r});"
        + "sys.exit(t.serve(sys.argv[1:]))"
    )


def _interpreter_output(spec: Spec) -> OnLog:
    """Where the interpreter's own output goes (its warm-up's prints, its crash)."""
    log = _log.bind(workspace=spec.workspace, script_path=spec.path)

    async def write(text: str) -> None:
        log.info("dedicated interpreter output", output=text.rstrip("\n"))

    return write


def _tail(output: str) -> str:
    return f": {output.strip()[-2000:]}" if output.strip() else ""


def _remove(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _failed(error: JobError) -> ExecutionOutcome:
    return ExecutionOutcome(
        success=False,
        result=None,
        error=error,
        exit_code=None,
        duration_ms=0,
        exit_reason=error.exit_reason,
    )
