"""A warm Bun interpreter in the real sandbox: isolation between jobs, warmness,
errors as a cold job's, crashes, timeouts and cancel.

Bun runs every job in the interpreter's own process, so the process stays the same
(its start time, read from ``/proc/self/stat``, proves it: inside the sandbox its pid
is always 2), while the script's module, the environment, the globals a job adds and
whatever it started must be new or gone for the next job.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from gristmill.common.contracts.jobs import ExitReason, JobError
from gristmill.common.queue import ClaimedJob
from gristmill.worker.dedicated import DedicatedSettings, WarmInterpreter, WarmPool
from gristmill.worker.dedicated import bun as bun_template
from gristmill.worker.dependencies import Prepared
from gristmill.worker.execution import (
    ExecutionOutcome,
    ExecutionRequest,
    ExecutorSettings,
    execute,
)
from tests.dedicated.conftest import DataDir, spec
from tests.sandbox.conftest import Logs

#: The interpreter's process: its pid and its start time (clock ticks since boot).
PROCESS = """
import { readFileSync } from "node:fs";

function myProcess(): [number, number] {
  const raw = readFileSync("/proc/self/stat", "latin1");
  return [process.pid, Number(raw.slice(raw.lastIndexOf(")") + 2).split(" ")[19])];
}
"""


class Bun:
    """Starts warm Bun interpreters and runs jobs in them; closes them at the end."""

    def __init__(self, settings: ExecutorSettings, data_dir: DataDir) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.started: list[WarmInterpreter] = []

    async def start(self, code: str) -> WarmInterpreter:
        interpreter = await WarmInterpreter.start(
            spec(textwrap.dedent(code), language="bun"),
            settings=self.settings,
            base_dir=self.data_dir.jobs / "dedicated",
        )
        self.started.append(interpreter)
        return interpreter

    async def cold(
        self, code: str, *, args: dict[str, Any] | None = None
    ) -> tuple[ExecutionOutcome, Logs]:
        """The same job as an ordinary (cold) sandboxed one."""
        logs = Logs()
        outcome = await execute(
            _request(textwrap.dedent(code), args, {}, 30, self.data_dir.workdir()),
            on_log=logs,
            cancel=asyncio.Event(),
            settings=self.settings,
        )
        return outcome, logs

    def pool(self, **changes: Any) -> WarmPool:
        values: dict[str, Any] = {"scripts": ("main:u/admin/warm",)}
        values.update(changes)
        return WarmPool(
            DedicatedSettings(**values), self.settings, self.data_dir.jobs / "dedicated"
        )


@pytest_asyncio.fixture(loop_scope="session")
async def bun(settings: ExecutorSettings, data_dir: DataDir) -> AsyncIterator[Bun]:
    started = Bun(settings, data_dir)
    yield started
    for interpreter in started.started:
        await interpreter.close()


def _request(
    code: str,
    args: dict[str, Any] | None,
    env: dict[str, str] | None,
    timeout_s: float,
    workdir: Path = Path("/nonexistent"),  # a warm job gets a directory of the interpreter's
) -> ExecutionRequest:
    return ExecutionRequest(
        job_id=uuid.uuid4(),
        language="bun",
        code=code,
        args=args or {},
        env=env or {},
        timeout_s=timeout_s,
        workdir=workdir,
    )


async def run(
    interpreter: WarmInterpreter,
    *,
    args: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    cancel: asyncio.Event | None = None,
) -> tuple[ExecutionOutcome, Logs]:
    logs = Logs()
    request = _request(interpreter.spec.code, args, env, timeout_s)
    outcome = await interpreter.run(request, on_log=logs, cancel=cancel or asyncio.Event())
    return outcome, logs


def _same_error(warm: JobError | None, cold: JobError | None) -> None:
    assert warm is not None
    assert cold is not None
    assert (warm.name, warm.message, warm.location, warm.exit_reason, warm.exit_code) == (
        cold.name,
        cold.message,
        cold.location,
        cold.exit_reason,
        cold.exit_code,
    )


# -- isolation between jobs -------------------------------------------------------------


async def test_two_hundred_jobs_on_one_process_each_see_only_their_own_state(bun: Bun) -> None:
    interpreter = await bun.start(
        PROCESS
        + """
import { execSync } from "node:child_process";

const SEEN: number[] = [];
let calls = 0;

export async function main(n: number) {
  SEEN.push(n);
  calls++;
  const before = (globalThis as any).leftByAJob;
  const envBefore = process.env.SET_BY_A_JOB;
  (globalThis as any).leftByAJob = n;
  process.env.SET_BY_A_JOB = String(n);
  console.log(`job ${n}`);
  console.error(`to stderr ${n}`);
  return {
    seen: SEEN,
    calls,
    before: before ?? null,
    envBefore: envBefore ?? null,
    token: process.env.WM_TOKEN,
    bunEnv: Bun.env.WM_TOKEN,
    only: process.env[`ONLY_${n}`] ?? null,
    others: Object.keys(process.env).filter((key) => key.startsWith("ONLY_")),
    spawned: Bun.spawnSync(["sh", "-c", "echo $WM_TOKEN"]).stdout.toString().trim(),
    child: execSync("echo $WM_TOKEN").toString().trim(),
    cwd: process.cwd(),
    home: process.env.HOME,
    process: myProcess(),
  };
}
"""
    )
    processes = set()
    for n in range(200):
        token = f"token-{n}-{uuid.uuid4()}"
        outcome, logs = await run(
            interpreter, args={"n": n}, env={"WM_TOKEN": token, f"ONLY_{n}": "yes"}
        )
        assert outcome.error is None, outcome.error
        result = outcome.result
        assert result["seen"] == [n]  # the module's state is fresh in every job
        assert result["calls"] == 1
        assert result["before"] is None  # the global the previous job added is gone
        assert result["envBefore"] is None  # and so is the variable it set
        assert result["token"] == result["bunEnv"] == token
        assert result["spawned"] == result["child"] == token  # its children get its env
        assert result["only"] == "yes"
        assert result["others"] == [f"ONLY_{n}"]  # nothing of another job's environment
        assert result["cwd"] == result["home"]
        assert result["cwd"].startswith("/job/")
        assert logs.text == f"job {n}\nto stderr {n}\n"
        processes.add(tuple(result["process"]))
    assert len(processes) == 1, processes  # one warm process ran all 200 jobs
    assert interpreter.jobs == 200
    assert interpreter.retired is None


async def test_timers_processes_and_files_a_job_leaves_are_gone(bun: Bun) -> None:
    interpreter = await bun.start(
        """
        import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";

        // The small files (what a job plants); not the caches the warm-up keeps.
        function contents(directory: string, found: string[]): string[] {
          for (const name of readdirSync(directory)) {
            const path = `${directory}/${name}`;
            try {
              const stat = statSync(path);
              if (stat.isDirectory()) contents(path, found);
              else if (stat.size < 4096) found.push(readFileSync(path, "utf8"));
            } catch {}
          }
          return found;
        }

        export async function main(phase: string) {
          if (phase === "leave") {
            setInterval(() => console.log("tick from the first job"), 5);
            setTimeout(() => console.log("timeout from the first job"), 50);
            Bun.spawn(["sleep", "300"]);
            writeFileSync("/tmp/left-behind", process.env.WM_TOKEN!);
            writeFileSync("/dev/shm/left-behind", process.env.WM_TOKEN!);
            writeFileSync("/job/next-to-mine", process.env.WM_TOKEN!);
            return "left";
          }
          await Bun.sleep(200);
          const me = [1, process.pid];
          const found: string[] = [];
          for (const root of ["/job", "/tmp", "/dev/shm"]) contents(root, found);
          return {
            // Live ones only: a killed child may still await its reaping (a zombie).
            others: readdirSync("/proc").filter((name) => /^\\d+$/.test(name))
              .map(Number).filter((pid) => !me.includes(pid))
              .filter((pid) => {
                try {
                  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
                  return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
                } catch {
                  return false; // gone meanwhile
                }
              }),
            planted: found.filter((text) => text === "secret-1").length,
            job: readdirSync("/job").length,
          };
        }
        """
    )
    left, _ = await run(interpreter, args={"phase": "leave"}, env={"WM_TOKEN": "secret-1"})
    assert left.result == "left", left.error
    looked, logs = await run(interpreter, args={"phase": "look"}, env={"WM_TOKEN": "secret-2"})
    assert looked.error is None, looked.error
    assert logs.text == ""  # no timer of the first job fired in the second
    # The sleep was killed, the files are gone, /job holds only its own directory.
    assert looked.result == {"others": [], "planted": 0, "job": 1}
    assert interpreter.retired is None


async def test_a_job_that_changes_a_built_in_retires_its_interpreter(bun: Bun) -> None:
    """Prototype pollution does not reach the next job: the interpreter that saw it
    serves no other."""
    warm = bun.pool()
    code = PROCESS + textwrap.dedent(
        """
        export function main(pollute: boolean) {
          const before = ({} as any).polluted ?? null;
          if (pollute) (Object.prototype as any).polluted = "yes";
          return { before, process: myProcess() };
        }
        """
    )
    try:
        outcomes = [
            await _pool_run(warm, code, {"pollute": pollute}) for pollute in (False, True, False)
        ]
    finally:
        await warm.close()
    assert [o.error for o in outcomes] == [None, None, None]
    assert [o.result["before"] for o in outcomes] == [None, None, None]
    assert outcomes[0].result["process"] == outcomes[1].result["process"]
    assert outcomes[2].result["process"] != outcomes[1].result["process"]
    assert warm.retired["globals"] == 1
    assert warm.started == 2


async def test_ordinary_use_of_the_runtime_keeps_the_interpreter(bun: Bun) -> None:
    """Bun's lazily made globals and objects do not look like a job's changes."""
    interpreter = await bun.start(
        """
        import { createHash } from "node:crypto";
        import path from "node:path";

        export async function main() {
          const used: unknown[] = [createHash("sha256").update("x").digest("hex")];
          used.push(path.join("a", "b"), await (await fetch("data:text/plain,hi")).text());
          used.push((await Bun.$`echo shell`.text()).trim(), new Response("r").status);
          used.push(crypto.randomUUID(), structuredClone({ a: 1 }), new URL("http://a/b").href);
          used.push(new TextEncoder().encode("x"), Buffer.from("x").toString("base64"));
          await Bun.write("/tmp/f.txt", "hello");
          used.push(await Bun.file("/tmp/f.txt").text(), new Intl.DateTimeFormat("en").format(0));
          used.push(typeof WebSocket, typeof Bun.sql, typeof Bun.s3, typeof Bun.Glob);
          const server = Bun.serve({ port: 0, fetch: () => new Response("ok") });
          used.push(await (await fetch(`http://127.0.0.1:${server.port}/`)).text());
          server.stop(true);
          console.table([{ a: 1 }]);
          used.push(Bun.inspect(new Map([[1, 2]])), await new Blob(["y"]).text());
          used.push(typeof (await import("node:util")).inspect, typeof require("node:os").cpus);
          return used.length;
        }
        """
    )
    for _ in range(3):
        outcome, _ = await run(interpreter)
        assert outcome.error is None, outcome.error
        assert outcome.result == 21
        assert interpreter.retired is None


async def test_an_error_from_work_a_job_left_running_ends_the_idle_interpreter(
    bun: Bun,
) -> None:
    """Work other than timers outlives the job (not isolated, see ADR 0011); an error
    from it between jobs ends the interpreter, and the pool starts another."""
    warm = bun.pool()
    code = PROCESS + textwrap.dedent(
        """
        export function main(leave: boolean) {
          if (leave) Bun.sleep(200).then(() => { throw new Error("late"); });
          return myProcess();
        }
        """
    )
    try:
        first = await _pool_run(warm, code, {"leave": True})
        assert first.error is None, first.error
        (idle,) = warm.idle
        async with asyncio.timeout(10):
            while idle.alive:
                await asyncio.sleep(0.02)
        second = await _pool_run(warm, code, {"leave": False})
        assert second.error is None, second.error
        assert second.result != first.result
        assert warm.retired["died"] == 1
        assert warm.started == 2
    finally:
        await warm.close()


# -- errors and crashes ---------------------------------------------------------------


async def test_a_thrown_error_has_the_shape_of_a_cold_jobs(bun: Bun) -> None:
    code = """
        class QuotaError extends Error {
          name = "QuotaError";
        }

        function check(n: number): void {
          if (n > 3) {
            throw new QuotaError(`too many: ${n}`, { cause: new TypeError("inner") });
          }
        }

        export async function main(n: number) {
          await Promise.resolve();
          check(n);
          return n;
        }
    """
    interpreter = await bun.start(code)
    warm, _ = await run(interpreter, args={"n": 5})
    cold, _ = await bun.cold(code, args={"n": 5})
    _same_error(warm.error, cold.error)
    assert warm.error is not None
    assert cold.error is not None
    assert warm.error.stack == cold.error.stack
    assert warm.error.location is not None
    assert warm.error.location.startswith("line 8, column ")
    assert "bun_template" not in (warm.error.stack or "")
    assert "typescript_bootstrap" not in (warm.error.stack or "")
    assert warm.exit_code == cold.exit_code == 1
    again, _ = await run(interpreter, args={"n": 1})
    assert again.result == 1  # an error of the job, not of the interpreter
    assert interpreter.retired is None


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("export function main() { return 10n; }\n", "ResultNotSerializable"),
        (
            'import { helper } from "./helper.ts";\nexport function main() { return helper(); }\n',
            "ImportError",
        ),
        ("export function main(a: number) {\n  const x = ;\n}\n", "SyntaxError"),
        ("export const main = 42;\n", "MissingMain"),
    ],
)
async def test_other_failures_have_the_shape_of_a_cold_jobs(bun: Bun, code: str, name: str) -> None:
    interpreter = await bun.start(code)
    warm, _ = await run(interpreter)
    cold, _ = await bun.cold(code)
    _same_error(warm.error, cold.error)
    assert warm.error is not None
    assert warm.error.name == name


async def test_an_error_escaping_the_job_fails_it_and_retires_the_interpreter(bun: Bun) -> None:
    code = """
        export async function main() {
          setTimeout(() => { throw new RangeError("nobody waits for me"); }, 10);
          await new Promise((resolve) => setTimeout(resolve, 5000));
          return "not reached";
        }
    """
    interpreter = await bun.start(code)
    warm, _ = await run(interpreter)
    cold, _ = await bun.cold(code)
    _same_error(warm.error, cold.error)
    assert interpreter.retired == "uncaught"


@pytest.mark.parametrize(
    ("crash", "name", "reason"),
    [
        ("process.exit(0)", "ExitCode", ExitReason.ERROR),
        ("process.exit(3)", "ExitCode", ExitReason.ERROR),
        ('process.kill(process.pid, "SIGSEGV")', "Signal", ExitReason.SIGNAL),
        ("process.abort()", "Signal", ExitReason.SIGNAL),
    ],
)
async def test_a_crash_fails_the_job_as_a_cold_one_and_retires_the_interpreter(
    bun: Bun, crash: str, name: str, reason: ExitReason
) -> None:
    code = f"""
        export async function main() {{
          console.log("about to crash");
          {crash};
          await Bun.sleep(1000);
          return "not reached";
        }}
    """
    interpreter = await bun.start(code)
    warm, logs = await run(interpreter)
    cold, _ = await bun.cold(code)
    assert warm.error is not None
    assert cold.error is not None
    assert warm.error.name == name, warm.error
    assert warm.exit_reason == reason
    assert (warm.error.name, warm.error.message, warm.error.signal) == (
        cold.error.name,
        cold.error.message,
        cold.error.signal,
    )
    assert "about to crash" in logs.text
    assert interpreter.retired == "crash"
    assert not interpreter.alive


async def test_the_pool_replaces_a_crashed_interpreter_and_recycles_after_max_jobs(
    bun: Bun,
) -> None:
    warm = bun.pool(max_jobs=3)
    code = PROCESS + textwrap.dedent(
        """
        export function main(crash: boolean) {
          if (crash) process.exit(9);
          return myProcess();
        }
        """
    )
    processes: list[tuple[int, int]] = []
    try:
        for n in range(8):
            outcome = await _pool_run(warm, code, {"crash": n == 4})
            if n == 4:
                assert outcome.error is not None
                assert outcome.error.message == "bun exited with code 9 without writing a result"
                continue
            assert outcome.error is None, outcome.error
            processes.append(tuple(outcome.result))
    finally:
        await warm.close()
    # jobs 0-2 on the first, 3 and the crash (4) on the second, 5-7 on the third
    assert [len({*processes[:3]}), len({*processes[3:4]}), len({*processes[4:]})] == [1, 1, 1]
    assert len(set(processes)) == 3
    assert warm.started == 3
    assert warm.retired["jobs"] == 2
    assert warm.retired["crash"] == 1
    assert not list((bun.data_dir.jobs / "dedicated").iterdir())  # nothing left behind


async def test_a_memory_bomb_is_an_oom_and_the_next_job_runs(bun: Bun) -> None:
    assert bun.settings.sandbox is not None
    if bun.settings.sandbox.cgroups is None or bun.settings.sandbox.cgroups.memory is None:
        pytest.fail(f"no memory cgroup on this host: {bun.settings.sandbox.notes}")
    warm = bun.pool()
    code = """
        export function main(mb: number) {
          const blocks = [];
          for (let i = 0; i < mb / 16; i++) blocks.push(new Uint8Array(16 << 20).fill(1));
          return blocks.length * 16;
        }
    """
    try:
        bomb = await _pool_run(warm, textwrap.dedent(code), {"mb": 1024})  # the limit: 256 MiB
        assert bomb.error is not None
        assert bomb.exit_reason == ExitReason.OOM, bomb.error
        after = await _pool_run(warm, textwrap.dedent(code), {"mb": 16})
        assert after.error is None, after.error
        assert after.result == 16
        assert warm.retired["crash"] == 1
    finally:
        await warm.close()


# -- timeouts and cancel ----------------------------------------------------------------


async def test_a_timeout_stops_the_job_with_its_interpreter(bun: Bun) -> None:
    warm = bun.pool()
    code = PROCESS + textwrap.dedent(
        """
        export async function main(sleep: number) {
          console.log("started");
          await Bun.sleep(sleep);
          return myProcess();
        }
        """
    )
    try:
        before = await _pool_run(warm, code, {"sleep": 0})
        logs = Logs()
        timed_out = await _pool_run(warm, code, {"sleep": 60_000}, timeout_s=0.5, logs=logs)
        assert timed_out.error is not None
        assert timed_out.exit_reason == ExitReason.TIMEOUT
        assert timed_out.error.name == "Timeout"
        assert timed_out.error.message == "job timed out after 0.5 s and was killed"
        assert timed_out.error.signal == 15  # it ended on SIGTERM, within the grace period
        assert logs.text == "started\n"
        after = await _pool_run(warm, code, {"sleep": 0})
        assert after.error is None, after.error
        assert after.result != before.result  # a new interpreter
        assert warm.retired["killed"] == 1
    finally:
        await warm.close()


async def test_a_busy_loop_is_killed_after_the_grace_period(bun: Bun) -> None:
    interpreter = await bun.start(
        """
        process.on("SIGTERM", () => console.log("ignoring SIGTERM"));

        export function main() {
          console.log("spinning");
          for (;;) {}
        }
        """
    )
    outcome, logs = await run(interpreter, timeout_s=0.5)
    assert outcome.exit_reason == ExitReason.TIMEOUT
    assert outcome.error is not None
    assert outcome.error.signal == 9
    assert logs.text.startswith("spinning\n")
    assert interpreter.retired == "killed"


async def test_cancel_stops_the_job_with_its_interpreter(bun: Bun) -> None:
    interpreter = await bun.start(
        """
        export async function main() {
          console.log("waiting");
          await Bun.sleep(60_000);
          return "slept";
        }
        """
    )
    cancel = asyncio.Event()
    job = asyncio.create_task(run(interpreter, cancel=cancel))
    await asyncio.sleep(0.5)
    cancel.set()
    outcome, logs = await asyncio.wait_for(job, 20)
    assert outcome.exit_reason == ExitReason.CANCELED
    assert outcome.error is not None
    assert outcome.error.name == "Canceled"
    assert logs.text == "waiting\n"
    assert interpreter.retired == "killed"
    assert not interpreter.alive


# -- warm-up, arguments, output ----------------------------------------------------------


async def test_arguments_and_dates_arrive_as_for_a_cold_job(bun: Bun) -> None:
    code = """
        export async function main(name: string, when: Date, count = 2) {
          return { name, year: when.getUTCFullYear(), isDate: when instanceof Date, count };
        }
    """
    interpreter = await bun.start(code)
    args = {"name": "ada", "when": "2024-05-01T00:00:00Z"}
    warm, _ = await run(interpreter, args=args)
    cold, _ = await bun.cold(code, args=args)
    assert warm.result == cold.result == {"name": "ada", "year": 2024, "isDate": True, "count": 2}


async def test_output_still_being_written_when_main_returns_is_the_jobs(bun: Bun) -> None:
    """``process.stdout.write`` to a pipe returns before its bytes are written: all of
    them reach the job's log, none the next job's."""
    interpreter = await bun.start(
        """
        export function main(size: number) {
          if (size) process.stdout.write("x".repeat(size) + "\\n");
          else console.log("second");
        }
        """
    )
    first, first_logs = await run(interpreter, args={"size": 1_500_000})
    second, second_logs = await run(interpreter, args={"size": 0})
    assert first.error is None, first.error
    assert second.error is None, second.error
    assert first_logs.text == "x" * 1_500_000 + "\n"
    assert first.log_bytes == 1_500_001
    assert second_logs.text == "second\n"


async def test_a_missing_package_is_a_warm_up_error_reported_by_the_job(bun: Bun) -> None:
    interpreter = await bun.start(
        """
        import { thing } from "gristmill-no-such-package-here";

        export function main() {
          return thing;
        }
        """
    )
    assert interpreter.ready is not None
    assert interpreter.ready.runtime.startswith("bun ")
    assert any("gristmill-no-such-package-here" in e for e in interpreter.ready.warmup_errors)
    outcome, _ = await run(interpreter)
    assert outcome.error is not None
    assert outcome.error.name == "ImportError"
    assert interpreter.retired is None


async def test_a_missing_bun_is_a_launch_error_saying_how_to_install_it(
    bun: Bun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bun_template, "default_bun_bin", lambda: "/nonexistent/bun")
    warm = bun.pool()
    try:
        outcome = await _pool_run(warm, "export function main() {}\n", {})
    finally:
        await warm.close()
    assert outcome.error is not None
    assert outcome.error.name == "LaunchError"
    assert "bun is not installed" in outcome.error.message
    assert "scripts/install-runtimes" in outcome.error.message
    assert warm.started == 0


@pytest.mark.slow
async def test_an_npm_package_is_imported_once_and_stays_loaded(bun: Bun) -> None:
    """The warm part: the package is loaded before the first job, and every job gets
    the same instance of it (while the script's own module is new each time)."""
    interpreter = await bun.start(
        """
        import isNumber from "is-number";

        const mine: string[] = [];

        export function main(n: number) {
          mine.push("x");
          const shared = isNumber as any;
          shared.firstJob ??= n;
          return { checked: isNumber(n), firstJob: shared.firstJob, mine: mine.length };
        }
        """
    )
    assert interpreter.ready is not None
    assert interpreter.ready.warmup_errors == []
    assert interpreter.ready.modules >= 1
    results = [(await run(interpreter, args={"n": n}))[0] for n in range(3)]
    assert [r.error for r in results] == [None, None, None]
    assert [r.result for r in results] == [
        {"checked": True, "firstJob": 0, "mine": 1},
        {"checked": True, "firstJob": 0, "mine": 1},
        {"checked": True, "firstJob": 0, "mine": 1},
    ]


async def test_without_the_sandbox_jobs_still_run_warm_and_their_children_go(
    data_dir: DataDir,
) -> None:
    """The insecure mode: the same template; a job's children are found by ancestry."""
    warm = WarmPool(
        DedicatedSettings(scripts=("main:u/admin/warm",)),
        ExecutorSettings(kill_grace_s=0.5),
        data_dir.jobs / "dedicated",
    )
    code = textwrap.dedent(
        """
        const SEEN: number[] = [];

        export function main(n: number, pid: number | null) {
          SEEN.push(n);
          let alive = null;
          if (pid !== null) {
            try { process.kill(pid, 0); alive = true; } catch { alive = false; }
          }
          const child = Bun.spawn(["sleep", "300"]);
          return { seen: SEEN, me: process.pid, child: child.pid, alive };
        }
        """
    )
    try:
        results = []
        child = None
        for n in range(3):
            outcome = await _pool_run(warm, code, {"n": n, "pid": child})
            assert outcome.error is None, outcome.error
            results.append(outcome.result)
            child = outcome.result["child"]
    finally:
        await warm.close()
    assert [r["seen"] for r in results] == [[0], [1], [2]]
    assert len({r["me"] for r in results}) == 1
    assert [r["alive"] for r in results] == [None, False, False]
    assert warm.started == 1


# -- helpers ----------------------------------------------------------------------------


async def _pool_run(
    warm: WarmPool,
    code: str,
    args: dict[str, Any],
    *,
    timeout_s: float = 30.0,
    logs: Logs | None = None,
) -> ExecutionOutcome:
    """Run a job of the dedicated script ``main:u/admin/warm`` as a worker would."""
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
        language="bun",
        code=code,
    )
    request = msgspec.structs.replace(_request(code, args, {}, timeout_s), job_id=job_id)
    return await warm.execute(
        job, request, Prepared(), on_log=logs or Logs(), cancel=asyncio.Event()
    )
