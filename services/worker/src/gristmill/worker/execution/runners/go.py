"""Go jobs: the function ``main`` of a ``package inner`` script, compiled once per version.

The script (Windmill's convention)::

    package inner

    import "fmt"

    func main(x int, name string) (interface{}, error) {
        fmt.Println("hello", name)
        return x * 2, nil
    }

Each distinct script (digest of the code, the wrapper and the Go toolchain) gets a
module under ``<cache>/<digest>/src``: ``inner/inner.go`` (the script), a generated
``inner/zz_gristmill_entry.go`` that decodes the arguments' JSON into a struct of
``main``'s parameter types (by name; a missing argument is the type's zero value) and
calls ``main``, and ``main.go`` (``go_wrapper.go.tmpl``), the program: it writes
``{ok, result}`` or ``{ok: false, error: {name, message, stack}}`` to
``.gristmill/result.json``. A returned error is named after its Go type; a panic is
``Panic`` with the goroutine's stack.

``<cache>/<digest>/main`` is built when missing (to a temporary name, then renamed,
so concurrent first runs are safe), and every later run of the same version starts
the cached binary directly. Sandboxed (the default), the worker builds it before the
job starts (``build``), with the compiler in the tools' sandbox
(``gristmill.worker.sandbox.tools``: the build cache writable, nothing else of the
worker visible), and the job's sandbox shows it only the binary, read-only: no job
can write a build another job runs. Unsandboxed, the job's own process builds it,
under its timeout and cancellation. Compiler output goes to
``.gristmill/compile.log``; a failed build becomes ``CompilationError`` with the line
and column in the script. The build is offline and standard library only
(``GOPROXY=off``, ``GOFLAGS=-mod=mod``, ``CGO_ENABLED=0``), with ``GOCACHE`` and
``GOPATH`` under the cache.

Cache: ``ExecutorSettings.go_cache_dir`` when it exists, else ``cache/go`` beside the
jobs' directories (``<data dir>/cache/go``). Compiler: ``ExecutorSettings.go_bin``
when it exists, else ``go`` on ``PATH`` (``scripts/install-runtimes`` installs it).
Arguments are passed as given: ``$res:``/``$var:`` references are not resolved.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Final

import msgspec

from gristmill.common.contracts.jobs import JobError
from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection.go import go_main_parameters
from gristmill.worker.execution import failures
from gristmill.worker.execution.launch import Command
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.runners.base import Finished, RunResult, collect_envelope
from gristmill.worker.execution.settings import ExecutorSettings
from gristmill.worker.sandbox import tools

__all__ = ["COMPILE_FAILED", "WRAPPER", "GoRunner", "go_cache_dir"]

#: The ``package main`` every Go job's program is built from.
WRAPPER: Final = Path(__file__).with_name("go_wrapper.go.tmpl")
#: The launcher's exit code when the build failed.
COMPILE_FAILED: Final = 97
_CONTROL_DIR: Final = ".gristmill"
_ARGS: Final = f"{_CONTROL_DIR}/args.json"
_RESULT: Final = f"{_CONTROL_DIR}/result.json"
_COMPILE_LOG: Final = f"{_CONTROL_DIR}/compile.log"
_SCRIPT: Final = "inner/inner.go"
_ENTRY: Final = "inner/zz_gristmill_entry.go"
_MODULE: Final = "gristmill.local/job"
_DIGEST_CHARS: Final = 32
#: Bump when the generated files change, so older builds are not reused.
_GENERATION: Final = "1"
#: A first build also compiles what it uses of the standard library into GOCACHE.
_BUILD_TIMEOUT_S: Final = 600.0
_INSTALL_HINT: Final = "install Go (scripts/install-runtimes, or apt-get install golang-go)"
# Build if the binary is missing, then run it. $1 go, $2 module dir, $3 binary.
_LAUNCHER: Final = f"""set -u
if [ ! -x "$3" ]; then
  tmp="$3.$$.tmp"
  if ! (cd "$2" && exec "$1" build -trimpath -o "$tmp" .) >{_COMPILE_LOG} 2>&1; then
    rm -f "$tmp"
    exit {COMPILE_FAILED}
  fi
  mv -f "$tmp" "$3"
fi
exec "$3" {_ARGS} {_RESULT}
"""
_LOCATION: Final = re.compile(
    r"^(?:\./)?(inner/inner\.go|inner/zz_gristmill_entry\.go|main\.go):(\d+)(?::(\d+))?: (.*)$",
    re.MULTILINE,
)


_encoder = msgspec.json.Encoder()


@functools.cache
def _wrapper_source() -> str:
    return WRAPPER.read_text(encoding="utf-8")


def _go_bin(settings: ExecutorSettings) -> str:
    """The ``go`` command, resolved through symlinks; ``FileNotFoundError`` if none."""
    configured: str | None = getattr(settings, "go_bin", None)
    program = configured or "go"
    found = program if os.path.isabs(program) else shutil.which(program)
    if found is None or not os.access(found, os.X_OK):
        raise FileNotFoundError(errno.ENOENT, f"go is not installed: {_INSTALL_HINT}", program)
    return os.path.realpath(found)


def go_cache_dir(request: ExecutionRequest, settings: ExecutorSettings) -> Path:
    """Where compiled scripts and Go's own caches live (see the module's docstring)."""
    configured: str | None = getattr(settings, "go_cache_dir", None)
    if configured:
        return Path(configured)
    # A worker's workdirs are <data dir>/jobs/<job id>; its caches are <data dir>/cache.
    return request.workdir.absolute().parent.parent / "cache" / "go"


def _digest(go: str, code: str) -> str:
    """A version's identity: the generated files, the compiler and the script."""
    text = "\0".join((_GENERATION, go, _wrapper_source(), code))
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()[:_DIGEST_CHARS]


def _go_environment(cache: Path) -> dict[str, str]:
    """An offline, standard-library-only build with its caches under ``cache``."""
    return {
        "GOCACHE": str(cache / "gocache"),
        "GOPATH": str(cache / "gopath"),
        "GOMODCACHE": str(cache / "gopath" / "pkg" / "mod"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOTOOLCHAIN": "local",
        "GO111MODULE": "on",
        "GOENV": "off",
        "GOTELEMETRY": "off",
        "CGO_ENABLED": "0",
    }


def _entry_source(code: str) -> str:
    """``inner/zz_gristmill_entry.go``: decode the arguments, call ``main``.

    Raises ``InvalidRequest`` when ``main``'s parameters cannot be read.
    """
    parameters = go_main_parameters(code)
    fields = "".join(
        f"\tP{i} {type_text} `json:{_encoder.encode(name).decode()}`\n"
        for i, (name, type_text) in enumerate(parameters)
    )
    call = ", ".join(f"a.P{i}" for i in range(len(parameters)))
    return (
        "// Generated by Gristmill: decodes the job's arguments and calls main.\n"
        "package inner\n\n"
        'import gristmilljson "encoding/json"\n\n'
        f"type gristmillArgs struct {{\n{fields}}}\n\n"
        "// GristmillEntry decodes raw (a JSON object) into main's parameters.\n"
        "func GristmillEntry(raw []byte) (func() (interface{}, error), error) {\n"
        "\tvar a gristmillArgs\n"
        "\tif err := gristmilljson.Unmarshal(raw, &a); err != nil {\n"
        "\t\treturn nil, err\n"
        "\t}\n"
        f"\treturn func() (interface{{}}, error) {{ return main({call}) }}, nil\n"
        "}\n"
    )


def _write_module(directory: Path, code: str) -> None:
    """The module to build, written once per digest (to a temporary directory, then
    renamed, so a concurrent job never sees half of it)."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".src-"))
    try:
        (temporary / "inner").mkdir()
        (temporary / "go.mod").write_text(f"module {_MODULE}\n\ngo 1.19\n", encoding="utf-8")
        (temporary / "main.go").write_text(_wrapper_source(), encoding="utf-8")
        (temporary / _SCRIPT).write_text(code, encoding="utf-8", errors="replace")
        (temporary / _ENTRY).write_text(_entry_source(code), encoding="utf-8")
        for path in (temporary, temporary / "inner"):
            # A sandboxed job may run as another uid; the sources are no secret.
            os.chmod(path, 0o755)  # noqa: S103  # readable by the job's uid, writable by none
        try:
            os.rename(temporary, directory)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(temporary, ignore_errors=True)  # another job wrote it first
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


class GoRunner:
    """``go`` jobs."""

    @property
    def language(self) -> str:
        return "go"

    async def build(self, request: ExecutionRequest, settings: ExecutorSettings) -> None:
        """Sandboxed: compile the version's binary in the tools' sandbox unless cached.

        A compile failure is written to the job's compile log, which ``prepare`` and
        ``collect`` turn into the job's ``CompilationError``.
        """
        if settings.sandbox is None:
            return  # the job's launcher compiles
        try:
            go = _go_bin(settings)
        except OSError:
            return  # prepare reports it
        cache = go_cache_dir(request, settings)
        version_dir = cache / "scripts" / _digest(go, request.code)
        if (version_dir / "main").is_file():
            return
        (request.workdir / _CONTROL_DIR).mkdir(exist_ok=True)
        try:
            _write_module(version_dir / "src", request.code)
        except InvalidRequest:
            return  # prepare reports it
        stage = Path(tempfile.mkdtemp(dir=version_dir, prefix=".build-"))
        try:
            shutil.copytree(version_dir / "src", stage, dirs_exist_ok=True)
            try:
                done = await tools.run_tool(
                    [go, "build", "-trimpath", "-o", "main", "."],
                    env={"PATH": settings.default_path, **_go_environment(cache)},
                    cwd=stage,
                    timeout_s=_BUILD_TIMEOUT_S,
                    sandbox=settings.sandbox,
                    writable=[cache / "gocache", cache / "gopath"],
                )
            except tools.ToolUnavailable as exc:
                done = tools.Completed(returncode=1, stdout="", stderr=str(exc))
            if done is None:
                log = f"the Go build took longer than {_BUILD_TIMEOUT_S:g} s\n"
            elif done.returncode != 0:
                log = done.stdout + done.stderr
            else:
                os.rename(stage / "main", version_dir / "main")
                return
            (request.workdir / _COMPILE_LOG).write_text(log, encoding="utf-8")
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def prepare(self, request: ExecutionRequest, settings: ExecutorSettings) -> Command:
        go = _go_bin(settings)
        cache = go_cache_dir(request, settings)
        version_dir = cache / "scripts" / _digest(go, request.code)
        workdir = request.workdir
        (workdir / _CONTROL_DIR).mkdir(exist_ok=True)
        (workdir / _RESULT).unlink(missing_ok=True)
        (workdir / _ARGS).write_bytes(_encoder.encode(request.args))
        try:
            _write_module(version_dir / "src", request.code)
        except InvalidRequest as exc:
            # main's signature does not parse: let the compiler say why, on the script alone.
            (workdir / _COMPILE_LOG).write_text(f"{_SCRIPT}:1:1: {exc.message}\n", encoding="utf-8")
            return Command(argv=("/bin/sh", "-c", f"exit {COMPILE_FAILED}"))
        if settings.sandbox is not None:
            binary = version_dir / "main"
            if not binary.is_file():  # build() wrote the compile log
                return Command(argv=("/bin/sh", "-c", f"exit {COMPILE_FAILED}"))
            return Command(argv=(str(binary), _ARGS, _RESULT), readonly_paths=(str(binary),))
        environment = _go_environment(cache)
        env_bin = shutil.which("env", path="/usr/bin:/bin") or "/usr/bin/env"
        return Command(
            argv=(
                env_bin,
                *(f"{name}={value}" for name, value in environment.items()),
                "/bin/sh",
                "-c",
                _LAUNCHER,
                "gristmill-go",
                go,
                str(version_dir / "src"),
                str(version_dir / "main"),
            ),
            readonly_paths=(env_bin, "/bin/sh", go, str(Path(go).parent.parent)),
        )

    def collect(self, finished: Finished, settings: ExecutorSettings) -> RunResult:
        if finished.exit_code == COMPILE_FAILED:
            return RunResult(error=_compile_error(finished))
        return collect_envelope(
            finished,
            settings,
            _RESULT,
            missing=lambda: failures.exited_with_code(
                "go",
                finished.exit_code,
                detail=" without writing a result (did the script call os.Exit?)",
                output_tail=finished.output_tail,
            ),
            failed_without_error="main failed",
        )


def _compile_error(finished: Finished) -> JobError:
    try:
        log = (finished.workdir / _COMPILE_LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        log = finished.output_tail
    log = log.strip()
    lines = [line for line in log.splitlines() if not line.startswith("#")]
    location: str | None = None
    first = _LOCATION.search(log)
    if first is not None:
        file, line, column, message = first.groups()
        if file == _SCRIPT:
            location = f"line {line}, column {column}" if column else f"line {line}"
        else:
            message = (
                f"{message} (main must be `func main(...) (interface{{}}, error)` "
                "with JSON-decodable parameter types)"
            )
        summary = message
    else:
        summary = lines[0] if lines else "the Go compiler failed"
    return JobError(
        name="CompilationError",
        message=summary,
        stack="\n".join(lines) or None,
        location=location,
        exit_code=finished.exit_code,
    )
