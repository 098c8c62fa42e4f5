"""Python dependencies of a script, read from its source: inference, no execution.

:func:`infer_requirements` turns a script into :class:`Requirements` (PEP 508
strings plus the workspace scripts it imports). Resolving them into a lockfile and
installing it is the worker's job (``gristmill.worker.pyenv``); this package starts
no process and touches no network.
"""

from gristmill.common.pydeps.errors import DependencyError
from gristmill.common.pydeps.inference import (
    AsyncResolver,
    Requirements,
    Resolver,
    infer_requirements,
    infer_requirements_async,
)
from gristmill.common.pydeps.mapping import (
    IMPORT_TO_DISTRIBUTION,
    NAMESPACE_DEPTHS,
    distribution_for,
)
from gristmill.common.pydeps.requirement import (
    check_requirement,
    normalize_name,
    requirement_name,
)

__all__ = [
    "IMPORT_TO_DISTRIBUTION",
    "NAMESPACE_DEPTHS",
    "AsyncResolver",
    "DependencyError",
    "Requirements",
    "Resolver",
    "check_requirement",
    "distribution_for",
    "infer_requirements",
    "infer_requirements_async",
    "normalize_name",
    "requirement_name",
]
