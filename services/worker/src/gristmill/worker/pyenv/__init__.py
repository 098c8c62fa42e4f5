"""Python environments for jobs: lock a script's requirements, install them, cached.

* :func:`lock` resolves requirements (from
  :func:`gristmill.common.pydeps.infer_requirements`) into a lockfile with
  ``uv pip compile``; do it once per script version and store the text.
* :func:`ensure_env` installs a lockfile into a directory cached by its hash (and the
  interpreter's tag), offline first; a second call for the same lockfile is one
  ``stat``.
* :func:`sys_path_code` is what the job's loader runs to see that directory.

Every failure is a :class:`gristmill.common.pydeps.DependencyError`.
"""

from gristmill.worker.pyenv._process import ToolCall, record_tool_calls
from gristmill.worker.pyenv.envs import ENV_LOCKFILE, ensure_env, env_dir, sys_path_code
from gristmill.worker.pyenv.interpreter import Interpreter, probe_interpreter
from gristmill.worker.pyenv.lock import LockResult, lock, lockfile_digest, normalize_lockfile

__all__ = [
    "ENV_LOCKFILE",
    "Interpreter",
    "LockResult",
    "ToolCall",
    "ensure_env",
    "env_dir",
    "lock",
    "lockfile_digest",
    "normalize_lockfile",
    "probe_interpreter",
    "record_tool_calls",
    "sys_path_code",
]
