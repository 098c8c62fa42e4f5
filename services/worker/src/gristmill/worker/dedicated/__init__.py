"""Dedicated workers: warm, sandboxed interpreters for the scripts a worker serves.

A worker started with ``--dedicated <workspace>:<script path>`` (``GRISTMILL_DEDICATED``)
claims only the jobs tagged ``<workspace>:<script path>``: those of a script saved
with ``dedicated_worker`` (``Script.job_tag``). Python jobs of those scripts run in a
``WarmPool``: one sandboxed interpreter per script version, started once with the
script's imports done, forking a fresh child per job (``python_template.py``). Other
languages run as ordinary jobs on the dedicated worker. See
docs/adr/0011-dedicated-workers.md.
"""

from gristmill.worker.dedicated.interpreter import InterpreterFailed, Spec, WarmInterpreter
from gristmill.worker.dedicated.pool import DedicatedSettings, WarmPool, parse_dedicated

__all__ = [
    "DedicatedSettings",
    "InterpreterFailed",
    "Spec",
    "WarmInterpreter",
    "WarmPool",
    "parse_dedicated",
]
