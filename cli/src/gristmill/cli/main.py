"""``gristmill`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gristmill.common.errors import GristmillError
from gristmill.common.log_config import configure_logging
from gristmill.common.settings import load_settings

__all__ = ["main"]

SERVICES = ("gateway", "dispatcher", "worker", "scheduler", "triggers")
_INSECURE_HELP = (
    "run jobs without the sandbox, e.g. where bubblewrap cannot be installed "
    "(GRISTMILL_INSECURE_NO_SANDBOX); development only"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gristmill", description="Scripts to production: APIs, jobs, flows and triggers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run everything in one process (standalone)")
    up.add_argument("--port", type=int, help="HTTP port (GRISTMILL_HTTP_PORT)")
    up.add_argument("--workers", type=int, help="worker loops (GRISTMILL_WORKERS)")
    up.add_argument("--insecure-no-sandbox", action="store_true", help=_INSECURE_HELP)
    commands.add_parser("migrate", help="apply database migrations and exit")
    secrets = commands.add_parser("secrets", help="manage the encryption of secrets")
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    rotate = secrets_commands.add_parser(
        "rotate",
        help="new data key per workspace, every secret re-encrypted, every data key "
        "wrapped by the first (active) master key",
    )
    rotate.add_argument("--workspace", help="only this workspace (default: all)")
    rotate.add_argument("--keep-old-keys", action="store_true", help="keep the previous data keys")
    for name in SERVICES:
        service = commands.add_parser(name, help=f"run the {name} service alone (distributed)")
        if name == "gateway":
            service.add_argument("--port", type=int, help="HTTP port (GRISTMILL_HTTP_PORT)")
        if name == "worker":
            service.add_argument("--workers", type=int, help="job loops in this process")
            service.add_argument(
                "--burst", action="store_true", help="exit once no job is left to claim"
            )
            service.add_argument("--insecure-no-sandbox", action="store_true", help=_INSECURE_HELP)
            service.add_argument(
                "--dedicated",
                action="append",
                metavar="WORKSPACE:PATH",
                help="run only this script's jobs, in a warm interpreter; WORKSPACE:flow/PATH: "
                "this flow's steps (repeatable; GRISTMILL_DEDICATED)",
            )
    broker = commands.add_parser("broker", help="run a local Kafka-protocol broker for development")
    broker.add_argument("--port", type=int, default=9092)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = {
            "http_port": getattr(args, "port", None) if args.command != "broker" else None,
            "workers": getattr(args, "workers", None),
            "insecure_no_sandbox": getattr(args, "insecure_no_sandbox", None) or None,
            "dedicated": getattr(args, "dedicated", None),
        }
        if args.command in SERVICES:
            overrides["bus"] = "kafka"
        settings = load_settings(**overrides)
    except GristmillError as exc:
        print(f"gristmill: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "broker":
        from gristmill.cli.broker import run_broker

        return run_broker(args.port)

    try:
        if args.command == "up":
            from gristmill.cli.standalone import run_standalone

            asyncio.run(run_standalone(settings))
        elif args.command == "migrate":
            from gristmill.cli.runtime import run_migrate

            asyncio.run(run_migrate(settings))
        elif args.command == "secrets":
            from gristmill.cli.runtime import run_secrets_rotate

            outcome = asyncio.run(
                run_secrets_rotate(
                    settings, workspace=args.workspace, retire_old=not args.keep_old_keys
                )
            )
            for done in outcome.rotated:
                print(
                    f"{done.workspace}: data key {done.active_key_id} active, "
                    f"{done.reencrypted} secret(s) re-encrypted, "
                    f"keys wrapped by master key {done.master_key_id!r}"
                )
            print(f"data keys rewrapped in {outcome.rewrapped} workspace(s)")
        else:
            from gristmill.cli.distributed import run_service

            asyncio.run(run_service(args.command, settings, burst=getattr(args, "burst", False)))
    except KeyboardInterrupt:
        return 130
    except GristmillError as exc:
        print(f"gristmill: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
