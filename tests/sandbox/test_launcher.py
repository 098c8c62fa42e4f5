"""Jobs started from pre-started launchers (``sandbox.launcher``), against the real
sandbox: in their own job cgroups, as their own uid, with nothing of the worker.

Where a test compares, the same job also runs the ordinary way
(``prestarted_launchers=0``): a job must not be able to tell how it was started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from gristmill.cli.serve_worker import _executor_settings
from gristmill.common.contracts.jobs import ExitReason
from gristmill.common.contracts.sandbox import SandboxRequest
from gristmill.common.queue import NewJob, Queue
from gristmill.common.settings import load_settings
from gristmill.common.wakeup import Wakeup
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.execution.launch import close_launchers, prestarted
from gristmill.worker.sandbox import Sandbox, cgroup_v2
from gristmill.worker.sandbox.launcher import Launcher, LauncherGone, Launchers
from gristmill.worker.sandbox.limits import CgroupRoots
from gristmill.worker.service import Worker, WorkerSettings
from tests.sandbox.conftest import LIMITS, DataDir, assert_next_job_runs, run

MIB = 1024 * 1024
LAUNCHER_MAIN = b"_launcher_main.py"


@pytest.fixture
def cgroups(sandbox: Sandbox) -> Sandbox:
    if sandbox.cgroups is None:
        pytest.skip(f"no job cgroups here, so no pre-started launchers: {sandbox.notes}")
    return sandbox


@pytest.fixture
def worker_groups() -> Iterator[list[int]]:
    """This process (the worker) in supplementary groups, which its launchers started
    from now on inherit; as before afterwards."""
    if os.getuid() != 0:
        pytest.skip("only root may change its supplementary groups")
    before = os.getgroups()
    close_launchers()
    os.setgroups([4242, 4243])
    try:
        yield os.getgroups()
    finally:
        os.setgroups(before)
        close_launchers()


def _ordinary(settings: ExecutorSettings) -> ExecutorSettings:
    return msgspec.structs.replace(settings, prestarted_launchers=0)


async def _ready(settings: ExecutorSettings) -> Launchers:
    """The settings' launchers, every one of them started and waiting."""
    launchers = prestarted(settings)
    assert launchers is not None
    launchers.fill()
    for _ in range(500):
        if launchers.ready_count() == settings.prestarted_launchers:
            return launchers
        await asyncio.sleep(0.02)
    pytest.fail("the pre-started launchers did not get ready within 10 s")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _waiting_launchers(parent: int | None = None) -> set[int]:
    """Launchers (of ``parent``, this process by default) still waiting for a job."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and LAUNCHER_MAIN in _read(f"/proc/{name}/cmdline"):
            stat = _read(f"/proc/{name}/stat")
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and fields[0] != b"Z" and int(fields[1]) == parent:
                found.add(int(name))
    return found


def _groups_of(pid: int, parent: int) -> set[str]:
    """``pid``'s groups below the job groups' parents of the worker ``parent``."""
    marker = f"/gristmill.{parent}/"
    return {
        line.split(":", 2)[2]
        for line in _read(f"/proc/{pid}/cgroup").decode().splitlines()
        if marker in line
    }


def _in_groups_of(parent: int) -> list[int]:
    """Every process in the job groups of the worker ``parent``."""
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and _groups_of(int(n), parent)]


def _job_processes(parent: int | None = None) -> dict[int, set[str]]:
    """Live processes of ``parent``'s jobs (launchers waiting for one aside), with
    their groups."""
    parent = os.getpid() if parent is None else parent
    waiting = _waiting_launchers(parent)
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in waiting:
            groups = _groups_of(int(name), parent)
            stat = _read(f"/proc/{name}/stat")
            if groups and stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X", b""):
                found[int(name)] = groups
    return found


def _status(pid: int) -> dict[str, str]:
    text = _read(f"/proc/{pid}/status").decode()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


#: Says what it sees, then waits (for ``go`` in its directory) so that it can be
#: looked at from outside.
OBSERVED = """
import os, time

def main():
    fds = {}
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            fds[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the listing's own descriptor, closed already
    print("seen from inside")
    open("ready", "w").close()
    while not os.path.exists("go"):
        time.sleep(0.01)
    return {"fds": fds, "env": dict(os.environ), "uid": os.getuid(), "groups": os.getgroups()}
"""


class Observed(msgspec.Struct, kw_only=True):
    seen: Any
    log: str
    #: Looked at while it waits: its processes' groups and status, and the processes
    #: in each of its groups.
    processes: dict[int, set[str]]
    statuses: dict[int, dict[str, str]]
    members: dict[str, set[int]]
    #: The job's first process (bubblewrap, the worker's child) and its argv.
    first: int
    first_argv: list[str]


async def _observe(settings: ExecutorSettings, workdir: Path, env: dict[str, str]) -> Observed:
    """Run ``OBSERVED``, looked at from outside while it waits."""
    assert settings.sandbox is not None
    assert settings.sandbox.cgroups is not None
    roots = settings.sandbox.cgroups
    parents = {p for p in (roots.memory, roots.pids, roots.unified) if p is not None}
    job = asyncio.create_task(run(settings, workdir, OBSERVED, env=env))
    try:
        for _ in range(1000):
            if (workdir / "ready").exists() or job.done():
                break
            await asyncio.sleep(0.01)
        assert (workdir / "ready").exists(), "the job did not start"
        processes = _job_processes()
        statuses = {pid: _status(pid) for pid in processes}
        names = {group.rsplit("/", 1)[1] for groups in processes.values() for group in groups}
        members = {
            f"{parent}/{name}": {int(pid) for pid in _read(f"{parent}/{name}/cgroup.procs").split()}
            for parent in parents
            for name in names
            if os.path.isdir(f"{parent}/{name}")
        }
        (first,) = [pid for pid in processes if _status(pid)["PPid"] == str(os.getpid())]
        first_argv = _read(f"/proc/{first}/cmdline").decode().split("\0")
        (workdir / "go").touch()
        outcome, logs = await asyncio.wait_for(job, timeout=30)
    finally:
        job.cancel()
    assert outcome.error is None, outcome.error
    return Observed(
        seen=outcome.result,
        log=logs.text,
        processes=processes,
        statuses=statuses,
        members=members,
        first=first,
        first_argv=first_argv,
    )


@pytest.mark.parametrize("started", ["pre-started", "ordinary"])
async def test_a_job_has_its_own_cgroup_uid_descriptors_and_environment(
    started: str,
    settings: ExecutorSettings,
    cgroups: Sandbox,
    data_dir: DataDir,
    monkeypatch: pytest.MonkeyPatch,
    worker_groups: list[int],
) -> None:
    assert worker_groups
    monkeypatch.setenv("GRISTMILL_TEST_WORKER_ONLY", "worker-only-value")
    if started == "pre-started":
        launchers = await _ready(settings)
        waiting = _waiting_launchers()
    else:
        settings = _ordinary(settings)
    workdir = data_dir.workdir()
    observed = await _observe(settings, workdir, {"JOB_VAR": "job-value"})
    seen, processes, statuses = observed.seen, observed.processes, observed.statuses

    # Its own groups (one per hierarchy, one name): every process of the job in them,
    # nothing else.
    names = {group.rsplit("/", 1)[1] for groups in processes.values() for group in groups}
    assert len(names) == 1, processes
    (name,) = names
    assert name.startswith("pre-" if started == "pre-started" else "job-"), name
    assert observed.members
    assert all(members == set(processes) for members in observed.members.values())
    if started == "pre-started":
        assert len(waiting - _waiting_launchers()) == 1  # one taken, ...
        assert observed.first in waiting  # ... which became the job's first process
        assert launchers.ready_count() >= 1

    # Its own uid, on the host and inside, and no supplementary groups.
    if cgroups.job_uids:
        uids = {status["Uid"] for status in statuses.values()}
        assert len(uids) == 1, uids
        host_uid = int(uids.pop().split()[0])
        assert host_uid >= 2_000_000_000
        assert host_uid == workdir.stat().st_uid
        assert {status["Gid"].split()[0] for status in statuses.values()} == {str(host_uid)}
        assert {status["Groups"] for status in statuses.values()} == {""}
    assert seen["uid"] == 1000
    assert seen["groups"] in ([], [1000])

    # Exactly stdin (/dev/null), stdout and stderr (its output pipe), and what
    # bubblewrap 0.8 leaves open of its own: the read end of the pipe the worker
    # unblocked it with (--userns-block-fd), empty, its write end closed.
    assert observed.first_argv[0] == cgroups.bwrap
    argv = observed.first_argv
    leftover = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--userns-block-fd"]
    assert sorted(seen["fds"], key=int) == ["0", "1", "2", *leftover], (seen["fds"], leftover)
    assert all(seen["fds"][fd].startswith("pipe:") for fd in leftover)
    assert seen["fds"]["0"] == "/dev/null"
    assert seen["fds"]["1"] == seen["fds"]["2"]
    assert seen["fds"]["1"].startswith("pipe:")

    # Its own environment only; its output reaches its log.
    assert seen["env"]["JOB_VAR"] == "job-value"
    assert set(seen["env"]) <= {"JOB_VAR", "PATH", "HOME", "LANG", "LC_CTYPE", "PWD"}
    assert "worker-only-value" not in repr(seen)
    assert observed.log == "seen from inside\n"


async def test_a_job_from_a_launcher_in_a_cgroup_v2_group(
    sandbox: Sandbox, data_dir: DataDir
) -> None:
    """Where v2 holds the job's group: the same, and its group removed after it."""
    if cgroup_v2.hierarchy() is None:
        pytest.skip("no cgroup v2 hierarchy mounted here")
    parent, why = cgroup_v2.job_parent(())
    if parent is None:
        pytest.skip(f"cannot make v2 job groups here: {why}")
    v2_only = msgspec.structs.replace(sandbox, cgroups=CgroupRoots(unified=parent))
    settings = ExecutorSettings(sandbox=v2_only, kill_grace_s=0.5)
    launchers = await _ready(settings)
    try:
        observed = await _observe(settings, data_dir.workdir(), {})
        groups = {group for groups in observed.processes.values() for group in groups}
        assert len(groups) == 1, observed.processes
        name = groups.pop().rsplit("/", 1)[1]
        assert name.startswith("pre-")
        assert observed.members == {f"{parent}/{name}": set(observed.processes)}
        for _ in range(100):
            if not os.path.isdir(f"{parent}/{name}"):
                break
            await asyncio.sleep(0.05)
        assert not os.path.isdir(f"{parent}/{name}")
    finally:
        launchers.close()
    assert [n for n in os.listdir(parent) if n.startswith("pre-")] == []


async def test_a_job_gets_the_signal_dispositions_of_an_ordinary_start(
    settings: ExecutorSettings, cgroups: Sandbox, data_dir: DataDir
) -> None:
    """The launcher is Python, which ignores SIGPIPE and SIGXFSZ for itself: a job
    must get the defaults (``yes | head`` ends ``yes`` quietly)."""
    del cgroups
    code = "grep -E '^(SigIgn|SigBlk)' /proc/self/status\nyes | head -n 1\n"
    await _ready(settings)
    pre, pre_logs = await run(settings, data_dir.workdir(), code, language="bash")
    ordinary, ordinary_logs = await run(
        _ordinary(settings), data_dir.workdir(), code, language="bash"
    )
    assert pre.error is None, pre.error
    assert ordinary.error is None, ordinary.error
    assert pre_logs.text == ordinary_logs.text
    # SIGPIPE (13) and SIGXFSZ (25) at their defaults; other signals the worker itself
    # ignores (SIGHUP under nohup, say) are inherited by both starts alike.
    [ignored] = [line for line in pre_logs.text.splitlines() if line.startswith("SigIgn:")]
    mask = int(ignored.split()[1], 16)
    assert not mask & (1 << (signal.SIGPIPE - 1))
    assert not mask & (1 << (signal.SIGXFSZ - 1))
    assert "Broken pipe" not in pre_logs.text


async def test_a_script_with_its_own_memory_limit_starts_the_ordinary_way_and_is_held_to_it(
    settings: ExecutorSettings, cgroups: Sandbox, data_dir: DataDir
) -> None:
    if cgroups.cgroups is None or cgroups.cgroups.memory is None:
        pytest.skip(f"no memory cgroup here: {cgroups.notes}")
    launchers = await _ready(settings)
    waiting = _waiting_launchers()
    code = """
        def main():
            hoard = []
            while True:
                hoard.append(bytearray(8 * 1024 * 1024))  # zero-filled: really resident
    """
    own = SandboxRequest(memory_mb=64)
    outcome, _ = await run(settings, data_dir.workdir(), code, sandbox=own)
    assert outcome.exit_reason is ExitReason.OOM, outcome.error
    assert outcome.error is not None
    assert "limit 64 MiB" in outcome.error.message
    assert outcome.memory_peak_bytes is not None
    assert outcome.memory_peak_bytes <= 66 * MIB
    # No launcher was taken: their groups hold the worker group's limit.
    assert _waiting_launchers() == waiting
    assert launchers.ready_count() == settings.prestarted_launchers
    await assert_next_job_runs(settings, data_dir)


async def test_a_script_with_its_own_rlimits_still_starts_in_a_launcher(
    settings: ExecutorSettings, cgroups: Sandbox, data_dir: DataDir
) -> None:
    """Only the limits its cgroups hold tie a job to groups of its own: rlimits are set
    inside, by its command line."""
    del cgroups
    await _ready(settings)
    waiting = _waiting_launchers()
    code = """
        import resource

        def main():
            return list(resource.getrlimit(resource.RLIMIT_NOFILE))
    """
    own = SandboxRequest(open_files=64)
    outcome, _ = await run(settings, data_dir.workdir(), code, sandbox=own)
    assert outcome.error is None, outcome.error
    assert outcome.result == [64, 64]
    assert len(waiting - _waiting_launchers()) == 1


async def test_a_launcher_killed_while_waiting_is_replaced_and_the_job_still_runs(
    settings: ExecutorSettings, cgroups: Sandbox, data_dir: DataDir
) -> None:
    del cgroups
    await _ready(settings)
    killed = _waiting_launchers()
    assert len(killed) == settings.prestarted_launchers
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    for pid in killed:  # dead (not reaped: the launchers' owner does that)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    outcome, logs = await run(settings, data_dir.workdir(), "def main():\n    print('ran')\n")
    assert outcome.error is None, outcome.error
    assert logs.text == "ran\n"
    await _ready(settings)
    replacements = _waiting_launchers()
    assert len(replacements) == settings.prestarted_launchers
    assert not replacements & killed
    await assert_next_job_runs(settings, data_dir)


async def test_a_launcher_gone_before_the_job_was_sent_is_reported_as_gone(
    settings: ExecutorSettings, cgroups: Sandbox
) -> None:
    """What ``launch`` falls back on the ordinary start for."""
    assert cgroups.cgroups is not None
    launcher = Launcher(settings.python_bin, cgroups.cgroups, LIMITS)
    try:
        for _ in range(500):
            if launcher.ready():
                break
            await asyncio.sleep(0.02)
        os.kill(launcher.pid, signal.SIGKILL)
        os.waitid(os.P_PID, launcher.pid, os.WEXITED | os.WNOWAIT)
        with pytest.raises(LauncherGone):
            launcher.start(["/bin/true"], env={}, cwd="/", fds={}, uid=None)
        assert launcher.popen.returncode == -signal.SIGKILL  # reaped
    finally:
        launcher.discard()
    assert launcher.cgroup.paths == {}


async def test_closing_ends_waiting_launchers_and_removes_their_groups(
    settings: ExecutorSettings, cgroups: Sandbox, data_dir: DataDir
) -> None:
    assert cgroups.cgroups is not None
    await _ready(settings)
    assert _waiting_launchers()
    assert _job_processes() == {}
    close_launchers()
    assert _waiting_launchers() == set()
    roots = cgroups.cgroups
    for parent in {p for p in (roots.memory, roots.pids, roots.unified) if p is not None}:
        assert not [name for name in os.listdir(parent) if name.startswith("pre-")]
    await assert_next_job_runs(settings, data_dir)  # and new ones start
    await _ready(settings)


async def test_a_stopping_worker_ends_its_waiting_launchers(
    pg_pool: asyncpg.Pool,
    database_url: str,
    settings: ExecutorSettings,
    cgroups: Sandbox,
    tmp_path: Path,
) -> None:
    """A real worker (burst mode) runs a job from a launcher; once it stops, none waits."""
    del cgroups
    queue = Queue(pg_pool)
    job = NewJob(
        id=uuid.uuid4(),
        workspace="main",
        kind="preview",
        tag="python3",
        created_by="tester",
        trigger_kind="api",
        language="python3",
        code="def main():\n    return 'ran'\n",
    )
    await queue.enqueue([job])
    one = WorkerSettings(tags=("python3",), jobs_dir=tmp_path / "jobs", executor=settings)
    launchers = await _ready(settings)
    taken = launchers.taken
    async with Wakeup(database_url, one.tags, mode="poll") as wakeup:
        await Worker(pg_pool, queue, wakeup, one).run(asyncio.Event(), burst=True)
    row = await pg_pool.fetchrow("SELECT status, result FROM jobs_completed WHERE id = $1", job.id)
    assert row is not None
    assert (row["status"], row["result"]) == ("success", "ran")
    assert launchers.taken == taken + 1
    assert _waiting_launchers() == set()
    await asyncio.sleep(0.6)  # past the taken one's refill time: none started again
    assert _waiting_launchers() == set()


EXITING = """
import asyncio, sys, uuid
from pathlib import Path
from gristmill.worker.execution import ExecutionRequest, ExecutorSettings, execute
from gristmill.worker.execution.launch import prestarted
from gristmill.worker.sandbox import detect

async def main(workdir):
    async def ignore(text):
        pass
    settings = ExecutorSettings(sandbox=detect())
    request = ExecutionRequest(job_id=uuid.uuid4(), language="python3",
        code="def main():\\n    return 1\\n", args={}, env={}, timeout_s=60,
        workdir=Path(workdir))
    outcome = await execute(request, on_log=ignore, cancel=asyncio.Event(), settings=settings)
    assert outcome.result == 1, outcome
    launchers = prestarted(settings)
    while launchers.ready_count() < settings.prestarted_launchers:
        await asyncio.sleep(0.02)
    print("ready", flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_worker_exiting_leaves_no_launcher_and_no_group(
    tmp_path: Path, cgroups: Sandbox
) -> None:
    assert cgroups.cgroups is not None
    workdir = tmp_path / "job"
    workdir.mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(EXITING), str(workdir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    output, _ = worker.communicate(timeout=60)
    assert output == "ready\n"
    assert worker.returncode == 0
    parents = [
        Path(p).parent / f"gristmill.{worker.pid}"
        for p in (cgroups.cgroups.memory, cgroups.cgroups.pids, cgroups.cgroups.unified)
        if p
    ]
    for _ in range(100):
        if not _waiting_launchers(worker.pid) and not any(p.exists() for p in parents):
            break
        await asyncio.sleep(0.05)
    assert not any(p.exists() for p in parents)
    for name in os.listdir("/proc"):  # orphaned launchers would have init as parent
        if name.isdigit():
            assert f"gristmill.{worker.pid}/".encode() not in _read(f"/proc/{name}/cgroup")


WORKER = """
import asyncio, sys, uuid
from pathlib import Path
from gristmill.worker.execution import ExecutionRequest, ExecutorSettings, execute
from gristmill.worker.execution.launch import prestarted
from gristmill.worker.sandbox import detect

JOB = '''
import socket, time
def main(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"started\\\\n")
    time.sleep(300)
'''

async def main(port, workdir):
    async def ignore(text):
        pass
    settings = ExecutorSettings(sandbox=detect())
    warm = ExecutionRequest(job_id=uuid.uuid4(), language="python3",
        code="def main():\\n    return 1\\n", args={}, env={}, timeout_s=60,
        workdir=Path(workdir) / "warm")
    warm.workdir.mkdir()
    await execute(warm, on_log=ignore, cancel=asyncio.Event(), settings=settings)
    launchers = prestarted(settings)
    while launchers.ready_count() < settings.prestarted_launchers:
        await asyncio.sleep(0.02)
    request = ExecutionRequest(job_id=uuid.uuid4(), language="python3", code=JOB,
        args={"port": port}, env={}, timeout_s=300, workdir=Path(workdir) / "job")
    request.workdir.mkdir()
    await execute(request, on_log=ignore, cancel=asyncio.Event(), settings=settings)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


async def test_a_job_from_a_launcher_dies_with_its_worker(tmp_path: Path, cgroups: Sandbox) -> None:
    """As ``test_worker_death`` for the ordinary start; the waiting launchers go too."""
    del cgroups
    connected: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connected.put((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(port), str(tmp_path)]
    )
    try:
        reader, writer = await asyncio.wait_for(connected.get(), timeout=30)
        assert await asyncio.wait_for(reader.readline(), timeout=10) == b"started\n"
        jobs = _job_processes(worker.pid)
        assert jobs
        assert all(group.rsplit("/", 1)[1].startswith("pre-") for g in jobs.values() for group in g)
        assert _waiting_launchers(worker.pid)  # its replacements
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        # The job's end of the connection closes: it is dead.
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()
        await writer.wait_closed()
        for _ in range(100):  # the job, its sandbox and the waiting launchers: gone
            if not _in_groups_of(worker.pid):
                break
            await asyncio.sleep(0.05)
        assert _in_groups_of(worker.pid) == []
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        server.close()
        await server.wait_closed()


def test_the_number_of_launchers_is_a_worker_setting() -> None:
    assert _executor_settings(load_settings({}), None).prestarted_launchers == 2
    off = load_settings({"GRISTMILL_JOB_PRESTARTED_LAUNCHERS": "0"})
    assert _executor_settings(off, None).prestarted_launchers == 0
