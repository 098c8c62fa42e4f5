"""Dedicated workers: warm, sandboxed interpreters for the scripts a worker serves.

A worker started with ``--dedicated <workspace>:<script path>`` (``GRISTMILL_DEDICATED``)
claims only the jobs tagged ``<workspace>:<script path>``: those of a script saved
with ``dedicated_worker`` (``Script.job_tag``). Python and Bun jobs of those scripts
run in a ``WarmPool``: one sandboxed interpreter per script version, started once with
the script's imports done; Python forks a fresh child per job
(``python_template.py``), Bun runs each job in its own process with a fresh instance
of the script's module (``bun_template.mjs``). Other languages run as ordinary jobs
on the dedicated worker.

``--dedicated <workspace>:flow/<flow path>`` binds the worker to a flow saved with
``dedicated_worker``: it claims every step job of the flow (tagged so by the flow
engine) and pre-warms one interpreter per step of the flow's current version in a warm
language (``targets.flow_steps``), again when the flow is saved anew. See
docs/adr/0011-dedicated-workers.md.
"""

from gristmill.worker.dedicated.interpreter import InterpreterFailed, Spec, WarmInterpreter
from gristmill.worker.dedicated.pool import DedicatedSettings, WarmPool, parse_dedicated
from gristmill.worker.dedicated.targets import Target

__all__ = [
    "DedicatedSettings",
    "InterpreterFailed",
    "Spec",
    "Target",
    "WarmInterpreter",
    "WarmPool",
    "parse_dedicated",
]
