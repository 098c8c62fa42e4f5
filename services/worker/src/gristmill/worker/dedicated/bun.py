"""The worker's side of a warm Bun interpreter (``bun_template.mjs``).

``BunTemplate`` says how ``WarmInterpreter`` starts one for a script version and feeds
it jobs: the same Bun, flags and caches as an ordinary ``bun`` job
(``runners/typescript.py``), the script at ``<id>.code/main.ts`` (read-only inside),
and per job the files an ordinary job's bootstrap reads (its arguments, its result)
plus its environment, in its own directory. The job's result, errors and exit are
then read by the ordinary runner's ``collect``: a warm job fails exactly as a cold one.

Bun runs a job in the interpreter's own process (it cannot fork a runtime): its
output is relayed from the interpreter's (``relay.py``), and a job that times out or
is canceled is stopped by stopping the interpreter.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection import parse_typescript
from gristmill.worker.dedicated.protocol import Run
from gristmill.worker.execution.launch import Command
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.runners.typescript import (
    ARGS_FILE,
    BOOTSTRAP,
    BUN_RUN_FLAGS,
    INSTALL_HINT,
    RESULT_FILE,
    SCRIPT_FILE,
    TypeScriptRunner,
    default_bun_bin,
    typescript_cache_dir,
)
from gristmill.worker.execution.settings import ExecutorSettings

if TYPE_CHECKING:
    from gristmill.worker.dedicated.interpreter import Spec

__all__ = ["BunTemplate"]

_TEMPLATE: Final = Path(__file__).with_name("bun_template.mjs")
# What the ordinary bootstrap reads and writes, relative to the job's directory, and
# Bun's flags for an ordinary ``bun`` job: the same as ``TypeScriptRunner``'s.
_SCRIPT: Final = SCRIPT_FILE
_ARGS: Final = ARGS_FILE
_RESULT: Final = RESULT_FILE
_ENV: Final = ".gristmill/env.json"
_FLAGS: Final = BUN_RUN_FLAGS


class _Arguments(msgspec.Struct, frozen=True, kw_only=True):
    """The ordinary bootstrap's arguments file."""

    args: dict[str, Any]
    #: Parameters typed ``Date``: their string arguments become ``Date`` objects.
    dates: tuple[str, ...] = ()


_encoder = msgspec.json.Encoder()


class BunTemplate:
    """``bun`` jobs of one script version, in a warm Bun interpreter."""

    #: Jobs run in the interpreter's own process.
    in_process: Final = True
    runner: Final = TypeScriptRunner("bun")

    def __init__(self, spec: Spec) -> None:
        self._code = spec.code
        self._script = ""
        self._runtime_env: dict[str, str] = {}

    @functools.cached_property
    def _dates(self) -> tuple[str, ...]:
        """``main``'s parameters typed ``Date`` (none if the code does not parse: the
        job says why)."""
        try:
            properties: dict[str, dict[str, Any]] = parse_typescript(self._code).schema[
                "properties"
            ]
        except InvalidRequest:
            return ()
        return tuple(
            name
            for name, schema in properties.items()
            if schema.get("type") == "string" and schema.get("format") == "date-time"
        )

    def command(
        self, *, code_dir: Path, workdir: Path, sock_fd: int, settings: ExecutorSettings
    ) -> Command:
        """Write the script into ``code_dir``; the command that starts the interpreter.

        Raises ``OSError`` (Bun is not installed: the message says how to install it).
        """
        script = code_dir / _SCRIPT
        script.write_text(self._code, encoding="utf-8", errors="replace")
        self._script = str(script)
        binary = _bun_bin(settings)
        # An ordinary job of this worker has its directory beside the interpreters'
        # (``<jobs dir>/<id>``): the same caches.
        cache = typescript_cache_dir(_beside(workdir), settings)
        self._runtime_env = {
            "BUN_INSTALL_CACHE_DIR": str(cache / "bun" / "install"),
            "BUN_RUNTIME_TRANSPILER_CACHE_PATH": str(cache / "bun" / "transpiler"),
            "DO_NOT_TRACK": "1",
            "NO_COLOR": "1",
        }
        env_bin = shutil.which("env", path="/usr/bin:/bin") or "/usr/bin/env"
        assignments = [f"{name}={value}" for name, value in self._runtime_env.items()]
        return Command(
            argv=(
                env_bin,
                *assignments,
                binary,
                *_FLAGS,
                str(_TEMPLATE),
                str(sock_fd),
                self._script,
                str(BOOTSTRAP),
                "1" if settings.sandbox is not None else "0",
            ),
            readonly_paths=(
                env_bin,
                binary,
                str(_TEMPLATE.parent),
                str(BOOTSTRAP.parent),
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
        """Write the job's arguments and environment into ``job_dir`` (which exists);
        the frame that runs it. ``env`` is the job's whole environment; the runtime's
        own settings go on top, as ``env`` puts them for an ordinary job."""
        del settings
        control = job_dir / ".gristmill"
        control.mkdir()
        (job_dir / _ARGS).write_bytes(
            _encoder.encode(_Arguments(args=request.args, dates=self._dates))
        )
        fd = os.open(job_dir / _ENV, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_encoder.encode({**env, **self._runtime_env}))
        return Run(job=job_dir.name, code=self._script, args=_ARGS, result=_RESULT, env=_ENV)


def _bun_bin(settings: ExecutorSettings) -> str:
    """Bun, as an ordinary job finds it: ``ExecutorSettings.bun_bin`` where defined,
    else ``.tools`` or ``PATH``; resolved through symlinks."""
    configured: str | None = getattr(settings, "bun_bin", None)
    program = configured or default_bun_bin()
    found = program if os.path.isabs(program) else shutil.which(program)
    if found is None or not os.access(found, os.X_OK):
        raise FileNotFoundError(f"bun is not installed: {INSTALL_HINT}")
    return os.path.realpath(found)


def _beside(workdir: Path) -> ExecutionRequest:
    """A request whose directory is where an ordinary job of this worker would run."""
    return ExecutionRequest(
        job_id=uuid.uuid4(),
        language="bun",
        code="",
        args={},
        env={},
        timeout_s=None,
        workdir=workdir.parent.parent / workdir.name,
    )
