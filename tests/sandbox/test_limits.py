"""Jobs that try to exhaust the host: processes, memory, disk, CPU. Each is stopped at
its limit, fails with the right exit reason, and the next job runs."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time

import msgspec
import pytest

from gristmill.common.contracts.jobs import ExitReason
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.sandbox import Sandbox, detect
from tests.sandbox.conftest import (
    LIMITS,
    DataDir,
    Logs,
    assert_next_job_runs,
    policy,
    run,
    with_limits,
)

MIB = 1024 * 1024
PROCESSES = LIMITS.processes or 0
OPEN_FILES = LIMITS.open_files or 0


def _job_processes() -> list[int]:
    """Live processes (not zombies, which hold nothing but their pid) of jobs this test
    process started: those in its job cgroups, but for pre-started launchers still
    waiting for a job. (Other worker processes on this host sandbox their jobs alike.)"""
    mine = f"/gristmill.{os.getpid()}/"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cgroup") as f:
                    groups = f.read()
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    waiting = b"_launcher_main.py" in f.read()
            except (OSError, IndexError):
                continue
            if mine in groups and state not in ("Z", "X") and not waiting:
                found.append(int(name))
    return found


async def test_forking_stops_at_the_process_limit(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = """
        import os, time

        def main():
            children = []
            try:
                while True:
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(60)
                        os._exit(0)
                    children.append(pid)
            except OSError as exc:
                return {"children": len(children), "errno": exc.errno}
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.error is None, outcome.error
    assert outcome.result["errno"] == errno.EAGAIN
    assert outcome.result["children"] < PROCESSES
    await assert_next_job_runs(settings, data_dir)


async def test_the_pids_cgroup_caps_processes_too(data_dir: DataDir) -> None:
    sandbox = detect(policy(cgroups=("memory", "pids")))
    if sandbox.cgroups is None or sandbox.cgroups.pids is None:
        pytest.skip(f"no writable pids cgroup here: {sandbox.notes}")
    memory, pids = sandbox.cgroups.version("memory"), sandbox.cgroups.version("pids")
    assert f"cgroups=memory(v{memory})+pids(v{pids})" in sandbox.describe()
    settings = with_limits(sandbox)
    code = """
        import threading, time

        def main():
            started = 0
            try:
                while True:
                    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                    started += 1
            except RuntimeError as exc:  # "can't start new thread"
                return started
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.error is None, outcome.error
    assert 0 < outcome.result < PROCESSES  # threads count as processes
    await assert_next_job_runs(settings, data_dir)


async def test_a_fork_bomb_is_contained_and_cleaned_up(
    settings: ExecutorSettings, data_dir: DataDir, sandbox: Sandbox
) -> None:
    if sandbox.cgroups is None:
        pytest.skip(f"no writable cgroups here to find the job's processes: {sandbox.notes}")
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, len(_job_processes()))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    try:
        outcome, _ = await run(
            settings,
            data_dir.workdir(),
            # The bomb rages while the job's shell spins without forking.
            "bomb() { bomb | bomb & }; bomb\nwhile :; do :; done\n",
            language="bash",
            timeout_s=3,
        )
    finally:
        watcher.cancel()
    assert outcome.exit_reason is ExitReason.TIMEOUT, outcome.error
    assert time.monotonic() - started < 20
    # Bounded (unchecked, it reaches thousands in a second). Slightly above the limit
    # at times: a process leaves the count when it starts exiting, /proc a bit later.
    assert 0 < most <= 2 * PROCESSES
    for _ in range(100):  # nothing left: killed with the job, gone moments later
        if not _job_processes():
            break
        await asyncio.sleep(0.05)
    assert _job_processes() == []
    await assert_next_job_runs(settings, data_dir)


async def test_a_memory_bomb_is_killed_as_out_of_memory(
    settings: ExecutorSettings, data_dir: DataDir, sandbox: Sandbox
) -> None:
    if sandbox.cgroups is None or sandbox.cgroups.memory is None:
        pytest.skip(f"no writable memory cgroup here: {sandbox.notes}")
    code = """
        def main():
            hoard = []
            while True:
                hoard.append(bytearray(8 * 1024 * 1024))  # zero-filled: really resident
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.exit_reason is ExitReason.OOM, outcome.error
    assert outcome.error is not None
    assert outcome.error.name == "OutOfMemory"
    assert "limit 256 MiB" in outcome.error.message
    assert outcome.memory_peak_bytes is not None
    assert 128 * MIB < outcome.memory_peak_bytes <= 260 * MIB
    await assert_next_job_runs(settings, data_dir)


async def test_without_a_memory_cgroup_the_address_space_limit_stops_a_memory_bomb(
    data_dir: DataDir, sandbox: Sandbox
) -> None:
    limited = with_limits(sandbox, address_space_mb=256)
    assert limited.sandbox is not None
    no_cgroup = msgspec.structs.replace(limited.sandbox, cgroups=None)
    settings = msgspec.structs.replace(limited, sandbox=no_cgroup)
    code = """
        def main():
            hoard = []
            while True:
                hoard.append(bytearray(8 * 1024 * 1024))
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.exit_reason is ExitReason.OOM, outcome.error
    assert outcome.error is not None
    assert outcome.error.name == "MemoryError"
    assert "address space limit 256 MiB" in outcome.error.message
    assert outcome.memory_peak_bytes is None  # measured by the cgroup only
    await assert_next_job_runs(settings, data_dir)


async def test_filling_tmp_stops_at_its_size(settings: ExecutorSettings, data_dir: DataDir) -> None:
    code = """
        def main():
            block = b"x" * (1024 * 1024)
            for n in range(1024):  # files smaller than the file size limit
                with open(f"/tmp/fill-{n}", "wb") as f:
                    f.write(block)
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.exit_reason is ExitReason.ERROR
    assert outcome.error is not None
    assert outcome.error.name == "OSError"
    assert "No space left on device" in outcome.error.message
    await assert_next_job_runs(settings, data_dir)


async def test_a_file_beyond_the_size_limit_cannot_be_written(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = """
        def main():
            with open("big", "wb") as f:
                for _ in range(64):
                    f.write(b"x" * (1024 * 1024))
    """
    workdir = data_dir.workdir()
    outcome, _ = await run(settings, workdir, code)
    assert outcome.error is not None
    assert outcome.error.name == "OSError"
    assert "File too large" in outcome.error.message
    assert (workdir / "big").stat().st_size <= 16 * MIB

    # A program that does not ignore SIGXFSZ (as Python does) is killed by it.
    outcome, _ = await run(
        settings, data_dir.workdir(), "head -c 64000000 /dev/zero > big\n", language="bash"
    )
    assert outcome.exit_reason is ExitReason.SIGNAL
    assert outcome.error is not None
    assert outcome.error.name == "FileSizeLimit"
    await assert_next_job_runs(settings, data_dir)


async def test_a_cpu_spin_stops_at_the_cpu_limit(data_dir: DataDir, sandbox: Sandbox) -> None:
    settings = with_limits(sandbox, cpu_s=1)
    started = time.monotonic()
    outcome, _ = await run(
        settings, data_dir.workdir(), "def main():\n    while True:\n        pass\n"
    )
    assert outcome.exit_reason is ExitReason.TIMEOUT, outcome.error
    assert outcome.error is not None
    assert outcome.error.name == "CpuLimit"
    assert outcome.error.message == "job used its 1 s of CPU time and was killed"
    assert time.monotonic() - started < 15
    await assert_next_job_runs(settings, data_dir)


async def test_open_files_stop_at_their_limit(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = """
        def main():
            held = []
            try:
                while True:
                    held.append(open("/dev/null"))
            except OSError as exc:
                return len(held), exc.errno
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.error is None, outcome.error
    count, code_ = outcome.result
    assert code_ == errno.EMFILE
    assert count < OPEN_FILES


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
async def test_a_stopped_job_gets_its_sigterm_grace_inside_the_sandbox(
    sandbox: Sandbox, data_dir: DataDir, stop: str
) -> None:
    """SIGTERM reaches the job's own process (not only bubblewrap, whose death would
    take the job down at once), so its clean-up code runs before the SIGKILL."""
    settings = ExecutorSettings(sandbox=sandbox, kill_grace_s=5.0)
    code = """
        import signal, sys, time

        def cleanup(signum, frame):
            time.sleep(0.5)  # clean-up that takes a moment
            print("cleaned up after signal", signum, flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, cleanup)

        def main():
            print("started", flush=True)
            time.sleep(60)
    """
    cancel = asyncio.Event()

    async def on_chunk(text: str) -> None:
        if "started" in text and stop == "cancel":
            cancel.set()

    outcome, logs = await run(
        settings,
        data_dir.workdir(),
        code,
        cancel=cancel,
        timeout_s=60 if stop == "cancel" else 1.5,
        logs=Logs(on_chunk),
    )
    expected = ExitReason.CANCELED if stop == "cancel" else ExitReason.TIMEOUT
    assert outcome.exit_reason is expected
    assert f"cleaned up after signal {signal.SIGTERM.value}" in logs.text
