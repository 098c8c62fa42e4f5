"""Bash jobs: ``bash main.sh ARG...``; the result is ``result.json`` or the last stdout line.

Arguments are passed positionally in the order of the ``args`` mapping: strings as
they are, anything else JSON-encoded. The result is the JSON in ``./result.json`` if
the script wrote one (relative to the workdir), else the last non-empty line of
stdout, parsed as JSON when it parses and kept as a string otherwise.
"""

from __future__ import annotations

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

__all__ = ["BashRunner"]

_SCRIPT = "main.sh"
_RESULT = "result.json"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class BashRunner:
    language = "bash"

    def prepare(self, request: ExecutionRequest, settings: ExecutorSettings) -> Command:
        (request.workdir / _SCRIPT).write_text(request.code, encoding="utf-8", errors="replace")
        (request.workdir / _RESULT).unlink(missing_ok=True)
        return Command(
            argv=(settings.bash_bin, _SCRIPT, *map(_positional, request.args.values())),
            separate_stderr=True,
            readonly_paths=(settings.bash_bin,),
        )

    def collect(self, finished: Finished, settings: ExecutorSettings) -> RunResult:
        if finished.exit_code != 0:
            return RunResult(
                error=failures.exited_with_code(
                    "bash", finished.exit_code, output_tail=finished.output_tail
                )
            )
        try:
            data = read_result_file(
                finished.workdir / _RESULT, max_bytes=settings.max_result_bytes, label=_RESULT
            )
        except ResultUnreadable as exc:
            return RunResult(error=exc.error)
        if data is not None:
            try:
                return RunResult(result=_decoder.decode(data))
            except msgspec.DecodeError as exc:
                return RunResult(
                    error=JobError(
                        name="InvalidResult",
                        message=f"{_RESULT} is not valid JSON: {exc}",
                        location=_RESULT,
                    )
                )
        return _last_line_result(finished)


def _positional(value: Any) -> str:
    if isinstance(value, str):
        return value
    return _encoder.encode(value).decode()


def _last_line_result(finished: Finished) -> RunResult:
    lines = finished.stdout_tail.split("\n")
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        if not line:
            continue
        if index == 0 and finished.stdout_tail_cut:
            return RunResult(
                error=JobError(
                    name="ResultTooLarge",
                    message=(
                        "the last line of stdout is too long to be the result; "
                        f"write large results to {_RESULT} instead"
                    ),
                    location="stdout",
                )
            )
        try:
            return RunResult(result=_decoder.decode(line))
        except msgspec.DecodeError:
            return RunResult(result=line)
    return RunResult(result=None)
