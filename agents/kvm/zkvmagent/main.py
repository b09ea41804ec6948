"""``zstack-kvmagent --config PATH``: run the KVM agent in the foreground.

The agent listens on the configured address and port until SIGTERM or SIGINT, then stops
cleanly (running commands are cancelled, the libvirt connection closed). With ``pid_file``
set it writes its process id there once it listens, and removes the file when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from zkvmagent import __version__
from zkvmagent.config import AgentConfig, ConfigError, load_config
from zkvmagent.server import make_app

__all__ = ["main", "serve"]

log = logging.getLogger("zkvmagent")


def _logging(config: AgentConfig) -> None:
    handler: logging.Handler
    if config.log_file:
        Path(config.log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(config.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


async def serve(config: AgentConfig) -> None:
    """Run the agent until SIGTERM or SIGINT."""
    runner = web.AppRunner(make_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        log.info("KVM agent %s listening on %s:%d", __version__, config.host, config.port)
        if config.pid_file:
            Path(config.pid_file).parent.mkdir(parents=True, exist_ok=True)
            Path(config.pid_file).write_text(f"{os.getpid()}\n")
        await stop.wait()
        log.info("stopping the KVM agent")
    finally:
        await runner.cleanup()
        if config.pid_file:
            Path(config.pid_file).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zstack-kvmagent",
                                     description="The KVM agent of zstack-py.")
    parser.add_argument("--config", required=True, metavar="PATH",
                        help="the agent's YAML configuration file")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"zstack-kvmagent: {exc}", file=sys.stderr)
        return 2
    _logging(config)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("the KVM agent cannot run: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
