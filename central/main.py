"""``skerry-central --config FILE``: run the API and the hub."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from central import logs
from central.app import create_app
from central.config import load_config
from edged.configfile import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skerry-central", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="central YAML config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"skerry-central: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    app = create_app(config)
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
