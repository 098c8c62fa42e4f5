"""Create (once) and use the peers' virtual environment."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["DRIVERS", "VENV", "DriverFailed", "ensure_venv", "peer_python", "run_driver"]

HERE = Path(__file__).resolve().parent
DRIVERS = HERE / "drivers"
REQUIREMENTS = HERE / "requirements.txt"
#: Override with GRISTMILL_BENCH_PEERS_VENV (e.g. to keep it outside the tree).
VENV = Path(os.environ.get("GRISTMILL_BENCH_PEERS_VENV", HERE.parent / ".peers-venv"))
_STAMP = ".requirements.sha256"
_INSTALL_TIMEOUT_S = 900


class DriverFailed(RuntimeError):
    pass


def peer_python() -> Path:
    return VENV / "bin" / "python"


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        raise RuntimeError("uv not found: it installs the peers' environment")
    return found


def ensure_venv(say: Any = print) -> Path:
    """The peers' interpreter, after creating the environment if its pins changed."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / _STAMP
    if peer_python().exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return peer_python()
    say(f"installing the peers into {VENV} (pinned in {REQUIREMENTS.name})")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    uv = _uv()
    subprocess.run(
        [uv, "venv", "-q", "--allow-existing", "--python", version, str(VENV)],
        check=True,
        timeout=_INSTALL_TIMEOUT_S,
    )
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(peer_python()), "-r", str(REQUIREMENTS)],
        check=True,
        timeout=_INSTALL_TIMEOUT_S,
    )
    stamp.write_text(digest + "\n")
    return peer_python()


def run_driver(
    driver: str,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Run ``drivers/<driver>.py`` with ``args`` in the peers' environment; its JSON answer."""
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GRISTMILL_", "VIRTUAL_ENV"))
    }
    full_env.update(env or {})
    proc = subprocess.run(
        [str(peer_python()), str(DRIVERS / f"{driver}.py"), *args],
        cwd=DRIVERS,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise DriverFailed(f"{driver} {' '.join(args[:1])} exited {proc.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
