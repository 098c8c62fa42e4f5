"""Python jobs: ``main(**args)`` from the user's ``main.py``, run by ``python_bootstrap.py``.

The interpreter starts isolated (``-I -S -B -X utf8``: no ``PYTHON*`` variables, no
site-packages, no bytecode written, UTF-8 I/O). The bootstrap writes the result (or a
structured error) to a file in the workdir's ``.gristmill/`` directory, never to stdout,
so stdout and stderr share one pipe and keep their exact order.

Third-party packages come from directories installed by ``pyenv.ensure_env``
(``ExecutionRequest.python_path``). The loader itself appends them to ``sys.path``
(``pyenv.sys_path_code``): ``-I`` ignores ``PYTHONPATH`` and ``-S`` skips ``.pth``
files, which is what keeps the start-up fast and the worker's environment out.
"""

from __future__ import annotations

import marshal
from pathlib import Path
from typing import Any

import msgspec

from gristmill.common.contracts.jobs import JobError
from gristmill.worker.execution import failures
from gristmill.worker.execution.launch import Command
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.runners.base import (
    Finished,
    ResultUnreadable,
    RunResult,
    read_result_file,
)
from gristmill.worker.execution.settings import ExecutorSettings
from gristmill.worker.pyenv import sys_path_code

__all__ = ["BOOTSTRAP", "PythonRunner"]

#: The module the interpreter runs; stdlib only, shipped in this package.
BOOTSTRAP = Path(__file__).with_name("python_bootstrap.py")
_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
#: Imported rather than run as a script so its compiled form is cached (a script is
#: compiled at every start: ~2 ms). The first job writes the cache if it can (image
#: builds should precompile it); the directory leaves ``sys.path`` before user code.
#: Removed by value, not position: a package's ``.pth`` file may have moved entries.
_LOADER = (
    "import sys;"
    f"sys.path.insert(0,{str(BOOTSTRAP.parent)!r});"
    "sys.dont_write_bytecode=False;"
    f"import {BOOTSTRAP.stem} as b;"
    "sys.dont_write_bytecode=True;"
    f"sys.path.remove({str(BOOTSTRAP.parent)!r});"
    "sys.exit(b.run(*sys.argv[1:]))"
)
_CONTROL_DIR = ".gristmill"
_CODE = "main.py"
_ARGS = f"{_CONTROL_DIR}/args.marshal"
_RESULT = f"{_CONTROL_DIR}/result.json"
#: ``marshal`` format 4 is read by every Python the bootstrap supports (3.9+).
_MARSHAL_VERSION = 4


class _ReportedError(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    message: str
    stack: str | None = None
    location: str | None = None


class _Envelope(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    result: Any = None
    error: _ReportedError | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def _loader(python_path: tuple[str, ...] = ()) -> str:
    """The ``-c`` program: make ``python_path``'s packages importable, then run the
    bootstrap.

    Raises ``OSError`` when a directory of ``python_path`` cannot be listed.
    """
    return "".join(sys_path_code(Path(directory)) for directory in python_path) + _LOADER


class PythonRunner:
    language = "python3"

    def prepare(self, request: ExecutionRequest, settings: ExecutorSettings) -> Command:
        workdir = request.workdir
        (workdir / _CONTROL_DIR).mkdir(exist_ok=True)
        (workdir / _CODE).write_text(request.code, encoding="utf-8", errors="replace")
        args = msgspec.to_builtins(request.args, str_keys=True)
        (workdir / _ARGS).write_bytes(marshal.dumps(args, _MARSHAL_VERSION))
        (workdir / _RESULT).unlink(missing_ok=True)
        return Command(
            argv=(
                settings.python_bin,
                *_FLAGS,
                "-c",
                _loader(request.python_path),
                _CODE,
                _ARGS,
                _RESULT,
            ),
            readonly_paths=(settings.python_bin, str(BOOTSTRAP.parent), *request.python_path),
        )

    def collect(self, finished: Finished, settings: ExecutorSettings) -> RunResult:
        try:
            data = read_result_file(
                finished.workdir / _RESULT, max_bytes=settings.max_result_bytes, label="result"
            )
        except ResultUnreadable as exc:
            return RunResult(error=exc.error)
        if data is None:
            detail = " without writing a result"
            if finished.exit_code == 0:
                detail += " (did the script call os._exit()?)"
            return RunResult(error=self._exit_error(finished, detail))
        try:
            envelope = _envelope.decode(data)
        except msgspec.DecodeError as exc:
            return RunResult(
                error=JobError(
                    name="InvalidResult",
                    message=f"the job's result could not be read: {exc}",
                    exit_code=finished.exit_code,
                )
            )
        if envelope.ok:
            if finished.exit_code != 0:
                return RunResult(error=self._exit_error(finished, " after main() returned"))
            return RunResult(result=envelope.result)
        reported = envelope.error or _ReportedError(name="Error", message="main() failed")
        return RunResult(
            error=JobError(
                name=reported.name,
                message=reported.message,
                stack=reported.stack,
                location=reported.location,
                exit_code=finished.exit_code,
            )
        )

    @staticmethod
    def _exit_error(finished: Finished, detail: str) -> JobError:
        return failures.exited_with_code(
            "python", finished.exit_code, detail=detail, output_tail=finished.output_tail
        )
