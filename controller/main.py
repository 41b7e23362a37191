"""`strata-controller`: runs the controller (with a local agent on embedded defaults)."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from controller.app import create_app
from controller.config import DEFAULT_STATE_DIR, ControllerConfig
from shared.config import load_config, parse_listen
from shared.errors import StrataError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="strata-controller", description=__doc__)
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--listen", help="HOST:PORT of the API (default 127.0.0.1:8640)")
    p.add_argument("--state-dir", help=f"database, token, seeded storages ({DEFAULT_STATE_DIR})")
    p.add_argument("--database-url", help="postgresql://... (default: SQLite in state dir)")
    p.add_argument("--agent-token-file", help="file with the token agents expect")
    p.add_argument("--no-local-agent", dest="local_agent", action="store_false", default=None,
                   help="do not run and seed a local agent")
    p.add_argument("--local-agent-listen", help="HOST:PORT of the local agent")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(ControllerConfig, args.config, {
            "listen": args.listen, "state_dir": args.state_dir,
            "database_url": args.database_url, "agent_token_file": args.agent_token_file,
            "local_agent": args.local_agent, "local_agent_listen": args.local_agent_listen,
        })
        host, port = parse_listen(config.listen)
        web.run_app(create_app(config), host=host, port=port, access_log=None,
                    print=lambda _: logging.getLogger("strata.controller").info(
                        "controller listening on %s", config.listen))
    except StrataError as exc:
        sys.exit(f"strata-controller: {exc.message}")


if __name__ == "__main__":
    main()
