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

import msgspec

from gristmill.common.contracts.jobs import JobError
from gristmill.worker.execution import failures
from gristmill.worker.execution.launch import Command
from gristmill.worker.execution.request import ExecutionRequest
from gristmill.worker.execution.runners.base import Finished, RunResult, collect_envelope
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
        def missing() -> JobError:
            detail = " without writing a result"
            if finished.exit_code == 0:
                detail += " (did the script call os._exit()?)"
            return self._exit_error(finished, detail)

        return collect_envelope(
            finished,
            settings,
            _RESULT,
            missing=missing,
            failed_without_error="main() failed",
            nonzero_after_ok=lambda: self._exit_error(finished, " after main() returned"),
        )

    @staticmethod
    def _exit_error(finished: Finished, detail: str) -> JobError:
        return failures.exited_with_code(
            "python", finished.exit_code, detail=detail, output_tail=finished.output_tail
        )
