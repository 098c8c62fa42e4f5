"""Locking and installing script dependencies with uv: real uv, real PyPI, real jobs.

Tests marked ``slow`` reach PyPI (small pure-Python wheels: ``six``, ``idna``); the
others start no network access.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from gristmill.common.pydeps import DependencyError, infer_requirements
from gristmill.worker.execution.settings import default_python_bin
from gristmill.worker.pyenv import (
    ENV_LOCKFILE,
    ToolCall,
    ensure_env,
    lock,
    lockfile_digest,
    normalize_lockfile,
    probe_interpreter,
    record_tool_calls,
    sys_path_code,
)
from gristmill.worker.pyenv._diagnostics import uv_failure
from gristmill.worker.pyenv._process import uv_environment

PYTHON = default_python_bin()
#: How the Python runner starts jobs.
JOB_FLAGS = ("-I", "-S", "-B", "-X", "utf8")


def run_job(
    env: Path | None, code: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Start a job interpreter the way the Python runner does, with ``env`` on its path."""
    return subprocess.run(
        [PYTHON, *JOB_FLAGS, "-c", sys_path_code(env) + code],
        capture_output=True,
        text=True,
        check=False,
        env=environ or {},
        timeout=60,
    )


def installs(calls: list[ToolCall]) -> list[tuple[str, ...]]:
    return [call.argv for call in calls if call.argv[1:3] == ("pip", "install")]


# --- no network -----------------------------------------------------------------------


def test_lockfiles_normalize_to_one_digest() -> None:
    messy = "# a comment\nSix==1.16.0\n\n  idna==3.7  # pinned\n    # via requests\n"
    assert normalize_lockfile(messy) == "idna==3.7\nSix==1.16.0\n"
    assert lockfile_digest(messy) == lockfile_digest("Six==1.16.0\nidna==3.7\n")
    assert lockfile_digest("six==1.16.0\n") != lockfile_digest("six==1.17.0\n")


async def test_empty_lockfile_needs_no_env(tmp_path: Path) -> None:
    with record_tool_calls() as calls:
        assert await ensure_env("", python=PYTHON, cache_dir=tmp_path) is None
        assert await ensure_env("# nothing\n\n", python=PYTHON, cache_dir=tmp_path) is None
        empty = await lock([], python="3.11", cache_dir=tmp_path)
    assert (empty.lockfile, empty.packages, empty.python_version) == ("", (), "3.11")
    assert calls == []
    assert sys_path_code(None) == ""


@pytest.mark.parametrize(
    "lockfile", ["-r /etc/passwd\n", "six==1.0\n--index-url https://evil.example\n"]
)
async def test_options_never_reach_uv(tmp_path: Path, lockfile: str) -> None:
    with record_tool_calls() as calls, pytest.raises(DependencyError, match="options"):
        await ensure_env(lockfile, python=PYTHON, cache_dir=tmp_path)
    with pytest.raises(DependencyError, match="options"):
        await lock(lockfile.splitlines(), python="3.11", cache_dir=tmp_path)
    assert calls == []


async def test_resolution_timeout_kills_uv(tmp_path: Path) -> None:
    with record_tool_calls() as calls, pytest.raises(DependencyError) as caught:
        await lock(["six"], python="3.11", cache_dir=tmp_path, timeout_s=0.001)
    assert caught.value.transient
    assert "longer than" in caught.value.message
    assert [call.returncode for call in calls] == [None]  # killed, not finished


async def test_missing_uv_is_a_dependency_error(tmp_path: Path) -> None:
    with pytest.raises(DependencyError, match="could not start /nonexistent/uv"):
        await lock(["six"], python="3.11", cache_dir=tmp_path, uv_bin="/nonexistent/uv")


async def test_interpreter_probe() -> None:
    interpreter = await probe_interpreter(PYTHON)
    assert interpreter.version.count(".") == 1
    assert interpreter.tag.startswith("cpython-")
    with record_tool_calls() as calls:
        assert await probe_interpreter(PYTHON) is interpreter
    assert calls == []
    with pytest.raises(DependencyError, match="cannot be used"):
        await probe_interpreter("/nonexistent/python3")


def test_uv_gets_no_worker_secrets(tmp_path: Path) -> None:
    env = uv_environment(
        tmp_path,
        {
            "PATH": "/usr/bin",
            "HTTPS_PROXY": "http://proxy:3128",
            "UV_INDEX_URL": "https://mirror.example/simple",
            "UV_CACHE_DIR": "/elsewhere",
            "GRISTMILL_DATABASE_URL": "postgresql://u:secret@db/gristmill",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "VIRTUAL_ENV": "/work/.venv",
        },
    )
    assert env == {
        "PATH": "/usr/bin",
        "HTTPS_PROXY": "http://proxy:3128",
        "UV_INDEX_URL": "https://mirror.example/simple",
        "UV_CACHE_DIR": str(tmp_path),
        "UV_NO_PROGRESS": "1",
        "NO_COLOR": "1",
    }


@pytest.mark.parametrize(
    ("stderr", "requested", "requirement", "transient"),
    [
        (
            "error: No solution found when resolving dependencies\n  cause: Because "
            "nonexistent-pkg was not found in the package registry and you require "
            "nonexistent-pkg, we can conclude that your requirements are unsatisfiable.\n",
            ["six", "Nonexistent_Pkg>=1"],
            "Nonexistent_Pkg>=1",
            False,
        ),
        (
            "error: No solution found when resolving dependencies\n  cause: Because there is "
            "no version of six==99 and you require six==99, we can conclude that your "
            "requirements are unsatisfiable.\n",
            ["six==99"],
            "six==99",
            False,
        ),
        (
            "error: Failed to fetch: `https://pypi.org/simple/six/`\n  cause: Request failed "
            "after 3 retries\n  cause: error sending request for url\n  cause: dns error\n",
            ["six"],
            None,
            True,
        ),
        (
            "error: Failed to download `idna==3.7`\n  cause: Network connectivity is "
            "disabled, but the requested data wasn't found in the cache\n",
            ["idna==3.7"],
            "idna==3.7",
            True,
        ),
        ("", ["six"], None, False),
    ],
)
def test_uv_reports(
    stderr: str, requested: list[str], requirement: str | None, transient: bool
) -> None:
    error = uv_failure("resolving", stderr, requested)
    assert (error.requirement, error.transient, error.stderr) == (requirement, transient, stderr)
    assert error.message.startswith("resolving the script's dependencies failed: ")
    assert error.to_dict()["data"]["transient"] is transient


# --- PyPI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pycache")


@pytest.mark.slow
async def test_infer_lock_install_run(shared_cache: Path) -> None:
    script = "import six  # pin: six==1.16.0\n\ndef main():\n    return six.__version__\n"
    requirements = infer_requirements(script)
    locked = await lock(requirements, python=PYTHON, cache_dir=shared_cache)
    assert locked.lockfile == "six==1.16.0\n"
    assert locked.python_version == (await probe_interpreter(PYTHON)).version

    env = await ensure_env(locked.lockfile, python=PYTHON, cache_dir=shared_cache)
    assert env is not None
    assert (env / ENV_LOCKFILE).read_text() == locked.lockfile
    assert list((env / "__pycache__").glob("six.*.pyc"))  # compiled once, at install

    job = run_job(env, "import six; print(six.__version__, six.__file__)")
    assert job.returncode == 0, job.stderr
    version, location = job.stdout.split()
    assert version == "1.16.0"
    assert location.startswith(str(env))

    # -I ignores PYTHONPATH: the variable cannot carry the environment to a job.
    ignored = run_job(None, "import six", environ={"PYTHONPATH": str(env)})
    assert "No module named 'six'" in ignored.stderr


@pytest.mark.slow
async def test_second_ensure_env_starts_nothing(shared_cache: Path) -> None:
    lockfile = "six==1.16.0\n"
    first = await ensure_env(lockfile, python=PYTHON, cache_dir=shared_cache)
    with record_tool_calls() as calls:
        again = await ensure_env(lockfile, python=PYTHON, cache_dir=shared_cache)
        reordered = await ensure_env(
            f"# same pins\n{lockfile}", python=PYTHON, cache_dir=shared_cache
        )
    assert first == again == reordered
    assert calls == []


@pytest.mark.slow
async def test_reinstall_is_offline_from_uv_cache(shared_cache: Path) -> None:
    env = await ensure_env("six==1.16.0\n", python=PYTHON, cache_dir=shared_cache)
    assert env is not None
    for path in sorted(env.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    env.rmdir()
    stale = env.with_name(f".{env.name}.crashed")
    stale.mkdir()  # what an installer killed mid-way leaves

    with record_tool_calls() as calls:
        assert await ensure_env("six==1.16.0\n", python=PYTHON, cache_dir=shared_cache) == env
    assert [("--offline" in argv) for argv in installs(calls)] == [True]
    assert [call.returncode for call in calls] == [0]
    assert not stale.exists()
    assert run_job(env, "import six").returncode == 0


@pytest.mark.slow
async def test_concurrent_requests_install_once(tmp_path: Path) -> None:
    lockfile = "idna==3.7\n"
    with record_tool_calls() as calls:
        envs = await asyncio.gather(
            *(ensure_env(lockfile, python=PYTHON, cache_dir=tmp_path) for _ in range(4))
        )
    assert len(set(envs)) == 1
    targets = {argv[argv.index("--target") + 1] for argv in installs(calls)}
    assert len(targets) == 1  # one installer (offline, then online), three waiters
    env = envs[0]
    assert env is not None
    assert sorted(os.listdir(env.parent)) == [env.name, f"{env.name}.lock"]  # no staging left
    job = run_job(env, "import idna; print(idna.encode('ドメイン.テスト').decode())")
    assert job.stdout.strip() == "xn--eckwd4c7c.xn--zckzah"


@pytest.mark.slow
async def test_nonexistent_package(tmp_path: Path) -> None:
    name = "gristmill-surely-nonexistent-package-7f3a"
    with pytest.raises(DependencyError) as caught:
        await lock(["six", f"{name}>=1"], python=PYTHON, cache_dir=tmp_path)
    error = caught.value
    assert error.requirement == f"{name}>=1"
    assert f"{name} was not found in the package registry" in error.message
    assert name in (error.stderr or "")
    assert not error.transient


@pytest.mark.slow
async def test_unavailable_pin_fails_install_cleanly(tmp_path: Path) -> None:
    with pytest.raises(DependencyError) as caught:
        await ensure_env("six==99.0.0\n", python=PYTHON, cache_dir=tmp_path)
    assert caught.value.requirement == "six==99.0.0"
    assert "no version of six==99.0.0" in caught.value.message
    (tag_dir,) = (tmp_path / "envs").iterdir()
    assert [p.suffix for p in tag_dir.iterdir()] == [".lock"]  # no env, no staging left
