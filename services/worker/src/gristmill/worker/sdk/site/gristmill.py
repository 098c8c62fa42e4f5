"""Talk to Gristmill from inside a job: variables, secrets, resources, state, other jobs.

Every function uses the job's own short-lived token (``WM_TOKEN``) and workspace;
nothing here needs configuring inside a job. Outside a job, set ``GRISTMILL_BASE_URL``
(or ``BASE_INTERNAL_URL``), ``GRISTMILL_TOKEN`` (or ``WM_TOKEN``) and
``GRISTMILL_WORKSPACE`` (or ``WM_WORKSPACE``).

    import gristmill

    def main():
        api_key = gristmill.get_variable("u/admin/api_key")
        count = (gristmill.get_state() or 0) + 1
        gristmill.set_state(count)
        return gristmill.run_script("f/tools/double", args={"x": count})
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = [
    "GristmillError",
    "cancel_job",
    "get_job_status",
    "get_resource",
    "get_result",
    "get_state",
    "get_variable",
    "run_script",
    "run_script_async",
    "set_resource",
    "set_state",
    "set_variable",
    "whoami",
]


class GristmillError(Exception):
    """An API call failed; ``status`` is the HTTP status, ``body`` the decoded answer."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _base() -> str:
    base = _env("GRISTMILL_BASE_URL", "BASE_INTERNAL_URL", "WM_BASE_URL")
    if not base:
        raise GristmillError("no server address: set GRISTMILL_BASE_URL", 0, None)
    return base.rstrip("/") + "/api"


def _workspace() -> str:
    workspace = _env("GRISTMILL_WORKSPACE", "WM_WORKSPACE")
    if not workspace:
        raise GristmillError("no workspace: set GRISTMILL_WORKSPACE", 0, None)
    return workspace


def _call(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> Any:
    url = _base() + path
    if not url.startswith(("http://", "https://")):
        raise GristmillError(f"the server address must be http(s), not {url!r}", 0, None)
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310  # scheme checked above
    token = _env("GRISTMILL_TOKEN", "WM_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # scheme checked above
            raw = response.read()
            kind = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            decoded: Any = json.loads(raw)
        except ValueError:
            decoded = raw.decode(errors="replace")
        message = decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
        raise GristmillError(f"{method} {path}: {exc.code} {message}", exc.code, decoded) from None
    if not raw:
        return None
    if "json" in kind:
        return json.loads(raw)
    return raw.decode()


def _ws(path: str) -> str:
    return f"/w/{_workspace()}{path}"


def _quote(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def whoami() -> dict[str, Any]:
    """The user this job acts for."""
    result: dict[str, Any] = _call("GET", "/users/whoami")
    return result


def get_variable(path: str) -> str:
    """A variable's value (secrets are decrypted for the job)."""
    value: str = _call("GET", _ws(f"/variables/get_value/{_quote(path)}"))
    return value


def set_variable(path: str, value: str, *, is_secret: bool = False) -> None:
    """Create the variable, or update its value if it exists."""
    exists = _call("GET", _ws(f"/variables/exists/{_quote(path)}"))
    if exists:
        _call("POST", _ws(f"/variables/update/{_quote(path)}"), body={"value": value})
    else:
        _call(
            "POST",
            _ws("/variables/create"),
            body={"path": path, "value": value, "is_secret": is_secret, "description": ""},
        )


def get_resource(path: str, *, none_if_undefined: bool = False) -> Any:
    """A resource's value with ``$var:`` and ``$res:`` references resolved."""
    try:
        return _call("GET", _ws(f"/resources/get_value_interpolated/{_quote(path)}"))
    except GristmillError as exc:
        if none_if_undefined and exc.status == 404:
            return None
        raise


def set_resource(value: Any, path: str, *, resource_type: str = "any") -> None:
    """Create the resource, or replace its value if it exists."""
    exists = _call("GET", _ws(f"/resources/exists/{_quote(path)}"))
    if exists:
        _call("POST", _ws(f"/resources/update_value/{_quote(path)}"), body={"value": value})
    else:
        _call(
            "POST",
            _ws("/resources/create"),
            body={"path": path, "value": value, "resource_type": resource_type},
        )


def _state_path() -> str:
    path = _env("WM_STATE_PATH_NEW", "WM_STATE_PATH")
    if not path:
        raise GristmillError("no state path: state is available inside jobs only", 0, None)
    return path


def get_state() -> Any:
    """This script's state for the trigger that started it (``None`` at first)."""
    return get_resource(_state_path(), none_if_undefined=True)


def set_state(value: Any) -> None:
    """Replace this script's state for the trigger that started it."""
    set_resource(value, _state_path(), resource_type="state")


def _run_query() -> dict[str, Any]:
    query: dict[str, Any] = {}
    job = os.environ.get("WM_JOB_ID")
    if job:
        query["parent_job"] = job
    root = os.environ.get("WM_ROOT_FLOW_JOB_ID")
    if root:
        query["root_job"] = root
    return query


def run_script_async(
    path: str | None = None, *, hash_: str | None = None, args: dict[str, Any] | None = None
) -> str:
    """Start a script by path or hash; returns the new job's id at once."""
    if (path is None) == (hash_ is None):
        raise ValueError("give exactly one of path or hash_")
    where = f"/jobs/run/p/{_quote(path)}" if path is not None else f"/jobs/run/h/{hash_}"
    job_id: str = _call("POST", _ws(where), body=args or {}, query=_run_query())
    return job_id.strip().strip('"')


def run_script(
    path: str | None = None,
    *,
    hash_: str | None = None,
    args: dict[str, Any] | None = None,
    timeout: float = 900.0,
) -> Any:
    """Run a script and return its result; raises ``GristmillError`` if it failed."""
    job_id = run_script_async(path, hash_=hash_, args=args)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        answer = _call("GET", _ws(f"/jobs_u/completed/get_result_maybe/{job_id}"))
        if answer.get("completed"):
            if not answer.get("success"):
                raise GristmillError(f"job {job_id} failed: {answer.get('result')}", 0, answer)
            return answer.get("result")
        if time.monotonic() > deadline:
            raise GristmillError(f"job {job_id} still running after {timeout:g}s", 0, None)
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def get_result(job_id: str) -> Any:
    """The result of a completed job."""
    return _call("GET", _ws(f"/jobs_u/completed/get_result/{job_id}"))


def get_job_status(job_id: str) -> str:
    """``WAITING``, ``RUNNING`` or ``COMPLETED``."""
    job = _call("GET", _ws(f"/jobs_u/get/{job_id}"), query={"no_logs": "true"})
    if job.get("type") == "CompletedJob":
        return "COMPLETED"
    return "RUNNING" if job.get("running") else "WAITING"


def cancel_job(job_id: str, reason: str | None = None) -> None:
    """Cancel a queued or running job."""
    _call("POST", _ws(f"/jobs_u/queue/cancel/{job_id}"), body={"reason": reason})
