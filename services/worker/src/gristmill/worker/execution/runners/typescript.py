"""TypeScript jobs: the exported ``main`` of ``main.ts``, on Bun or Deno.

Three languages (Windmill's labels), one bootstrap (``typescript_bootstrap.mjs``):

* ``bun``: Bun; a bare import (``import x from "is-number"``) is installed from the
  npm registry on first use (``--install=fallback``) and taken from the cache after
  that without asking the registry again (``--prefer-offline``);
* ``deno``: Deno with every permission (the sandbox is the boundary); ``npm:`` and
  ``jsr:`` imports are native;
* ``nativets``: Deno allowed the network (``fetch``) and nothing else: no environment,
  no subprocesses, no files but reading the script and its arguments and writing the
  result file.

Arguments go to ``main`` by position, in the order of its parameters as the runtime
sees them (read from the transpiled function, so it always agrees with the code that
runs); a parameter missing from ``args`` receives ``undefined`` and its default.
Parameters typed ``Date`` receive a ``Date`` (their names come from introspection).
The result is written as JSON to ``.gristmill/result.json`` in the workdir, never to
stdout; an exception becomes ``{name, message, stack, location}`` with the script's
own line numbers (both runtimes map their transpiled code back to the source).

Caches, under ``ExecutorSettings.typescript_cache_dir`` (default: ``cache/typescript``
beside the jobs' directories, i.e. ``<data dir>/cache/typescript`` in a worker):

* ``deno/`` is ``DENO_DIR`` (npm/jsr packages, transpiled modules, V8 code cache);
* ``bun/install`` is ``BUN_INSTALL_CACHE_DIR``, ``bun/transpiler`` Bun's transpiler cache;
* ``scripts/<language>/<digest>/main.ts``: the script, stored once per distinct code.
  The job imports it from there, so the runtimes' caches (keyed by path) stay bounded
  by the number of script versions rather than of jobs, and a repeated script starts
  from cached, compiled code. Beside it, ``deno.lock``: Deno records the exact version
  and integrity of every ``npm:``/``jsr:``/remote import on the first run of that code
  and holds every later run to it, i.e. a lockfile per script version, per worker.

In a sandbox the caches are read-only (a job may run as another uid, and a cache that
jobs write is one job's way into the next): a job holds to the script's lockfile if
one exists and otherwise resolves its imports without caching them.

Runtimes: ``ExecutorSettings.bun_bin``/``deno_bin`` when set, else the ones
``scripts/install-runtimes`` puts in ``<repo>/.tools/node_modules/.bin``, else ``PATH``.
The settings ``bun_bin``, ``deno_bin`` and ``typescript_cache_dir`` are read only when
``ExecutorSettings`` defines them.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from gristmill.common.contracts.jobs import JobError
from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection import parse_typescript
from gristmill.worker.execution import failures
from gristmill.worker.execution.launch import Command
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.runners.base import Finished, RunResult, collect_envelope
from gristmill.worker.execution.settings import ExecutorSettings

__all__ = [
    "ARGS_FILE",
    "BOOTSTRAP",
    "BUN_RUN_FLAGS",
    "INSTALL_HINT",
    "RESULT_FILE",
    "SCRIPT_FILE",
    "TypeScriptRunner",
    "default_bun_bin",
    "default_deno_bin",
    "typescript_cache_dir",
]

Runtime = Literal["bun", "deno"]

#: The wrapper both runtimes start: plain JavaScript, no imports, shipped in this package.
BOOTSTRAP: Final = Path(__file__).with_name("typescript_bootstrap.mjs")
#: This file in a checkout: <repo>/services/worker/src/gristmill/worker/execution/runners.
_CHECKOUT_DEPTH: Final = 7
INSTALL_HINT: Final = (
    "run scripts/install-runtimes (it installs Bun and Deno from npm into .tools/), "
    "put it on PATH, or set its path in the worker's settings"
)
_CONTROL_DIR: Final = ".gristmill"
#: Where a job's arguments, its result and its script are, in its directory.
ARGS_FILE: Final = f"{_CONTROL_DIR}/args.json"
RESULT_FILE: Final = f"{_CONTROL_DIR}/result.json"
SCRIPT_FILE: Final = "main.ts"
_ARGS: Final = ARGS_FILE
_RESULT: Final = RESULT_FILE
_SCRIPT: Final = SCRIPT_FILE
#: ``bun`` before the bootstrap: no ``.env`` files, npm packages installed on first use
#: and taken from the cache after that.
BUN_RUN_FLAGS: Final = ("run", "--no-env-file", "--install=fallback", "--prefer-offline")
_LOCKFILE: Final = "deno.lock"
_DIGEST_CHARS: Final = 32
_RUNTIME_OF: Final[dict[str, Runtime]] = {"bun": "bun", "deno": "deno", "nativets": "deno"}


class _Spec(msgspec.Struct, frozen=True, kw_only=True):
    """What the bootstrap reads from ``.gristmill/args.json``."""

    args: dict[str, Any]
    #: Parameters typed ``Date``: their string arguments become ``Date`` objects.
    dates: tuple[str, ...] = ()


_encoder = msgspec.json.Encoder()


# -- finding the runtimes -----------------------------------------------------------------


def _discover(name: str) -> str:
    """``name`` from ``<repo>/.tools`` (``scripts/install-runtimes``), else from ``PATH``."""
    parents = Path(__file__).resolve().parents
    if len(parents) > _CHECKOUT_DEPTH:
        local = parents[_CHECKOUT_DEPTH] / ".tools" / "node_modules" / ".bin" / name
        if os.access(local, os.X_OK):
            return str(local)
    return shutil.which(name) or name


@functools.cache
def default_bun_bin() -> str:
    """``bun`` from ``<repo>/.tools`` (``scripts/install-runtimes``), else from ``PATH``."""
    return _discover("bun")


@functools.cache
def default_deno_bin() -> str:
    """``deno`` from ``<repo>/.tools`` (``scripts/install-runtimes``), else from ``PATH``."""
    return _discover("deno")


@functools.cache
def _env_bin() -> str:
    return shutil.which("env", path="/usr/bin:/bin") or "/usr/bin/env"


def _runtime_bin(runtime: Runtime, settings: ExecutorSettings) -> str:
    """The runtime's executable, resolved through symlinks.

    Raises ``FileNotFoundError`` (the job fails with ``LaunchError``) naming how to
    install it when there is none.
    """
    configured: str | None = getattr(settings, f"{runtime}_bin", None)
    program = configured or (default_bun_bin() if runtime == "bun" else default_deno_bin())
    found = program if os.path.isabs(program) else shutil.which(program)
    if found is None or not os.access(found, os.X_OK):
        raise FileNotFoundError(
            errno.ENOENT, f"{runtime} is not installed: {INSTALL_HINT}", program
        )
    return os.path.realpath(found)


def typescript_cache_dir(request: ExecutionRequest, settings: ExecutorSettings) -> Path:
    """Where the runtimes' caches and the scripts live (see the module's docstring)."""
    configured: str | None = getattr(settings, "typescript_cache_dir", None)
    if configured:
        return Path(configured)
    # A worker's workdirs are <data dir>/jobs/<job id>; its caches are <data dir>/cache.
    return request.workdir.absolute().parent.parent / "cache" / "typescript"


# -- what the job needs -------------------------------------------------------------


#: ``Date`` parameters by script digest: a script is parsed once, not once per job.
_dates_by_digest: dict[str, tuple[str, ...]] = {}
_DATES_KEPT: Final = 1024


def _date_parameters(digest: str, code: str) -> tuple[str, ...]:
    """Names of ``main``'s parameters typed ``Date`` (none if the code does not parse:
    the runtime will say why)."""
    found = _dates_by_digest.get(digest)
    if found is not None:
        return found
    try:
        properties: dict[str, dict[str, Any]] = parse_typescript(code).schema["properties"]
        found = tuple(name for name, schema in properties.items() if _is_date(schema))
    except InvalidRequest:
        found = ()
    if len(_dates_by_digest) >= _DATES_KEPT:
        del _dates_by_digest[next(iter(_dates_by_digest))]
    _dates_by_digest[digest] = found
    return found


def _is_date(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "string" and schema.get("format") == "date-time"


def _store_script(directory: Path, code: str) -> Path:
    """``directory/main.ts`` holding ``code``, written once (atomically) per digest."""
    path = directory / _SCRIPT
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".main-", suffix=".ts")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(code.encode("utf-8", errors="replace"))
        os.chmod(temporary, 0o644)  # a sandboxed job may run as another uid
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _deno_path_list(*paths: str) -> str:
    joined = ",".join(paths)
    if joined.count(",") != len(paths) - 1:
        raise OSError(errno.EINVAL, "Deno permission paths cannot contain a comma", joined)
    return joined


def _lock_flags(script_dir: Path, settings: ExecutorSettings) -> list[str]:
    """Deno's lockfile for this script version: written by its first run, then enforced.

    A sandboxed job sees the cache read-only (it may run as another uid, and a cache
    that jobs write is one job's way into the next): it holds to a lockfile that
    exists and cannot write one, so it resolves without one until something outside
    the sandbox has resolved the script's imports.
    """
    lockfile = script_dir / _LOCKFILE
    if getattr(settings, "sandbox", None) is None:
        return [f"--lock={lockfile}"]
    if lockfile.is_file():
        return [f"--lock={lockfile}", "--frozen"]
    return ["--no-lock"]


class TypeScriptRunner:
    """``bun``, ``deno`` or ``nativets`` jobs (one instance per language label)."""

    def __init__(self, language: Literal["bun", "deno", "nativets"]) -> None:
        self._language = language
        self._runtime: Runtime = _RUNTIME_OF[language]

    @property
    def language(self) -> str:
        return self._language

    def prepare(self, request: ExecutionRequest, settings: ExecutorSettings) -> Command:
        binary = _runtime_bin(self._runtime, settings)
        workdir = request.workdir
        cache = typescript_cache_dir(request, settings)
        digest = hashlib.sha256(request.code.encode("utf-8", errors="replace")).hexdigest()
        script_dir = cache / "scripts" / self._language / digest[:_DIGEST_CHARS]
        script = _store_script(script_dir, request.code)
        (workdir / _CONTROL_DIR).mkdir(exist_ok=True)
        spec = _Spec(args=request.args, dates=_date_parameters(digest, request.code))
        (workdir / _ARGS).write_bytes(_encoder.encode(spec))
        (workdir / _RESULT).unlink(missing_ok=True)
        if self._runtime == "bun":
            environment = {
                "BUN_INSTALL_CACHE_DIR": str(cache / "bun" / "install"),
                "BUN_RUNTIME_TRANSPILER_CACHE_PATH": str(cache / "bun" / "transpiler"),
                "DO_NOT_TRACK": "1",
            }
            flags = list(BUN_RUN_FLAGS)
        else:
            environment = {
                "DENO_DIR": str(cache / "deno"),
                "DENO_NO_UPDATE_CHECK": "1",
                # Also trust the system's certificate authorities (a proxy's, for one).
                "DENO_TLS_CA_STORE": "mozilla,system",
            }
            flags = ["run", "--no-prompt", "--no-config", *_lock_flags(script_dir, settings)]
            if self._language == "nativets":
                flags += [
                    "--allow-net",
                    f"--allow-read={_deno_path_list(str(script), _ARGS)}",
                    f"--allow-write={_RESULT}",
                ]
            else:
                flags.append("--allow-all")
        environment["NO_COLOR"] = "1"
        # The runtimes take their cache locations from the environment only; ``env``
        # sets them on top of the job's own environment.
        assignments = [f"{name}={value}" for name, value in environment.items()]
        env_bin = _env_bin()
        return Command(
            argv=(
                env_bin,
                *assignments,
                binary,
                *flags,
                str(BOOTSTRAP),
                str(script),
                # Relative to the job's working directory, which a sandbox moves.
                _ARGS,
                _RESULT,
            ),
            readonly_paths=(env_bin, binary, str(BOOTSTRAP.parent), str(script_dir)),
        )

    def collect(self, finished: Finished, settings: ExecutorSettings) -> RunResult:
        def missing() -> JobError:
            detail = " without writing a result"
            if finished.exit_code == 0:
                detail += " (did the script call process.exit() or Deno.exit()?)"
            return self._exit_error(finished, detail)

        return collect_envelope(
            finished,
            settings,
            _RESULT,
            missing=missing,
            failed_without_error="main() failed",
            nonzero_after_ok=lambda: self._exit_error(finished, " after main() returned"),
        )

    def _exit_error(self, finished: Finished, detail: str) -> JobError:
        return failures.exited_with_code(
            self._runtime, finished.exit_code, detail=detail, output_tail=finished.output_tail
        )
