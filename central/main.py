"""``skerry-central --config FILE [bootstrap]``: run the API and the hub.

``bootstrap`` creates project ``admin`` and its first admin user (name from
``SKERRY_BOOTSTRAP_ADMIN_USER``, default ``admin``; password from
``SKERRY_BOOTSTRAP_ADMIN_PASSWORD`` or, when unset, one line of stdin), once:
it refuses when users exist. Then it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from central import logs
from central.app import create_app
from central.config import CentralConfig, load_config
from central.identity import bootstrap
from central.identity.records import IdentityError
from central.store import Store
from edged.configfile import ConfigError
from edged.curvekeys import KeyFileError


def run_bootstrap(config: CentralConfig) -> int:
    """Create the first admin user and exit; the password is never echoed or logged."""
    password = os.environ.get(bootstrap.PASSWORD_ENV, "")
    if not password:
        if sys.stdin.isatty():
            password = getpass.getpass("password for the first admin user: ")
        else:
            password = sys.stdin.readline().rstrip("\n")
    user = os.environ.get(bootstrap.USER_ENV, "") or bootstrap.DEFAULT_ADMIN
    store = Store(config.state_dir / "central.db")
    try:
        bootstrap.ensure_signing_key(store, config.keep_generations)
        bootstrap.bootstrap_admin(store, config.keep_generations, user, password)
    except IdentityError as exc:
        print(f"skerry-central: bootstrap refused: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"skerry-central: user {user!r} is admin on project 'admin'")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skerry-central", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="central YAML config")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "bootstrap"],
        default="serve",
        help="serve (default), or bootstrap the first admin user and exit",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"skerry-central: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    if args.command == "bootstrap":
        return run_bootstrap(config)
    try:
        app = create_app(config)
    except KeyFileError as exc:  # the hub's own CURVE key file is unusable
        print(f"skerry-central: {exc}", file=sys.stderr)
        return 2
    hconf = HypercornConfig()
    hconf.bind = [f"{config.api_host}:{config.api_port}"]
    hconf.accesslog = None
    hconf.graceful_timeout = 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, hconf, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
