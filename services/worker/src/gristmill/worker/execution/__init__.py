"""Running one job in a child process: the worker's executor.

``execute(request, on_log=..., cancel=..., settings=...)`` starts the job's process
(through ``launch.build_argv``, the single place a sandbox wraps it), streams its
output, enforces its timeout and cancellation by killing its whole process tree, and
returns an ``ExecutionOutcome``. Each language is a runner in ``runners/``.
"""

from __future__ import annotations

from gristmill.worker.execution.executor import execute
from gristmill.worker.execution.logs import OnLog
from gristmill.worker.execution.request import ExecutionOutcome, ExecutionRequest
from gristmill.worker.execution.runners import supported_languages
from gristmill.worker.execution.settings import ExecutorSettings

__all__ = [
    "ExecutionOutcome",
    "ExecutionRequest",
    "ExecutorSettings",
    "OnLog",
    "execute",
    "supported_languages",
]
