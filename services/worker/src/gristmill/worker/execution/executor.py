"""Run one job to completion: launch, stream logs, enforce the timeout, kill, collect."""

from __future__ import annotations

import asyncio

import structlog

from gristmill.common.contracts.jobs import ExitReason, JobError
from gristmill.worker.execution import failures
from gristmill.worker.execution.cancellation import unless_canceled
from gristmill.worker.execution.job_process import JobProcess
from gristmill.worker.execution.launch import Command, launch
from gristmill.worker.execution.logs import LogPump, OnLog
from gristmill.worker.execution.process_tree import ProcessTree, terminate
from gristmill.worker.execution.request import ExecutionOutcome, ExecutionRequest
from gristmill.worker.execution.runners import runner_for, supported_languages
from gristmill.worker.execution.runners.base import Builds, Finished, Runner
from gristmill.worker.execution.settings import ExecutorSettings

__all__ = ["execute"]

_log = structlog.get_logger(__name__)


async def execute(
    request: ExecutionRequest,
    *,
    on_log: OnLog,
    cancel: asyncio.Event,
    settings: ExecutorSettings,
) -> ExecutionOutcome:
    """Run ``request`` in a child process and report how it ended.

    Output is delivered to ``on_log`` in chunks while the job runs; every chunk has
    been delivered when this returns. Setting ``cancel`` (or the timeout expiring)
    terminates the job's whole process tree. Processes the job left behind when it
    exited are killed too. A failure of the job is an outcome, never an exception;
    if this coroutine is itself cancelled, the job's processes are killed first.
    """
    runner = runner_for(request.language)
    if runner is None:
        error = failures.unsupported_language(request.language, supported_languages())
        return _failed(error)
    if cancel.is_set():
        return _failed(failures.canceled())
    if not request.workdir.is_dir():
        raise NotADirectoryError(f"the job's workdir {request.workdir} is not a directory")
    if isinstance(runner, Builds):
        builder = runner

        async def build() -> bool:
            await builder.build(request, settings)
            return True

        if await unless_canceled(cancel, build()) is None:
            return _failed(failures.canceled())
    try:
        command = runner.prepare(request, settings)
    except OSError as exc:
        return _failed(failures.launch_failed(f"the {request.language} job", exc))
    return await _run(request, runner, command, on_log=on_log, cancel=cancel, settings=settings)


async def _run(
    request: ExecutionRequest,
    runner: Runner,
    command: Command,
    *,
    on_log: OnLog,
    cancel: asyncio.Event,
    settings: ExecutorSettings,
) -> ExecutionOutcome:
    loop = asyncio.get_running_loop()
    pump = LogPump(on_log, settings=settings, job_id=request.job_id)
    started = loop.time()
    try:
        launched = launch(command, request=request, settings=settings)
    except (OSError, ValueError) as exc:
        return _failed(failures.launch_failed(command.program, exc))
    process = launched.process
    tree = ProcessTree(process.pid, pipe_inodes=frozenset(o.inode for o in launched.outputs))
    try:
        await pump.attach(launched.outputs)
        stopped_by = await _wait(process, cancel, request.timeout_s)
        if stopped_by is not None:
            await terminate(
                tree, grace_s=settings.kill_grace_s, sandboxed=settings.sandbox is not None
            )
            await process.wait_exited()
        duration_ms = round((loop.time() - started) * 1000)
        # The first process is a zombie until reaped, so its pid (the job's process group
        # and session id) cannot be recycled while the leftovers are swept.
        await _sweep_leftovers(tree, pump, settings, request)
        tree.forget_root()
        returncode = process.reap()
        await pump.finish()
    except BaseException:
        tree.kill()
        process.reap_when_exited()
        pump.abort()
        raise
    usage = launched.usage  # the sandbox's accounting, complete once reaped

    def outcome(*, result: object = None, error: JobError | None = None) -> ExecutionOutcome:
        return ExecutionOutcome(
            success=error is None,
            result=result if error is None else None,
            error=error,
            exit_code=returncode if returncode >= 0 else None,
            duration_ms=duration_ms,
            exit_reason=ExitReason.OK if error is None else error.exit_reason,
            log_truncated=pump.truncated,
            log_bytes=pump.total_bytes,
            memory_peak_bytes=usage.memory_peak_bytes,
        )

    signal_number = -returncode if returncode < 0 else None
    if stopped_by is ExitReason.TIMEOUT:
        assert request.timeout_s is not None
        return outcome(error=failures.timed_out(request.timeout_s, signal_number=signal_number))
    if stopped_by is ExitReason.CANCELED:
        return outcome(error=failures.canceled(signal_number=signal_number))
    if signal_number is not None:
        return outcome(
            error=failures.killed_by_signal(
                signal_number, output_tail=pump.output_tail(), usage=usage
            )
        )
    stdout_tail, stdout_tail_cut = pump.stdout_tail()
    finished = Finished(
        exit_code=returncode,
        workdir=request.workdir,
        stdout_tail=stdout_tail,
        stdout_tail_cut=stdout_tail_cut,
        output_tail=pump.output_tail(),
    )
    # Reading and decoding a result can take a while (up to max_result_bytes).
    ran = await asyncio.to_thread(runner.collect, finished, settings)
    return outcome(result=ran.result, error=failures.limits_hit(ran.error, usage))


async def _wait(
    process: JobProcess, cancel: asyncio.Event, timeout_s: float | None
) -> ExitReason | None:
    """Wait for the process to exit; say why we must stop it if it has not."""
    exited = asyncio.ensure_future(process.wait_exited())
    canceled = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait(
            {exited, canceled}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        exited.cancel()
        canceled.cancel()
    if exited.done() and not exited.cancelled():
        return None
    if canceled.done() and not canceled.cancelled():
        return ExitReason.CANCELED
    return ExitReason.TIMEOUT


async def _sweep_leftovers(
    tree: ProcessTree, pump: LogPump, settings: ExecutorSettings, request: ExecutionRequest
) -> None:
    """Kill what the job left running, then let its output pipes drain.

    The job is over when its first process exits. Its process group goes at once;
    when the pipes still do not close, whatever holds them (a process that left the
    group) is found through ``/proc`` and killed too. Output still unread after that
    is abandoned rather than waited for.
    """
    tree.kill_group()
    if await pump.wait_closed(settings.drain_timeout_s):
        return
    tree.kill(pipe_holders=True)
    if await pump.wait_closed(settings.drain_timeout_s):
        return
    _log.warning(
        "job output pipes still open after the job ended; output abandoned",
        job_id=str(request.job_id),
    )


def _failed(error: JobError) -> ExecutionOutcome:
    return ExecutionOutcome(
        success=False,
        result=None,
        error=error,
        exit_code=None,
        duration_ms=0,
        exit_reason=error.exit_reason,
    )
