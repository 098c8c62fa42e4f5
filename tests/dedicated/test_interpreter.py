"""A warm interpreter in the real sandbox: isolation between jobs, warmness, limits.

Each job forks from the interpreter; what a job does to its process (globals, cwd,
environment), its files and its ``/tmp`` must be gone for the next one, while the
interpreter itself (pid namespace pid 2, the job's parent) stays the same process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gristmill.common.contracts.jobs import ExitReason
from gristmill.common.contracts.sandbox import SandboxRequest
from gristmill.common.queue import ClaimedJob
from gristmill.worker.dependencies import Prepared
from gristmill.worker.execution import ExecutionRequest, ExecutorSettings
from tests.dedicated.conftest import DataDir, pool, run_job
from tests.sandbox.conftest import DB_PASSWORD

#: The job's parent (its interpreter): pid and start time (clock ticks since boot).
PARENT = """
import os
import signal

def parent():
    with open(f"/proc/{os.getppid()}/stat", "rb") as f:
        raw = f.read()
    return [os.getppid(), int(raw[raw.rfind(b")") + 2 :].split()[19])]
"""


async def test_jobs_get_their_own_args_env_and_globals_from_one_process(
    started_interpreter: Any,
) -> None:
    interpreter = await started_interpreter(
        PARENT
        + """
SEEN = []

def main(n):
    SEEN.append(n)
    os.environ["LEFT_BY"] = str(n)
    os.chdir("/tmp")
    print("job", n)
    env = os.environ
    return {"seen": SEEN, "token": env.get("WM_TOKEN"), "left": env.get("LEFT_BY"),
            "parent": parent(), "home": env["HOME"]}
"""
    )
    parents = set()
    for n in range(20):
        outcome, logs = await run_job(interpreter, args={"n": n}, env={"WM_TOKEN": f"token-{n}"})
        assert outcome.error is None, outcome.error
        result = outcome.result
        assert result["seen"] == [n]  # the global list is fresh in every job
        assert result["token"] == f"token-{n}"
        assert result["left"] == str(n)
        assert result["home"].startswith("/job/")
        assert logs.text == f"job {n}\n"
        parents.add(tuple(result["parent"]))
    assert len(parents) == 1, parents  # one warm process was the parent of every job
    assert interpreter.jobs == 20
    assert interpreter.retired is None


async def test_an_environment_variable_of_a_job_is_not_in_the_next(
    started_interpreter: Any,
) -> None:
    interpreter = await started_interpreter(
        """
        import os

        def main():
            return sorted(os.environ)
        """
    )
    first, _ = await run_job(interpreter, env={"WM_TOKEN": "first-job-token", "ONLY_FIRST": "1"})
    second, _ = await run_job(interpreter, env={"WM_TOKEN": "second-job-token"})
    assert "ONLY_FIRST" in first.result
    assert "ONLY_FIRST" not in second.result
    assert set(second.result) == {"HOME", "LANG", "PATH", "WM_TOKEN"}


async def test_a_job_finds_nothing_of_the_previous_job(started_interpreter: Any) -> None:
    """Files, ``/tmp``, processes and the previous job's token are gone; the interpreter's
    own memory cannot be read (it is not dumpable)."""
    interpreter = await started_interpreter(
        """
        import os, subprocess

        def main(phase):
            if phase == "plant":
                open("/tmp/left-behind", "w").write(os.environ["WM_TOKEN"])
                open("/job/next-to-mine", "w").write(os.environ["WM_TOKEN"])
                subprocess.Popen(["sleep", "300"], start_new_session=True)
                return os.getcwd()
            found = []
            for root in ("/job", "/tmp", "/dev/shm"):
                for directory, _, files in os.walk(root):
                    for name in files:
                        try:
                            path = os.path.join(directory, name)
                            found.append(open(path, errors="replace").read())
                        except OSError:
                            pass
            try:
                open("/proc/2/mem", "rb").read(1)
                memory = "readable"
            except OSError as exc:
                memory = type(exc).__name__
            mine = (1, 2, os.getpid())
            others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in mine]
            return {"found": found, "memory": memory, "others": others, "cwd": os.getcwd()}
        """
    )
    planted, _ = await run_job(interpreter, args={"phase": "plant"}, env={"WM_TOKEN": "secret-1"})
    assert planted.error is None, planted.error
    looked, _ = await run_job(interpreter, args={"phase": "look"}, env={"WM_TOKEN": "secret-2"})
    assert looked.error is None, looked.error
    result = looked.result
    assert not any("secret-1" in text for text in result["found"]), result["found"]
    assert result["memory"] == "PermissionError"
    assert result["others"] == []  # the leftover sleep was killed with its job
    assert result["cwd"] != planted.result


async def test_hostile_reads_fail_in_a_warm_interpreter(
    started_interpreter: Any, data_dir: DataDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRISTMILL_DATABASE_URL", f"postgresql://admin:{DB_PASSWORD}@db/x")
    interpreter = await started_interpreter(
        """
        import os

        def main(paths):
            read = {}
            for path in paths:
                try:
                    with open(path, errors="replace") as f:
                        read[path] = f.read()
                except OSError as exc:
                    read[path] = type(exc).__name__
            return {"read": read, "env": dict(os.environ)}
        """
    )
    paths = [
        "/etc/shadow",
        str(data_dir.password_file),
        str(data_dir.master_key),
        "/proc/1/environ",
        "/proc/2/environ",
    ]
    outcome, _ = await run_job(interpreter, args={"paths": paths}, env={"WM_TOKEN": "t"})
    assert outcome.error is None, outcome.error
    text = repr(outcome.result)
    assert DB_PASSWORD not in text
    assert "AAAA" not in text  # the master key
    assert "GRISTMILL_DATABASE_URL" not in text
    assert outcome.result["read"]["/etc/shadow"] in ("FileNotFoundError", "PermissionError")
    assert set(outcome.result["env"]) == {"HOME", "LANG", "PATH", "WM_TOKEN"}


async def test_a_timeout_kills_only_the_job(started_interpreter: Any) -> None:
    interpreter = await started_interpreter(
        PARENT
        + """
import time

def main(sleep):
    print("started", flush=True)
    time.sleep(sleep)
    return parent()
"""
    )
    before, _ = await run_job(interpreter, args={"sleep": 0})
    outcome, logs = await run_job(interpreter, args={"sleep": 60}, timeout_s=0.5)
    assert outcome.error is not None
    assert outcome.exit_reason == ExitReason.TIMEOUT
    assert outcome.error.name == "Timeout"
    assert logs.text == "started\n"
    after, _ = await run_job(interpreter, args={"sleep": 0})
    assert after.error is None, after.error
    assert after.result == before.result  # the same interpreter
    assert interpreter.retired is None


async def test_cancel_kills_only_the_job(started_interpreter: Any) -> None:
    interpreter = await started_interpreter(
        """
        import time

        def main(sleep):
            time.sleep(sleep)
            return "slept"
        """
    )
    cancel = asyncio.Event()
    job = asyncio.create_task(run_job(interpreter, args={"sleep": 60}, cancel=cancel))
    await asyncio.sleep(0.3)
    cancel.set()
    outcome, _ = await asyncio.wait_for(job, 20)
    assert outcome.exit_reason == ExitReason.CANCELED
    after, _ = await run_job(interpreter, args={"sleep": 0})
    assert after.result == "slept"
    assert interpreter.jobs == 2


@pytest.mark.parametrize(
    ("crash", "name", "reason"),
    [
        ("os._exit(0)", "ExitCode", ExitReason.ERROR),
        ("os._exit(3)", "ExitCode", ExitReason.ERROR),
        ("ctypes.string_at(0)", "Signal", ExitReason.SIGNAL),  # a segfault
    ],
)
async def test_a_crash_fails_the_job_and_retires_the_interpreter(
    started_interpreter: Any, crash: str, name: str, reason: ExitReason
) -> None:
    interpreter = await started_interpreter(
        f"""
        import ctypes, os

        def main():
            print("about to crash", flush=True)
            {crash}
        """
    )
    outcome, logs = await run_job(interpreter)
    assert outcome.error is not None
    assert outcome.error.name == name, outcome.error
    assert outcome.exit_reason == reason
    assert "about to crash" in logs.text
    assert interpreter.retired == "crash"


async def test_the_pool_recycles_after_max_jobs_and_on_crash(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    warm = pool(settings, data_dir, max_jobs=3)
    code = (
        PARENT
        + "\ndef main(crash=False):\n    if crash:\n        os._exit(1)\n    return parent()\n"
    )
    parents: list[tuple[int, int]] = []
    try:
        for n in range(8):
            crash = n == 4
            job, request = _job(code, {"crash": crash})
            outcome = await warm.execute(
                job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
            )
            if crash:
                assert outcome.error is not None
                continue
            assert outcome.error is None, outcome.error
            parents.append(tuple(outcome.result))
        # jobs 0-2 on the first, 3 and the crash (4) on the second, 5-7 on the third
        assert [len({*parents[:3]}), len({*parents[3:4]}), len({*parents[4:]})] == [1, 1, 1]
        assert len(set(parents)) == 3
        assert warm.started == 3
        assert warm.retired["jobs"] == 2  # the first and the third, after their 3rd job
        assert warm.retired["crash"] == 1
    finally:
        await warm.close()
    assert not list((data_dir.jobs / "dedicated").iterdir())  # nothing left behind


async def test_the_pool_recycles_an_interpreter_grown_too_large(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    warm = pool(settings, data_dir, max_rss_mb=1)  # any interpreter is larger
    try:
        for _ in range(3):
            job, request = _job("def main():\n    return 1\n", {})
            outcome = await warm.execute(
                job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
            )
            assert outcome.result == 1
        assert warm.started == 3
        assert warm.retired["memory"] == 3
    finally:
        await warm.close()


async def test_a_new_version_of_the_script_gets_a_new_interpreter(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    warm = pool(settings, data_dir)
    try:
        for version in (1, 1, 2, 2):
            job, request = _job(f"def main():\n    return {version}\n", {})
            outcome = await warm.execute(
                job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
            )
            assert outcome.result == version
        assert warm.started == 2
        assert warm.retired["new_version"] == 1
        assert len(warm.idle) == 1
    finally:
        await warm.close()


async def test_top_level_imports_are_done_once_and_errors_reported_by_the_job(
    started_interpreter: Any,
) -> None:
    interpreter = await started_interpreter(
        """
        import sys
        import decimal
        import no_such_module_here

        def main():
            return "unreachable"
        """
    )
    assert interpreter.ready is not None
    assert "decimal" not in interpreter.ready.warmup_errors
    assert any("no_such_module_here" in error for error in interpreter.ready.warmup_errors)
    outcome, _ = await run_job(interpreter)
    assert outcome.error is not None
    assert outcome.error.name == "ModuleNotFoundError"
    assert outcome.error.location == "line 4"
    assert interpreter.retired is None  # an error of the job, not a crash


# -- helpers ----------------------------------------------------------------------------


async def _ignore(text: str) -> None:
    del text


def _prepared() -> Prepared:
    return Prepared()


def _job(code: str, args: dict[str, Any]) -> tuple[ClaimedJob, ExecutionRequest]:
    job_id = uuid.uuid4()
    now = datetime.now(UTC)
    job = ClaimedJob(
        id=job_id,
        worker="w",
        attempt=1,
        restarts=0,
        started_at=now,
        workspace="main",
        kind="script",
        tag="main:u/admin/warm",
        priority=0,
        created_by="tester",
        trigger_kind="api",
        args=args,
        created_at=now,
        runnable_path="u/admin/warm",
        language="python3",
        code=code,
    )
    request = ExecutionRequest(
        job_id=job_id,
        language="python3",
        code=code,
        args=args,
        env={},
        timeout_s=30,
        workdir=Path(os.devnull),
    )
    return job, request


async def test_an_interpreter_that_died_while_idle_is_replaced(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    warm = pool(settings, data_dir)
    code = PARENT + "\ndef main():\n    return parent()\n"
    try:
        job, request = _job(code, {})
        first = await warm.execute(
            job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
        )
        assert first.error is None, first.error
        (idle,) = warm.idle
        os.kill(idle.host_pid, signal.SIGKILL)  # the sandbox goes with its first process
        async with asyncio.timeout(10):
            while idle.alive:  # noticed by the worker's loop (a death racing the next job's
                await asyncio.sleep(0.01)  # hand-off fails that job: InterpreterDied)
        job, request = _job(code, {})
        second = await warm.execute(
            job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
        )
        assert second.error is None, second.error
        assert second.result != first.result
        assert warm.started == 2
        assert warm.retired["died"] == 1
    finally:
        await warm.close()


async def test_without_the_sandbox_jobs_still_fork_from_a_warm_interpreter(
    data_dir: DataDir,
) -> None:
    """The insecure mode (no bubblewrap): same protocol, the job's process group only."""
    warm = pool(ExecutorSettings(kill_grace_s=0.5), data_dir)
    code = "import os\nSEEN = []\n\ndef main(n):\n    SEEN.append(n)\n"
    code += "    return [SEEN, os.getppid()]\n"
    try:
        results = []
        for n in range(3):
            job, request = _job(code, {"n": n})
            outcome = await warm.execute(
                job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
            )
            assert outcome.error is None, outcome.error
            results.append(outcome.result)
        assert [seen for seen, _ in results] == [[0], [1], [2]]
        assert len({parent for _, parent in results}) == 1
        assert warm.started == 1
    finally:
        await warm.close()


async def test_a_memory_bomb_is_an_oom_and_the_next_job_runs(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    assert settings.sandbox is not None
    if settings.sandbox.cgroups is None or settings.sandbox.cgroups.memory is None:
        pytest.fail(f"no memory cgroup on this host: {settings.sandbox.notes}")
    warm = pool(settings, data_dir)
    code = "def main(mb):\n    block = b'x' * (mb * 1024 * 1024)\n    return len(block)\n"
    try:
        job, request = _job(code, {"mb": 600})  # the limit is 256 MiB (tests/sandbox)
        bomb = await warm.execute(job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event())
        assert bomb.error is not None
        assert bomb.exit_reason == ExitReason.OOM, bomb.error
        job, request = _job(code, {"mb": 1})
        after = await warm.execute(
            job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
        )
        assert after.error is None, after.error
        assert after.result == 1024 * 1024
        assert warm.retired["crash"] == 1
    finally:
        await warm.close()


def test_a_new_pool_removes_what_dead_workers_left(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    base = data_dir.jobs / "dedicated"
    dead = base / "999999999-0123456789ab-deadbeef"  # no such pid
    (dead / "job").mkdir(parents=True)
    (dead / "job" / ".gristmill").mkdir()
    (dead / "job" / ".gristmill" / "env.marshal").write_bytes(b"a token")
    alive = base / f"{os.getpid()}-0123456789ab-cafecafe"
    alive.mkdir()
    pool(settings, data_dir)
    assert not dead.exists()
    assert alive.exists()


async def test_cancel_while_the_interpreter_warms_up(
    settings: ExecutorSettings, data_dir: DataDir, tmp_path: Path
) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "slow_to_import.py").write_text("import time\ntime.sleep(60)\n")
    packages.chmod(0o755)
    warm = pool(settings, data_dir)
    job, request = _job("import slow_to_import\n\ndef main():\n    return 1\n", {})
    cancel = asyncio.Event()
    try:
        running = asyncio.create_task(
            warm.execute(
                job,
                request,
                Prepared(python_path=(str(packages),)),
                on_log=_ignore,
                cancel=cancel,
            )
        )
        await asyncio.sleep(0.5)
        cancel.set()
        outcome = await asyncio.wait_for(running, 15)
        assert outcome.exit_reason == ExitReason.CANCELED
        assert warm.started == 0
        assert warm.idle == []
    finally:
        await warm.close()
    assert not list((data_dir.jobs / "dedicated").iterdir())  # the abandoned start is gone


async def test_a_script_without_network_gets_a_warm_interpreter_without_network(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    """A script's own sandbox setting holds in dedicated mode too: its interpreter is
    started without the network, and a job with the group's network gets another."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = (
        PARENT
        + "import socket\n\ndef main(port):\n"
        + "    try:\n"
        + "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
        + "        return [True, parent()]\n"
        + "    except OSError:\n"
        + "        return [False, parent()]\n"
    )
    warm = pool(settings, data_dir)
    try:
        outcomes = []
        for network in ("none", None, "none"):
            job, request = _job(code, {"port": port})
            if network is not None:
                request = msgspec.structs.replace(request, sandbox=SandboxRequest(network=network))
            outcome = await warm.execute(
                job, request, _prepared(), on_log=_ignore, cancel=asyncio.Event()
            )
            assert outcome.error is None, outcome.error
            outcomes.append(outcome.result)
    finally:
        await warm.close()
        server.close()
        await server.wait_closed()
    assert [reached for reached, _ in outcomes] == [False, True, False]
    # A different setting is a different interpreter: never the offline one for the
    # online job, nor the other way round.
    assert outcomes[0][1] != outcomes[1][1]
    assert outcomes[1][1] != outcomes[2][1]
