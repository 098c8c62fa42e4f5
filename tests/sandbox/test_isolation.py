"""Hostile jobs against the real sandbox: what they must not see, touch or reach.

Each job runs through the executor with the worker's own sandbox; after each one
an ordinary job must still run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from gristmill.common.contracts.jobs import ExitReason
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.execution.runners import python as python_runner
from gristmill.worker.sandbox import Sandbox
from tests.sandbox.conftest import DB_PASSWORD, DataDir, Logs, assert_next_job_runs, run

ROOT_ENTRIES = {
    "bin", "dev", "etc", "job", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp",
    "usr", "var",
}  # fmt: skip
RUNNER_FILE = python_runner.__file__

#: Tries to read ``path``; the outcome as data (never raises).
READ = """
import os

def main(paths):
    found = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                found[path] = "read:" + f.read(200).decode(errors="replace")
        except OSError as exc:
            found[path] = type(exc).__name__
    return found
"""


async def test_a_job_runs_as_an_unprivileged_user_in_its_own_directory(
    settings: ExecutorSettings, data_dir: DataDir, sandbox: Sandbox
) -> None:
    code = """
        import os

        def main():
            status = open("/proc/self/status").read()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            return {
                "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                "cwd": os.getcwd(), "home": os.environ["HOME"], "pid": os.getpid(),
                "caps": [fields[k].strip() for k in ("CapPrm", "CapEff", "CapBnd", "CapAmb")],
                "no_new_privs": fields["NoNewPrivs"].strip(),
                "seccomp": fields["Seccomp"].strip(),
                "hostname": os.uname().nodename,
            }
    """
    workdir = data_dir.workdir()
    outcome, _ = await run(settings, workdir, code)
    assert outcome.error is None, outcome.error
    seen = outcome.result
    assert seen["uid"] == seen["gid"] == 1000
    assert seen["groups"] in ([], [1000])
    assert seen["cwd"] == seen["home"] == "/job"
    assert seen["pid"] == 2  # bubblewrap's reaper is 1 in the job's pid namespace
    assert seen["caps"] == ["0000000000000000"] * 4
    assert seen["no_new_privs"] == "1"
    assert seen["seccomp"] == "2"  # filter mode
    assert seen["hostname"] == "gristmill"
    if sandbox.job_uids:  # a root worker: the job's files belong to its own host uid
        owner = workdir.stat().st_uid
        assert owner >= 2_000_000_000
        assert owner != os.getuid()


async def test_host_secrets_are_not_visible(settings: ExecutorSettings, data_dir: DataDir) -> None:
    paths = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/ssl/private",
        "/root/.bash_history",
        str(data_dir.password_file),
        str(data_dir.master_key),
        str(data_dir.root / "admin-token"),
        "/var/lib/gristmill/postgres/gristmill-superuser.password",
    ]
    outcome, logs = await run(settings, data_dir.workdir(), READ, args={"paths": paths})
    assert outcome.error is None, outcome.error
    assert set(outcome.result.values()) == {"FileNotFoundError"}, outcome.result
    assert DB_PASSWORD not in repr(outcome.result) + logs.text
    await assert_next_job_runs(settings, data_dir)


async def test_the_worker_data_dir_and_other_jobs_dirs_are_not_visible(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    other = data_dir.workdir()
    (other / "secret.txt").write_text("another job's secret")
    code = """
        import os

        def main(data_dir, other):
            def listing(path):
                try:
                    return sorted(os.listdir(path))
                except OSError as exc:
                    return type(exc).__name__
            return {
                "data_dir": listing(data_dir),
                "jobs": listing(data_dir + "/jobs"),
                "other": listing(other),
                "parent_of_mine": listing("/job/.."),
                "root": listing("/"),
            }
    """
    outcome, _ = await run(
        settings,
        data_dir.workdir(),
        code,
        args={"data_dir": str(data_dir.root), "other": str(other)},
    )
    assert outcome.error is None, outcome.error
    seen = outcome.result
    assert seen["data_dir"] == seen["jobs"] == seen["other"] == "FileNotFoundError"
    assert "job" in seen["parent_of_mine"]
    assert "data" not in repr(seen["root"])
    # Besides the system: the top directories of the paths the runner reads
    # (this checkout's bootstrap and client library).
    extra = set(seen["root"]) - ROOT_ENTRIES
    assert extra <= {Path(RUNNER_FILE).parts[1]}, extra


async def test_the_worker_environment_is_not_inherited(
    settings: ExecutorSettings, data_dir: DataDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRISTMILL_TEST_WORKER_SECRET", "worker-only-value")
    monkeypatch.setenv("GRISTMILL_DATABASE_URL", f"postgresql://admin:{DB_PASSWORD}@db/x")
    code = """
        import os

        def main():
            everything = {"own": dict(os.environ)}
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    for name in ("environ", "cmdline"):
                        try:
                            with open(f"/proc/{pid}/{name}", "rb") as f:
                                everything[f"{pid}/{name}"] = f.read().decode(errors="replace")
                        except OSError as exc:
                            everything[f"{pid}/{name}"] = type(exc).__name__
            return everything
    """
    outcome, _ = await run(settings, data_dir.workdir(), code, env={"JOB_TOKEN": "t0k"})
    assert outcome.error is None, outcome.error
    seen = outcome.result
    assert seen["own"]["JOB_TOKEN"] == "t0k"
    assert set(seen["own"]) <= {"JOB_TOKEN", "PATH", "HOME", "LANG", "LC_CTYPE", "PWD"}
    assert "1/environ" in seen  # the namespace's pid 1 is the sandbox's own reaper
    dump = repr(seen)
    assert "worker-only-value" not in dump
    assert DB_PASSWORD not in dump


async def test_writing_outside_the_job_directory_fails(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = """
        import os

        def main(targets):
            outcome = {}
            for path in targets:
                try:
                    with open(path, "w") as f:
                        f.write("pwned")
                    outcome[path] = "written"
                except OSError as exc:
                    outcome[path] = type(exc).__name__
            with open("/job/mine.txt", "w") as f:
                f.write("ok")
            with open("/tmp/scratch.txt", "w") as f:
                f.write("ok")
            return outcome
    """
    targets = [
        "/usr/pwned",
        "/usr/bin/python3",
        "/etc/passwd",
        "/etc/pwned",
        "/pwned",
        "/proc/sys/kernel/hostname",
        "/proc/sysrq-trigger",
        str(data_dir.root / "pwned"),
        str(data_dir.password_file),
    ]
    workdir = data_dir.workdir()
    outcome, _ = await run(settings, workdir, code, args={"targets": targets})
    assert outcome.error is None, outcome.error
    assert "written" not in outcome.result.values(), outcome.result
    assert (workdir / "mine.txt").read_text() == "ok"
    assert not (data_dir.root / "pwned").exists()
    assert data_dir.password_file.read_text().strip() == DB_PASSWORD
    assert not Path("/pwned").exists()
    await assert_next_job_runs(settings, data_dir)


async def test_mount_and_new_namespaces_are_refused(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = """
        import ctypes, os

        libc = ctypes.CDLL(None, use_errno=True)

        def attempt(call):
            result = call()
            return 0 if result == 0 else os.strerror(ctypes.get_errno())

        def main():
            os.makedirs("/tmp/m", exist_ok=True)
            return {
                "mount": attempt(lambda: libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None)),
                "umount": attempt(lambda: libc.umount2(b"/proc", 2)),
                "unshare_user": attempt(lambda: libc.unshare(0x10000000)),
                "unshare_mount": attempt(lambda: libc.unshare(0x00020000)),
                "chroot": attempt(lambda: libc.chroot(b"/tmp")),
                "sethostname": attempt(lambda: libc.sethostname(b"x", 1)),
            }
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.error is None, outcome.error
    assert set(outcome.result.values()) == {"Operation not permitted"}, outcome.result
    # And with the shell's own tools.
    outcome, _ = await run(
        settings,
        data_dir.workdir(),
        'mount -t tmpfs none /tmp 2>&1; unshare -r true 2>&1; echo "status $?"\n',
        language="bash",
    )
    assert outcome.error is None, outcome.error
    assert outcome.result == "status 1"
    await assert_next_job_runs(settings, data_dir)


async def test_ptrace_and_reading_other_processes_memory_are_refused(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = """
        import ctypes, os, subprocess, sys, time

        libc = ctypes.CDLL(None, use_errno=True)
        PTRACE_ATTACH, PTRACE_TRACEME = 16, 0

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        def errno_of(result):
            return "ok" if result != -1 else os.strerror(ctypes.get_errno())

        def main():
            sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            try:
                buffer = ctypes.create_string_buffer(16)
                local = IoVec(ctypes.cast(buffer, ctypes.c_void_p), 16)
                remote = IoVec(0x400000, 16)
                return {
                    "attach_init": errno_of(libc.ptrace(PTRACE_ATTACH, 1, 0, 0)),
                    "attach_parent": errno_of(libc.ptrace(PTRACE_ATTACH, os.getppid(), 0, 0)),
                    "attach_sibling": errno_of(libc.ptrace(PTRACE_ATTACH, sibling.pid, 0, 0)),
                    "traceme": errno_of(libc.ptrace(PTRACE_TRACEME, 0, 0, 0)),
                    "process_vm_readv": errno_of(libc.process_vm_readv(
                        sibling.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)),
                }
            finally:
                sibling.kill()
                sibling.wait()
    """
    outcome, _ = await run(settings, data_dir.workdir(), code)
    assert outcome.error is None, outcome.error
    assert set(outcome.result.values()) == {"Operation not permitted"}, outcome.result
    await assert_next_job_runs(settings, data_dir)


async def test_kill_minus_one_only_reaches_the_job_itself(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        code = """
            sleep 60 &
            kill -9 -1
            wait
            echo "survived with $(ls /proc | grep -c '^[0-9]') processes"
        """
        outcome, _ = await run(settings, data_dir.workdir(), code, language="bash")
        assert outcome.error is None, outcome.error
        # Its own background job died; bash itself and the sandbox's pid 1 remain
        # (plus the ls and grep of the line itself).
        assert str(outcome.result).startswith("survived with ")
        assert bystander.poll() is None, "a process outside the sandbox was killed"
    finally:
        bystander.kill()
        bystander.wait()
    await assert_next_job_runs(settings, data_dir)


async def test_concurrent_jobs_see_neither_files_nor_processes_of_each_other(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    first_dir, second_dir = data_dir.workdir(), data_dir.workdir()
    code = """
        import os, time

        def main(me, other_dir, marker):
            with open("/job/secret.txt", "w") as f:
                f.write(marker)
            open("/tmp/" + marker, "w").close()
            deadline = time.monotonic() + 20
            while not os.path.exists("/job/go") and time.monotonic() < deadline:
                time.sleep(0.01)
            view = {"tmp": sorted(os.listdir("/tmp")), "processes": {}}
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        view["processes"][pid] = open(f"/proc/{pid}/cmdline").read()
                    except OSError:
                        pass
            try:
                view["other"] = open(other_dir + "/secret.txt").read()
            except OSError as exc:
                view["other"] = type(exc).__name__
            return view
    """
    first = asyncio.create_task(
        run(
            settings,
            first_dir,
            code,
            args={"me": "first", "other_dir": str(second_dir), "marker": "MARK-ONE"},
        )
    )
    second = asyncio.create_task(
        run(
            settings,
            second_dir,
            code,
            args={"me": "second", "other_dir": str(first_dir), "marker": "MARK-TWO"},
        )
    )
    for _ in range(2000):  # both are running once both wrote their secret
        if (first_dir / "secret.txt").exists() and (second_dir / "secret.txt").exists():
            break
        await asyncio.sleep(0.01)
    (first_dir / "go").touch()
    (second_dir / "go").touch()
    (one, _), (two, _) = await asyncio.gather(first, second)
    assert one.error is None, one.error
    assert two.error is None, two.error
    for view, mine, theirs in (
        (one.result, "MARK-ONE", "MARK-TWO"),
        (two.result, "MARK-TWO", "MARK-ONE"),
    ):
        assert view["other"] == "FileNotFoundError"
        assert mine in view["tmp"]
        assert theirs not in repr(view)
        assert set(view["processes"]) == {"1", "2"}  # the reaper and the job itself


async def test_a_job_cannot_signal_the_worker_or_its_files(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = """
        import os, signal

        def main(worker_pid):
            try:
                os.kill(worker_pid, signal.SIGKILL)
                return "signalled"
            except OSError as exc:
                return type(exc).__name__
    """
    outcome, _ = await run(settings, data_dir.workdir(), code, args={"worker_pid": os.getpid()})
    assert outcome.error is None, outcome.error
    # The worker's pid means nothing (or another job process) in the job's namespace.
    assert outcome.result in ("ProcessLookupError", "PermissionError")


async def test_exit_reasons_under_the_sandbox(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    killed, _ = await run(
        settings,
        data_dir.workdir(),
        "import os, signal\ndef main():\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    )
    assert killed.exit_reason is ExitReason.SIGNAL
    assert killed.error is not None
    assert killed.error.signal == signal.SIGKILL
    assert killed.error.name == "Signal"

    failed, _ = await run(settings, data_dir.workdir(), "exit 3\n", language="bash")
    assert failed.exit_reason is ExitReason.ERROR
    assert failed.exit_code == 3

    timed_out, _ = await run(
        settings, data_dir.workdir(), "import time\ndef main():\n    time.sleep(60)\n", timeout_s=1
    )
    assert timed_out.exit_reason is ExitReason.TIMEOUT

    cancel = asyncio.Event()

    async def on_log(text: str) -> None:
        if "started" in text:
            cancel.set()

    canceled, _ = await run(
        settings,
        data_dir.workdir(),
        "trap '' TERM\necho started\nsleep 60 & wait\n",
        language="bash",
        cancel=cancel,
        logs=Logs(on_log),
    )
    assert canceled.exit_reason is ExitReason.CANCELED
    await assert_next_job_runs(settings, data_dir)
