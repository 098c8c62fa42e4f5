"""TypeScript jobs on real Bun and Deno: arguments, results, errors, logs, limits."""

from __future__ import annotations

import asyncio
import json
import os
import re
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gristmill.common.contracts.jobs import ExitReason, JobStatus
from gristmill.worker.execution import (
    ExecutionOutcome,
    ExecutionRequest,
    ExecutorSettings,
    execute,
    supported_languages,
)
from gristmill.worker.execution.runners import typescript

SETTINGS = ExecutorSettings(kill_grace_s=0.5)
RUNTIMES = ["bun", "deno"]
ALL = ["bun", "deno", "nativets"]


class Logs:
    """An ``on_log`` that keeps every chunk; ``hook`` sees each chunk as it arrives."""

    def __init__(self, hook: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.chunks: list[str] = []
        self._hook = hook

    async def __call__(self, text: str) -> None:
        self.chunks.append(text)
        if self._hook is not None:
            await self._hook(text)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class Jobs:
    """Runs jobs the way a worker does: each in ``<data dir>/jobs/<id>``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.last_workdir: Path | None = None

    async def run(
        self,
        language: str,
        code: str,
        *,
        args: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float | None = 30.0,
        logs: Logs | None = None,
        settings: ExecutorSettings = SETTINGS,
    ) -> tuple[ExecutionOutcome, Logs]:
        job_id = uuid.uuid4()
        workdir = self.data_dir / "jobs" / str(job_id)
        workdir.mkdir(parents=True, mode=0o700)
        self.last_workdir = workdir
        logs = logs or Logs()
        request = ExecutionRequest(
            job_id=job_id,
            language=language,
            code=textwrap.dedent(code),
            args=args or {},
            env=env or {},
            timeout_s=timeout_s,
            workdir=workdir,
        )
        outcome = await execute(request, on_log=logs, cancel=asyncio.Event(), settings=settings)
        return outcome, logs


@pytest.fixture
def jobs(data_dir: Path) -> Jobs:
    return Jobs(data_dir)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def _gone(pid: int) -> bool:
    for _ in range(250):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


def test_the_languages_are_registered() -> None:
    assert {"bun", "deno", "nativets"} <= supported_languages()


# -- arguments and results ------------------------------------------------------------


@pytest.mark.parametrize("language", ALL)
async def test_typed_args_by_name_give_a_json_result(jobs: Jobs, language: str) -> None:
    code = """
        type Options = { loud?: boolean };

        export async function main(
          name: string,
          count: number,
          tags: string[],
          options: Options = {},
          greeting = "hello",
        ) {
          const text = `${greeting} ${name}`;
          return {
            text: options.loud ? text.toUpperCase() : text,
            double: count * 2,
            tags,
            unicode: "caf\\u00e9 \\u2603",
            nothing: null,
          };
        }
    """
    # Passed by name whatever the order of the mapping; `greeting` keeps its default.
    args = {"tags": ["a", "b"], "options": {"loud": True}, "count": 21, "name": "mill"}
    outcome, _ = await jobs.run(language, code, args=args)
    assert outcome.error is None
    assert outcome.status is JobStatus.SUCCESS
    assert outcome.exit_code == 0
    assert outcome.result == {
        "text": "HELLO MILL",
        "double": 42,
        "tags": ["a", "b"],
        "unicode": "café ☃",
        "nothing": None,
    }


@pytest.mark.parametrize("language", RUNTIMES)
async def test_synchronous_main_and_arrow_main(jobs: Jobs, language: str) -> None:
    outcome, _ = await jobs.run(
        language, "export function main(x: number) { return x + 1 }\n", args={"x": 1}
    )
    assert outcome.result == 2
    arrow = "export const main = async (a: number, b: number = 10) => a * b;\n"
    outcome, _ = await jobs.run(language, arrow, args={"a": 4})
    assert outcome.result == 40


@pytest.mark.parametrize("language", RUNTIMES)
async def test_missing_args_are_undefined_and_extra_ones_ignored(jobs: Jobs, language: str) -> None:
    code = """
        export function main(a?: string, { x } = { x: 1 }, b = [1, 2], ...rest: number[]) {
          return [a === undefined, x, b, rest.length];
        }
    """
    outcome, _ = await jobs.run(language, code, args={"b": [3], "unknown": 1})
    assert outcome.result == [True, 1, [3], 0]


@pytest.mark.parametrize("language", RUNTIMES)
async def test_date_parameters_receive_dates(jobs: Jobs, language: str) -> None:
    code = """
        export function main(when: Date, label: string) {
          return [when instanceof Date, when.getUTCFullYear(), typeof label, when];
        }
    """
    args = {"when": "2024-02-29T12:00:00Z", "label": "2024-02-29T12:00:00Z"}
    outcome, _ = await jobs.run(language, code, args=args)
    assert outcome.result == [True, 2024, "string", "2024-02-29T12:00:00.000Z"]


@pytest.mark.parametrize("language", ALL)
async def test_async_main_is_awaited_and_undefined_is_null(jobs: Jobs, language: str) -> None:
    code = """
        export async function main() {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
    """
    outcome, _ = await jobs.run(language, code)
    assert outcome.error is None
    assert outcome.result is None


@pytest.mark.parametrize("language", RUNTIMES)
async def test_prints_are_logs_not_the_result(jobs: Jobs, language: str) -> None:
    code = """
        export function main() {
          console.log('{"ok": true, "result": "forged"}');
          console.error("to stderr");
          return "real";
        }
    """
    outcome, logs = await jobs.run(language, code)
    assert outcome.result == "real"
    assert '{"ok": true, "result": "forged"}\n' in logs.text
    assert "to stderr\n" in logs.text


@pytest.mark.parametrize("language", RUNTIMES)
async def test_open_timers_do_not_keep_a_finished_job_alive(jobs: Jobs, language: str) -> None:
    code = """
        export function main() {
          setInterval(() => {}, 1000);
          return "done";
        }
    """
    outcome, _ = await jobs.run(language, code, timeout_s=20)
    assert outcome.exit_reason is ExitReason.OK
    assert outcome.result == "done"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ALL)
async def test_exception_is_a_structured_error_with_the_scripts_lines(
    jobs: Jobs, language: str
) -> None:
    code = """
        class QuotaError extends Error {
          name = "QuotaError";
        }

        function check(n: number): void {
          if (n > 3) {
            throw new QuotaError(`too many: ${n}`);
          }
        }

        export async function main(n: number) {
          await Promise.resolve();
          check(n);
        }
    """
    outcome, _ = await jobs.run(language, code, args={"n": 5})
    assert outcome.status is JobStatus.FAILURE
    assert outcome.exit_code == 1
    error = outcome.error
    assert error is not None
    assert error.name == "QuotaError"
    assert error.message == "too many: 5"
    assert error.location is not None
    assert error.location.startswith("line 8, column ")
    assert error.stack is not None
    assert "main.ts:8:" in error.stack
    assert "main.ts:14:" in error.stack
    # The worker's own files and paths stay out of it.
    assert "typescript_bootstrap" not in error.stack
    assert str(jobs.data_dir) not in error.stack


@pytest.mark.parametrize("language", RUNTIMES)
async def test_error_at_import_time_and_its_cause(jobs: Jobs, language: str) -> None:
    code = """
        const config = JSON.parse("{}");

        if (!config.url) {
          throw new Error("no url configured", { cause: new TypeError("inner") });
        }

        export function main() {}
    """
    outcome, _ = await jobs.run(language, code)
    error = outcome.error
    assert error is not None
    assert (error.name, error.message) == ("Error", "no url configured")
    assert error.location is not None
    assert error.location.startswith("line 5, column ")
    assert error.stack is not None
    assert "Caused by: TypeError: inner" in error.stack


@pytest.mark.parametrize("language", RUNTIMES)
async def test_a_thrown_non_error_value(jobs: Jobs, language: str) -> None:
    outcome, _ = await jobs.run(language, "export function main() { throw {code: 7}; }\n")
    assert outcome.error is not None
    assert outcome.error.name == "Error"
    assert outcome.error.message == 'a non-Error value was thrown: {"code":7}'


@pytest.mark.parametrize("language", RUNTIMES)
@pytest.mark.parametrize(
    "failure",
    [
        'Promise.reject(new RangeError("nobody waits for me"));',
        'setTimeout(() => { throw new RangeError("nobody waits for me"); }, 10);',
    ],
)
async def test_failures_outside_main_fail_the_job(jobs: Jobs, language: str, failure: str) -> None:
    code = f"""
        export async function main() {{
          {failure}
          await new Promise((resolve) => setTimeout(resolve, 5000));
          return "not reached";
        }}
    """
    outcome, _ = await jobs.run(language, code)
    assert outcome.error is not None
    assert (outcome.error.name, outcome.error.message) == ("RangeError", "nobody waits for me")


@pytest.mark.parametrize("language", ALL)
async def test_syntax_error_has_line_and_column(jobs: Jobs, language: str) -> None:
    code = "export function main(a: number) {\n  const x = ;\n  return a;\n}\n"
    outcome, _ = await jobs.run(language, code)
    error = outcome.error
    assert error is not None
    assert error.name == "SyntaxError"
    assert error.location == "line 2, column 13"
    assert error.message.endswith(" at line 2, column 13")


@pytest.mark.parametrize("language", RUNTIMES)
async def test_missing_module_is_an_import_error(jobs: Jobs, language: str) -> None:
    code = 'import { helper } from "./helper.ts";\nexport function main() { return helper(); }\n'
    outcome, _ = await jobs.run(language, code)
    assert outcome.error is not None
    assert outcome.error.name == "ImportError"
    assert "helper.ts" in outcome.error.message


@pytest.mark.parametrize(
    "code",
    [
        "export function notMain() {}\n",
        "function main() {}\n",
        "export default function main() {}\n",
        "export const main = 42;\n",
    ],
)
async def test_main_must_be_an_exported_function(jobs: Jobs, code: str) -> None:
    outcome, _ = await jobs.run("deno", code)
    assert outcome.error is not None
    assert outcome.error.name == "MissingMain"


@pytest.mark.parametrize("language", RUNTIMES)
@pytest.mark.parametrize(
    ("returned", "detail", "location"),
    [
        ("10n", "a bigint (10n) at $", "$"),
        ("{ f: () => 1 }", "a function at $.f", "$.f"),
        ('{ m: new Map([["a", 1]]) }', "a Map (return Object.fromEntries(map)) at $.m", "$.m"),
        ("[1, new Set([1])]", "a Set (return [...set]) at $[1]", "$[1]"),
        ("{ n: NaN }", "the number NaN (NaN and infinities are not JSON) at $.n", "$.n"),
        (
            "(() => { const a: any = {}; a.self = a; return a; })()",
            "a circular reference at $.self",
            "$.self",
        ),
    ],
)
async def test_result_that_is_not_json(
    jobs: Jobs, language: str, returned: str, detail: str, location: str
) -> None:
    outcome, _ = await jobs.run(language, f"export function main() {{ return {returned}; }}\n")
    assert outcome.error is not None
    assert outcome.error.name == "ResultNotSerializable"
    assert outcome.error.message == f"the result of main() is not JSON serializable: {detail}"
    assert outcome.error.location == location


@pytest.mark.parametrize("language", RUNTIMES)
async def test_json_conversions_of_the_runtime_hold(jobs: Jobs, language: str) -> None:
    code = """
        class Point { constructor(public x: number, public y: number) {} }
        export function main() {
          return {
            when: new Date(0), point: new Point(1, 2), skipped: undefined, list: [undefined],
          };
        }
    """
    outcome, _ = await jobs.run(language, code)
    assert outcome.result == {
        "when": "1970-01-01T00:00:00.000Z",
        "point": {"x": 1, "y": 2},
        "list": [None],
    }


@pytest.mark.parametrize("language", RUNTIMES)
async def test_exit_without_a_result(jobs: Jobs, language: str) -> None:
    exit_call = "Deno.exit(3)" if language == "deno" else "process.exit(3)"
    outcome, _ = await jobs.run(language, f"export function main() {{ {exit_call}; }}\n")
    assert outcome.error is not None
    assert outcome.error.name == "ExitCode"
    assert outcome.error.message == f"{language} exited with code 3 without writing a result"


async def test_result_over_the_limit(jobs: Jobs) -> None:
    settings = ExecutorSettings(kill_grace_s=0.5, max_result_bytes=1000)
    code = 'export function main() { return "x".repeat(5000); }\n'
    outcome, _ = await jobs.run("bun", code, settings=settings)
    assert outcome.error is not None
    assert outcome.error.name == "ResultTooLarge"


# -- logs, timeouts ----------------------------------------------------------------------


@pytest.mark.parametrize("language", ALL)
async def test_logs_arrive_while_the_job_runs(jobs: Jobs, language: str) -> None:
    # The job polls until the test answers its first log line: it can only finish if
    # that line was delivered while it was still running.
    code = """
        export async function main(port: number) {
          console.log("ready");
          for (let i = 0; i < 400; i++) {
            const answer = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.text());
            if (answer === "go") {
              console.log("done");
              return "went";
            }
            await new Promise((resolve) => setTimeout(resolve, 25));
          }
          return "no log chunk arrived while running";
        }
    """
    seen_ready = asyncio.Event()

    async def on_chunk(text: str) -> None:
        if "ready" in text:
            seen_ready.set()

    async with _HttpServer(lambda: "go" if seen_ready.is_set() else "wait") as port:
        outcome, logs = await jobs.run(language, code, args={"port": port}, logs=Logs(on_chunk))
    assert outcome.result == "went"
    assert logs.chunks[0] == "ready\n"
    assert logs.text == "ready\ndone\n"


@pytest.mark.parametrize("language", ALL)
async def test_timeout_kills_the_process(jobs: Jobs, language: str) -> None:
    pid_call = "Deno.pid" if language != "bun" else "process.pid"
    code = f"""
        export async function main() {{
          console.log("pid=" + {pid_call});
          await new Promise(() => setInterval(() => {{}}, 1000));
        }}
    """
    outcome, logs = await jobs.run(language, code, timeout_s=1.0)
    assert outcome.exit_reason is ExitReason.TIMEOUT
    assert outcome.error is not None
    assert outcome.error.name == "Timeout"
    match = re.search(r"pid=(\d+)", logs.text)
    assert match, logs.text
    assert await _gone(int(match.group(1)))


# -- permissions ----------------------------------------------------------------------------


class _Server:
    def __init__(self, body: Callable[[], str]) -> None:
        self._body = body
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            payload = self._body().encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _HttpServer:
    """A local HTTP server answering every request with ``body()``; yields its port."""

    def __init__(self, body: Callable[[], str]) -> None:
        self.handler = _Server(body)
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self.handler.handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_nativets_can_fetch(jobs: Jobs) -> None:
    code = """
        export async function main(url: string) {
          const response = await fetch(url);
          return { status: response.status, body: await response.text() };
        }
    """
    async with _HttpServer(lambda: "hello from the test") as port:
        outcome, _ = await jobs.run("nativets", code, args={"url": f"http://127.0.0.1:{port}/x"})
    assert outcome.error is None
    assert outcome.result == {"status": 200, "body": "hello from the test"}


_PROBES = {
    "env": 'Deno.env.get("GRISTMILL_TS_SECRET")',
    "env_object": "Deno.env.toObject()",
    "read_outside": 'Deno.readTextFileSync("/etc/hostname")',
    "read_cache": "Deno.readDirSync(new URL('.', import.meta.url))",
    "write_workdir": 'Deno.writeTextFileSync("stolen.txt", "x")',
    "read_workdir": 'Deno.readDirSync(".")',
    "run": 'new Deno.Command("true").outputSync()',
    "node_env": '(await import("node:process")).env.GRISTMILL_TS_SECRET',
    "node_fs": '(await import("node:fs")).readFileSync("/etc/passwd", "utf8")',
    "ffi": 'Deno.dlopen("libc.so.6", {})',
}


@pytest.mark.parametrize("probe", sorted(_PROBES))
async def test_nativets_gets_no_env_files_or_processes(jobs: Jobs, probe: str) -> None:
    code = f"""
        export async function main() {{
          try {{
            const value = {_PROBES[probe]};
            return {{ allowed: true, value: String(value) }};
          }} catch (error) {{
            return {{ allowed: false, name: error.name, message: error.message }};
          }}
        }}
    """
    outcome, _ = await jobs.run("nativets", code, env={"GRISTMILL_TS_SECRET": "s3cret"})
    assert outcome.error is None, outcome.error
    assert outcome.result["allowed"] is False, outcome.result
    assert outcome.result["name"] in ("NotCapable", "PermissionDenied"), outcome.result
    assert jobs.last_workdir is not None
    assert not (jobs.last_workdir / "stolen.txt").exists()


async def test_deno_has_every_permission(jobs: Jobs) -> None:
    code = """
        export async function main() {
          await Deno.writeTextFile("made.txt", "x");
          return [Deno.env.get("GRISTMILL_TS_SECRET"), Deno.readTextFileSync("made.txt")];
        }
    """
    outcome, _ = await jobs.run("deno", code, env={"GRISTMILL_TS_SECRET": "s3cret"})
    assert outcome.result == ["s3cret", "x"]


async def test_bun_sees_only_the_jobs_environment(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRISTMILL_TS_WORKER_SECRET", "worker-only")
    code = """
        export function main() {
          return [process.env.GRISTMILL_TS_WORKER_SECRET ?? "unset", process.env.JOB_TOKEN,
                  process.cwd()];
        }
    """
    outcome, _ = await jobs.run("bun", code, env={"JOB_TOKEN": "t0k"})
    assert outcome.result == ["unset", "t0k", str(jobs.last_workdir)]


# -- runtimes ---------------------------------------------------------------------------------


async def test_a_missing_runtime_is_a_launch_error_saying_how_to_install_it(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(typescript, "default_deno_bin", lambda: "/nonexistent/deno")
    outcome, _ = await jobs.run("nativets", "export function main() {}\n")
    assert outcome.error is not None
    assert outcome.error.name == "LaunchError"
    assert "deno is not installed" in outcome.error.message
    assert "scripts/install-runtimes" in outcome.error.message


def test_runtimes_come_from_the_tools_directory(runtimes: dict[str, str]) -> None:
    for name, path in runtimes.items():
        assert os.access(path, os.X_OK)
        assert Path(path).name == name


async def test_the_script_is_stored_once_per_version(jobs: Jobs) -> None:
    code = "export function main() { return import.meta.url; }\n"
    first, _ = await jobs.run("deno", code)
    second, _ = await jobs.run("deno", code)
    assert first.result == second.result
    stored = Path(first.result.removeprefix("file://"))
    assert stored.name == "main.ts"
    assert stored.is_relative_to(jobs.data_dir / "cache" / "typescript" / "scripts" / "deno")
    assert stored.read_text() == code


# -- packages from the npm registry ---------------------------------------------------------


@pytest.mark.slow
async def test_deno_npm_import_is_fetched_cached_and_locked(jobs: Jobs) -> None:
    code = """
        import isNumber from "npm:is-number@7";

        export function main(values: unknown[]) {
          return values.map((value) => isNumber(value));
        }
    """
    outcome, _ = await jobs.run("deno", code, args={"values": [5, "5", "x"]}, timeout_s=120)
    assert outcome.error is None, outcome.error
    assert outcome.result == [True, True, False]
    scripts = jobs.data_dir / "cache" / "typescript" / "scripts" / "deno"
    locks = [path for path in scripts.glob("*/deno.lock") if "is-number" in path.read_text()]
    assert len(locks) == 1
    lock = json.loads(locks[0].read_text())
    assert lock["specifiers"]["npm:is-number@7"].startswith("7.")
    assert (jobs.data_dir / "cache" / "typescript" / "deno" / "npm").is_dir()
    again, _ = await jobs.run("deno", code, args={"values": [1]})
    assert again.result == [True]


@pytest.mark.slow
async def test_bun_bare_import_is_installed_and_cached(jobs: Jobs) -> None:
    code = """
        import isNumber from "is-number";

        export function main(values: unknown[]) {
          return values.map((value) => isNumber(value));
        }
    """
    outcome, _ = await jobs.run("bun", code, args={"values": [5, "5", "x"]}, timeout_s=120)
    assert outcome.error is None, outcome.error
    assert outcome.result == [True, True, False]
    cache = jobs.data_dir / "cache" / "typescript" / "bun" / "install"
    assert any(path.name.startswith("is-number@") for path in cache.iterdir())
    again, _ = await jobs.run("bun", code, args={"values": ["x"]})
    assert again.result == [False]
