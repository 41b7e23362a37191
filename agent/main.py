"""`strata-agent`: runs the host agent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web

from agent.app import create_app, create_debug_app
from agent.config import DEFAULT_STATE_DIR, AgentConfig
from agent.keys import TASKS, TLS
from shared.config import load_config, parse_listen
from shared.errors import StrataError
from shared.http import JsonErrorRunner
from shared.logs import FORMATS, setup_logging
from shared.sdnotify import notify, ready_and_alive


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
    """Until SIGTERM or SIGINT, then a graceful stop: no new task is taken (submits are
    answered 503 `agent_shutting_down`), running tasks get `shutdown_grace` seconds, and
    those still running then are recorded interrupted before the process exits. The
    API keeps answering meanwhile, so the controller still reads the tasks' ends."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(config)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    debug_runner = JsonErrorRunner(create_debug_app(app), access_log=None)
    await debug_runner.setup()
    host, port = parse_listen(config.listen)
    dhost, dport = parse_listen(config.debug_listen)
    await web.TCPSite(runner, host, port, ssl_context=app[TLS].context).start()
    await web.TCPSite(debug_runner, dhost, dport).start()
    log = logging.getLogger("strata.agent")
    log.info(
        "agent listening on https://%s (%s)", config.listen,
        "enrolled" if app[TLS].enrolled else f"waiting for enrolment; join token file "
                                              f"{config.join_token_path}")
    notifier = asyncio.create_task(ready_and_alive())
    try:
        await stop.wait()
        with contextlib.suppress(OSError):
            notify("STOPPING=1")
        log.info("stopping: new tasks are refused; running ones get %gs",
                 config.shutdown_grace)
        await app[TASKS].drain(config.shutdown_grace)
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
