"""``skerry-edged --config FILE``: run one edge site."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from edged.config import EdgeConfig, load_config
from edged.configfile import ConfigError
from edged.daemon import EdgeDaemon
from edged.drivers.compute import ComputeDriver
from edged.drivers.compute_libvirt import LibvirtCompute
from edged.link import load_curve_keys


def make_compute(config: EdgeConfig) -> ComputeDriver:
    return LibvirtCompute(
        site=config.site,
        uri=config.libvirt_uri,
        state_dir=config.state_dir,
        image_dir=config.image_dir.resolve(),
        virt_type=config.virt_type,
        stop_grace_s=config.stop_grace_s,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skerry-edged", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="edge site YAML config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        load_curve_keys(config, str(args.config))  # no keys, no start: never in the clear
    except ConfigError as exc:
        print(f"skerry-edged: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s [site={config.site}] %(message)s",
    )
    # pyroute2 logs every netlink message at DEBUG (and resets its logger's level
    # on import): keep those out of the site's log at the handler.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda r: r.levelno >= logging.INFO or not r.name.startswith("pyroute2"))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        daemon_pid = os.getpid()

        def on_signal(signum: int, _frame: object) -> None:
            # pyroute2 forks a helper per IPRoute(netns=...) and ends it with SIGTERM;
            # the child inherits this handler (and asyncio's wake-up pipe), so a
            # loop.add_signal_handler would stop the daemon. A child just exits.
            if os.getpid() != daemon_pid:
                os._exit(0)
            loop.call_soon_threadsafe(stop.set)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        await EdgeDaemon(config, make_compute(config)).run(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
