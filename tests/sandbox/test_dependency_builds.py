"""A package's build code runs in the job sandbox, never as the worker.

Resolving or installing a source distribution runs the package's own build backend.
The package here is served from a local index over HTTP (real uv, real sockets, no
public index needed); its in-tree build backend is hostile: it reads a secret from
the worker's data directory, the worker's environment through ``/proc``, writes a
file outside its directory, and records what it saw in the wheel it builds.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gristmill.worker.execution.settings import default_python_bin
from gristmill.worker.pyenv import ensure_env, lock, record_tool_calls
from gristmill.worker.sandbox import Sandbox

PYTHON = default_python_bin()
SECRET = "database-password-that-no-build-may-read"

_BACKEND = """
import base64, hashlib, json, os, zipfile

NAME, VERSION = "probe_pkg", "1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"


def _seen(stage):
    seen = {"stage": stage, "uid": os.getuid(), "env": sorted(os.environ)}
    for key, path in (("secret", SECRET_FILE), ("worker_environ", f"/proc/{WORKER_PID}/environ")):
        try:
            with open(path, "rb") as f:
                seen[key] = f.read().decode(errors="replace")
        except OSError as exc:
            seen[key] = type(exc).__name__
    try:
        with open(ESCAPE + "-" + stage, "w") as f:
            f.write("escaped")
        seen["escape"] = "written"
    except OSError as exc:
        seen["escape"] = type(exc).__name__
    return seen


def _metadata():
    return f"Metadata-Version: 2.1\\nName: probe-pkg\\nVersion: {VERSION}\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _seen("metadata")
    os.makedirs(os.path.join(metadata_directory, DIST_INFO))
    with open(os.path.join(metadata_directory, DIST_INFO, "METADATA"), "w") as f:
        f.write(_metadata())
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        f"{NAME}/__init__.py": "SEEN = " + repr(json.dumps(_seen("wheel"))) + "\\n",
        f"{DIST_INFO}/METADATA": _metadata(),
        f"{DIST_INFO}/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{DIST_INFO}/RECORD,,")
    files[f"{DIST_INFO}/RECORD"] = "\\n".join(record) + "\\n"
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    return name
"""


class Index:
    """A package index (PEP 503 simple layout) on loopback serving one sdist."""

    def __init__(self, root: Path, *, secret_file: Path, escape: Path) -> None:
        where = (str(secret_file), os.getpid(), str(escape))
        backend = f"SECRET_FILE, WORKER_PID, ESCAPE = {where!r}\n{_BACKEND}"
        pyproject = textwrap.dedent(
            """\
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]
            """
        )
        sdist = io.BytesIO()
        with tarfile.open(fileobj=sdist, mode="w:gz") as tar:
            for name, text in (("pyproject.toml", pyproject), ("backend.py", backend)):
                data = text.encode()
                info = tarfile.TarInfo(f"probe_pkg-1.0/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        (root / "files").mkdir(parents=True)
        (root / "files" / "probe_pkg-1.0.tar.gz").write_bytes(sdist.getvalue())
        (root / "simple" / "probe-pkg").mkdir(parents=True)
        (root / "simple" / "probe-pkg" / "index.html").write_text(
            '<html><body><a href="../../files/probe_pkg-1.0.tar.gz">probe_pkg-1.0.tar.gz</a>'
            "</body></html>\n"
        )
        handler = partial(_QuietHandler, directory=str(root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass


class Hostile:
    def __init__(self, tmp_path: Path) -> None:
        data = tmp_path / "worker-data"
        data.mkdir()
        self.secret_file = data / "postgres-password"
        self.secret_file.write_text(SECRET)
        self.secret_file.chmod(0o600)
        self.escape = tmp_path / "escaped"
        self.cache = tmp_path / "cache"


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    setup = Hostile(tmp_path)
    index = Index(tmp_path / "index", secret_file=setup.secret_file, escape=setup.escape)
    monkeypatch.setenv("UV_INDEX_URL", index.url)
    monkeypatch.setenv("GRISTMILL_DATABASE_URL", f"postgresql://gristmill:{SECRET}@db/gristmill")
    try:
        yield setup
    finally:
        index.close()


def _seen_in(env: Path) -> dict[str, Any]:
    text = (env / "probe_pkg" / "__init__.py").read_text()
    seen: dict[str, Any] = json.loads(text.removeprefix("SEEN = ").strip().strip("'"))
    return seen


async def _lock_and_install(hostile: Hostile, sandbox: Sandbox | None) -> dict[str, Any]:
    locked = await lock(
        ["probe-pkg"], python=PYTHON, cache_dir=hostile.cache, timeout_s=120, sandbox=sandbox
    )
    assert locked.lockfile == "probe-pkg==1.0\n"
    env = await ensure_env(
        locked.lockfile, python=PYTHON, cache_dir=hostile.cache, timeout_s=120, sandbox=sandbox
    )
    assert env is not None
    return _seen_in(env)


async def test_build_code_sees_nothing_of_the_worker(hostile: Hostile, sandbox: Sandbox) -> None:
    seen = await _lock_and_install(hostile, sandbox)

    assert seen["stage"] == "wheel"  # the backend really ran, inside the installation
    assert SECRET not in json.dumps(seen)
    assert seen["secret"] in {"FileNotFoundError", "PermissionError"}
    assert seen["worker_environ"] in {"FileNotFoundError", "PermissionError"}
    # It may write into its own private /tmp; nothing reaches the host's.
    assert not any(path.name.startswith("escaped") for path in hostile.escape.parent.iterdir())
    assert not any(key.startswith("GRISTMILL_") for key in seen["env"])
    assert seen["uid"] == sandbox.policy.uid


async def test_the_probe_would_see_the_worker_unsandboxed(hostile: Hostile) -> None:
    """The control: the same build without the sandbox reads the secret, so the test
    above fails if the sandbox is ever dropped from the installer."""
    seen = await _lock_and_install(hostile, None)

    assert seen["secret"] == SECRET
    assert "PATH=" in seen["worker_environ"]  # the worker process's environment block
    assert seen["escape"] == "written"
    assert (hostile.escape.parent / "escaped-wheel").read_text() == "escaped"


async def test_installed_environment_is_usable_by_jobs(hostile: Hostile, sandbox: Sandbox) -> None:
    """What the sandboxed installer wrote is complete and readable from outside it."""
    locked = await lock(["probe-pkg"], python=PYTHON, cache_dir=hostile.cache, sandbox=sandbox)
    env = await ensure_env(locked.lockfile, python=PYTHON, cache_dir=hostile.cache, sandbox=sandbox)
    assert env is not None
    assert (env / "probe_pkg-1.0.dist-info" / "METADATA").read_text().startswith("Metadata")
    assert oct((env / "probe_pkg" / "__init__.py").stat().st_mode & 0o004) == oct(0o004)
    # A second call is a cache hit: nothing runs, the same directory comes back.
    with record_tool_calls() as calls:
        again = await ensure_env(
            locked.lockfile, python=PYTHON, cache_dir=hostile.cache, sandbox=sandbox
        )
    assert (again, calls) == (env, [])
