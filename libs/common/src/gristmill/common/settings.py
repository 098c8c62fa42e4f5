"""Settings, read once from ``GRISTMILL_*`` environment variables.

Each service reads the fields it needs; unknown variables are ignored. A bad value
fails start-up with the variable's name and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from gristmill.common.errors import InvalidRequest

__all__ = ["Settings", "load_settings"]

_PREFIX = "GRISTMILL_"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    #: Postgres DSN. Standalone mode starts an embedded server when unset.
    database_url: str | None = None
    #: Where standalone mode keeps its data (embedded Postgres, job directories).
    data_dir: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    #: Apply pending migrations when a service starts (turn off where a separate
    #: migrate step owns the schema and services lack DDL rights).
    migrate_on_start: bool = True
    #: When set, the bootstrap admin's token is this value.
    admin_token: str | None = None
    #: Public base URL of the gateway, as jobs should reach it.
    base_url: str | None = None
    #: ``inprocess`` (standalone) or ``kafka`` (distributed).
    bus: str = "inprocess"
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: Prefix of every topic name, so several deployments can share one cluster.
    kafka_topic_prefix: str = ""
    kafka_partitions: int = 8
    kafka_session_timeout_ms: int = 10_000
    #: Worker loops per process (standalone) and the tags they claim.
    workers: int = 2
    worker_tags: tuple[str, ...] = (
        "python3",
        "bash",
        "bun",
        "deno",
        "nativets",
        "go",
        "postgresql",
        "flow",
        "dependency",
    )
    worker_group: str = "default"
    #: Scripts this worker is dedicated to, as ``<workspace>:<script path>``, and flows,
    #: as ``<workspace>:flow/<flow path>`` (comma-separated): it claims only their jobs
    #: (a flow's step jobs; tagged so when saved with ``dedicated_worker``) and keeps a
    #: warm interpreter per script version, and per warm-language step of a flow's
    #: current version (started ahead). In standalone mode a dedicated worker runs
    #: beside the ordinary ones.
    dedicated: tuple[str, ...] = ()
    #: A warm interpreter is replaced after this many jobs ...
    dedicated_max_jobs: int = 10_000
    #: ... or once its resident memory exceeds this (MiB).
    dedicated_max_rss_mb: int = 512
    #: How workers learn about new jobs: ``notify`` (LISTEN/NOTIFY + slow poll) or ``poll``.
    wake_mode: str = "notify"
    poll_interval_s: float = 0.5
    heartbeat_interval_s: float = 2.0
    #: A running job whose heartbeat is older than this is a zombie.
    zombie_timeout_s: float = 30.0
    zombie_restart_limit: int = 3
    #: Completed jobs and their logs are deleted after this many seconds (default 30 days).
    retention_s: float = 30 * 24 * 3600.0
    maintenance_interval_s: float = 5.0
    #: Longest the scheduler sleeps between passes (it wakes earlier for a due tick);
    #: new and edited schedules are seen within this.
    scheduler_interval_s: float = 1.0
    #: A schedule's tick at most this old fires whatever its catch-up policy; older
    #: ticks were missed (downtime) and follow the policy (``skip`` or ``all``).
    scheduler_grace_s: float = 10.0
    #: Schedules a scheduler replica claims per transaction.
    scheduler_batch_size: int = 100
    #: Kafka triggers: how often the triggers service re-reads them besides the change
    #: notifications (and each consumer checks its brokers), and the longest back-off of
    #: a consumer that keeps failing.
    kafka_triggers_reload_s: float = 5.0
    kafka_triggers_max_backoff_s: float = 30.0
    #: Default per-job timeout when a job sets none (seconds).
    job_timeout_s: float = 900.0
    max_log_bytes: int = 2 * 1024 * 1024
    max_args_bytes: int = 5 * 1024 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    #: Interpreter used for Python jobs; empty means the fastest real one found.
    python_bin: str | None = None
    #: Run jobs without the sandbox (no bubblewrap): only for development on machines
    #: where it cannot be installed. Jobs then see the worker's files and network.
    insecure_no_sandbox: bool = False
    #: Jobs' network: ``host`` (the worker's; needed to call the gateway back) or
    #: ``none`` (loopback only).
    job_network: Literal["host", "none"] = "host"
    #: Per-job limits (0: unlimited). Memory of the whole job, enforced by a cgroup
    #: where the worker may create one; virtual memory per process (rlimit).
    job_memory_mb: int = 1024
    job_address_space_mb: int = 8192
    #: CPU seconds per process (0: only the job's timeout bounds it).
    job_cpu_s: int = 0
    #: Processes and threads of a job; open files per process; largest file written.
    job_max_processes: int = 512
    job_max_open_files: int = 4096
    job_max_file_mb: int = 1024
    #: Size of a job's private ``/tmp`` (and ``/dev/shm``), held in memory.
    job_tmp_mb: int = 512
    #: cgroup controllers limiting each job where this worker may create groups (through
    #: v1 or v2, whichever holds each): ``memory`` (limit, peak, OOM detection) and/or
    #: ``pids``, comma-separated; empty: none.
    job_cgroups: str = "memory"
    #: Job processes a worker process starts ahead, each already in a fresh job cgroup,
    #: so that a job's start does not wait for its cgroup move (ADR 0008): lower
    #: latency for a little more CPU per job; 0 on workers that are CPU-bound draining
    #: a backlog.
    job_prestarted_launchers: int = 2
    #: Jobs of a root worker each run as their own host uid, from this base up to a
    #: million above it (0: jobs run as the worker's uid).
    job_uid_base: int = 2_000_000_000
    #: The SMTP server of email triggers (in the triggers service) listens only when
    #: ``smtp_port`` is set (e.g. 2525; 25 needs privileges). Mail is accepted for
    #: ``<address>@<smtp_domain>``; with no domain set, for any domain. Larger messages
    #: are refused with ``552``.
    smtp_host: str = "127.0.0.1"
    smtp_port: int | None = None
    smtp_domain: str | None = None
    smtp_max_message_bytes: int = 3 * 1024 * 1024
    log_format: str = "auto"
    log_level: str = "info"


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value).expanduser()
    raise NotImplementedError(f"cannot read a {kind.__name__} from {value!r}")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (``GRISTMILL_<FIELD>``), then ``overrides``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    for name in fields:
        raw = env.get(_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        if name in ("worker_tags", "dedicated"):
            values[name] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(values, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        # msgspec reports "... - at `$.http_port`"; name the variable instead.
        message = str(exc)
        location = None
        if "`$." in message:
            field = message.rsplit("`$.", 1)[1].rstrip("`").split(".")[0].split("[")[0]
            location = _PREFIX + field.upper()
        raise InvalidRequest(f"bad setting: {message}", location=location) from exc
