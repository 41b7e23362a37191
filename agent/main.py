"""`strata-agent`: runs the host agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from agent.app import create_app, create_debug_app
from agent.config import DEFAULT_STATE_DIR, AgentConfig
from agent.keys import TLS
from shared.config import load_config, parse_listen
from shared.errors import StrataError
from shared.http import JsonErrorRunner
from shared.logs import FORMATS, setup_logging
from shared.sdnotify import ready_and_alive


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="strata-agent", description=__doc__)
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--listen", help="HOST:PORT for the controller (default 127.0.0.1:8641)")
    p.add_argument("--debug-listen", help="loopback HOST:PORT for /debug (default :8642)")
    p.add_argument("--state-dir",
                   help=f"task log, TLS credential, join token (default {DEFAULT_STATE_DIR})")
    p.add_argument("--join-token-file",
                   help="where the host's one-time join token is put (default: "
                        "STATE_DIR/join-token)")
    p.add_argument("--download-allow", action="append", metavar="CIDR",
                   help="a network images may be downloaded from (repeatable); if given, "
                        "the only ones")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", choices=FORMATS, default="json",
                   help="json (one object per line, with request ids) or text")
    return p.parse_args(argv)


async def serve(config: AgentConfig) -> None:
    app = create_app(config)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    debug_runner = JsonErrorRunner(create_debug_app(app), access_log=None)
    await debug_runner.setup()
    host, port = parse_listen(config.listen)
    dhost, dport = parse_listen(config.debug_listen)
    await web.TCPSite(runner, host, port, ssl_context=app[TLS].context).start()
    await web.TCPSite(debug_runner, dhost, dport).start()
    logging.getLogger("strata.agent").info(
        "agent listening on https://%s (%s)", config.listen,
        "enrolled" if app[TLS].enrolled else f"waiting for enrolment; join token file "
                                              f"{config.join_token_path}")
    notifier = asyncio.create_task(ready_and_alive())
    try:
        await asyncio.Event().wait()
    finally:
        notifier.cancel()
        await debug_runner.cleanup()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(AgentConfig, args.config, {
            "listen": args.listen, "debug_listen": args.debug_listen,
            "state_dir": args.state_dir, "join_token_file": args.join_token_file,
            "download_allow": args.download_allow,
        })
        asyncio.run(serve(config))
    except StrataError as exc:
        sys.exit(f"strata-agent: {exc.message}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
