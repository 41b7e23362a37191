"""`strata-controller`: runs the controller (with a local agent on embedded defaults), or
with `tokens create|list|revoke`, manages API tokens straight in its database, which is
how an operator gets a first token without one."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from aiohttp import web

from controller.app import create_app
from controller.auth.tokens import Role
from controller.config import DEFAULT_STATE_DIR, ControllerConfig
from controller.db.engine import create_engine, migrate, sessionmaker
from controller.services.tokens import TokenService
from shared.config import load_config, parse_listen
from shared.errors import StrataError
from shared.http import JsonErrorRunner
from shared.logs import FORMATS, setup_logging
from shared.sdnotify import ready_and_alive


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="strata-controller", description=__doc__)
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--listen", help="HOST:PORT of the API (default 127.0.0.1:8640)")
    p.add_argument("--state-dir",
                   help=f"database, tokens, TLS credential, seeded storages ({DEFAULT_STATE_DIR})")
    p.add_argument("--database-url", help="postgresql://... (default: SQLite in state dir)")
    p.add_argument("--no-local-agent", dest="local_agent", action="store_false", default=None,
                   help="do not run and seed a local agent")
    p.add_argument("--local-agent-listen", help="HOST:PORT of the local agent")
    p.add_argument("--local-agent-download-allow", action="append", metavar="CIDR",
                   help="a network the local agent may download images from (repeatable)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", choices=FORMATS, default="json",
                   help="json (one object per line, with request ids) or text")
    sub = p.add_subparsers(dest="command")
    tokens = sub.add_parser("tokens", help="manage API tokens").add_subparsers(
        dest="action", required=True)
    create = tokens.add_parser("create", help="make a token and print it (once)")
    create.add_argument("name")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.READER.value)
    tokens.add_parser("list", help="list tokens (never their secrets)")
    tokens.add_parser("revoke", help="revoke a token").add_argument("id")
    return p.parse_args(argv)


async def manage_tokens(config: ControllerConfig, args: argparse.Namespace) -> None:
    engine = create_engine(config.db_url)
    try:
        await migrate(engine)
        service = TokenService(sessionmaker(engine))
        if args.action == "create":
            _, token = await service.create(args.name, Role(args.role))
            print(token)
        elif args.action == "revoke":
            row = await service.revoke(args.id)
            print(f"revoked {row.name} ({row.id})")
        else:
            for row in await service.list():
                print(json.dumps({"id": row.id, "name": row.name, "role": row.role,
                                  "revoked": row.revoked_at is not None}))
    finally:
        await engine.dispose()


async def serve(config: ControllerConfig) -> None:
    """Until SIGTERM or SIGINT, then a clean shutdown: jobs stop where they can resume,
    and the local agent is stopped with the controller."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = JsonErrorRunner(create_app(config), access_log=None)
    await runner.setup()
    try:
        host, port = parse_listen(config.listen)
        await web.TCPSite(runner, host, port).start()
        logging.getLogger("strata.controller").info("controller listening on %s",
                                                    config.listen)
        notifier = asyncio.create_task(ready_and_alive())
        await stop.wait()
        notifier.cancel()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(ControllerConfig, args.config, {
            "listen": args.listen, "state_dir": args.state_dir,
            "database_url": args.database_url,
            "local_agent": args.local_agent, "local_agent_listen": args.local_agent_listen,
            "local_agent_download_allow": args.local_agent_download_allow,
        })
        asyncio.run(manage_tokens(config, args) if args.command == "tokens"
                    else serve(config))
    except StrataError as exc:
        sys.exit(f"strata-controller: {exc.message}")


if __name__ == "__main__":
    main()
