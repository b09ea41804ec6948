"""``zstack-ctl``: start, stop and inspect a management node on this machine.

Every failure an operator can cause (bad configuration, a broken plugin, a port in use, an
unreachable database) ends with a one-paragraph message and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from zcore.config import Settings, load_settings
from zcore.errors import StartupError

__all__ = ["main"]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "host", None):
        overrides.setdefault("node", {})["host"] = args.host
    if getattr(args, "port", None):
        overrides.setdefault("node", {})["port"] = args.port
    if getattr(args, "db_url", None):
        overrides.setdefault("database", {})["url"] = args.db_url
    if getattr(args, "bus_url", None):
        overrides.setdefault("bus", {})["url"] = args.bus_url
    return load_settings(args.config, overrides=overrides)


def _read_pid(settings: Settings) -> int | None:
    try:
        pid = int(settings.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _health(settings: Settings, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{settings.url}/health", timeout=timeout) as reply:
            data: dict[str, Any] = json.load(reply)
            return data
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log.level,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        stream=sys.stdout,
    )


def cmd_start(args: argparse.Namespace) -> int:
    from zcore.node import check, serve

    settings = _settings(args)
    pid = _read_pid(settings)
    if pid is not None:
        print(f"management node is already running (pid {pid}) on {settings.url}")
        return 0
    plugins = check(settings)
    if args.foreground:
        _setup_logging(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.pid_file.write_text(str(os.getpid()))
        try:
            asyncio.run(serve(settings, plugins=plugins))
        finally:
            if _read_pid(settings) == os.getpid():
                settings.pid_file.unlink(missing_ok=True)
        return 0

    settings.log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "zcore.ctl"]
    if args.config:
        command += ["--config", str(args.config)]
    command += ["start", "--foreground"]
    for flag, value in (("--host", args.host), ("--port", args.port),
                        ("--db-url", args.db_url), ("--bus-url", args.bus_url)):
        if value:
            command += [flag, str(value)]
    offset = settings.log_file.stat().st_size if settings.log_file.exists() else 0
    with open(settings.log_file, "ab") as log_out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    print(f"starting management node (pid {process.pid}), log: {settings.log_file}")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"management node failed to start (exit status {process.returncode}):",
                  file=sys.stderr)
            with open(settings.log_file, "rb") as log_in:
                log_in.seek(offset)
                tail = log_in.read().decode(errors="replace").strip().splitlines()[-20:]
            print("\n".join(tail), file=sys.stderr)
            return 1
        info = _health(settings, timeout=1.0)
        if info is not None and _read_pid(settings) == process.pid:
            print(f"management node {info['nodeUuid']} is running on {settings.url}")
            return 0
        time.sleep(0.2)
    print(f"management node did not answer on {settings.url} within {START_TIMEOUT:.0f} s; "
          f"see {settings.log_file}", file=sys.stderr)
    return 1


def cmd_stop(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pid = _read_pid(settings)
    if pid is None:
        print("management node is not running")
        settings.pid_file.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _read_pid(settings) == pid:
        time.sleep(0.1)
    if _read_pid(settings) == pid:
        print(f"management node (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s; "
              "killing it", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
    settings.pid_file.unlink(missing_ok=True)
    print(f"management node (pid {pid}) stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pid = _read_pid(settings)
    info = _health(settings) if pid is not None else None
    if args.json:
        print(json.dumps({"running": pid is not None, "pid": pid, "url": settings.url,
                          "health": info}))
    elif pid is None:
        print("management node is stopped")
    elif info is None:
        print(f"management node is running (pid {pid}) but does not answer on {settings.url}")
    else:
        active = sorted(name for name, status in info["plugins"].items() if status == "active")
        print(f"management node {info['nodeUuid']} is running (pid {pid}) on {settings.url}\n"
              f"  version {info['version']}, database {info['database']}\n"
              f"  plugins: {', '.join(active)}")
    # LSB: 0 running, 1 running but not answering, 3 stopped
    return 3 if pid is None else (0 if info is not None else 1)


def cmd_plugins(args: argparse.Namespace) -> int:
    from zcore.plugins import inspect_plugins

    settings = _settings(args)
    infos = inspect_plugins(settings)
    if args.json:
        print(json.dumps([{"name": i.name, "module": i.module, "distribution": i.distribution,
                           "version": i.version, "status": i.status, "reason": i.reason}
                          for i in infos]))
        return 0
    width = max(len(i.name) for i in infos)
    for i in infos:
        reason = f"  ({i.reason})" if i.reason else ""
        print(f"{i.name:<{width}}  {i.version or '-':<8}  {i.status:<8}  {i.module}{reason}")
    return 1 if any(i.status == "failed" for i in infos) else 0


def cmd_deploydb(args: argparse.Namespace) -> int:
    from zcore.db import create_database
    from zcore.plugins import build_plugin_manager

    settings = _settings(args)
    plugins = build_plugin_manager(settings)
    db = create_database(settings.database_url, threads=1)
    try:
        applied = db.upgrade(plugins.registry.records("db_migrations"))
    finally:
        asyncio.run(db.close())
    if applied:
        print(f"database {db.masked_url} migrated: {', '.join(applied)}")
    else:
        print(f"database {db.masked_url} is up to date")
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    import msgspec

    settings = _settings(args)
    print(f"# from {settings.source}, with ZSTACK_* variables applied")
    data = msgspec.to_builtins(settings)
    data.pop("source", None)
    import yaml

    print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zstack-ctl",
                                     description="Control the management node on this machine.")
    parser.add_argument("--config", type=Path, default=None,
                        help="configuration file (default: $ZSTACK_CONFIG or config/zstack.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = sub.add_parser("start", help="start the management node")
    start.add_argument("--foreground", action="store_true",
                       help="run in this process and log to the terminal")
    start.add_argument("--host", help="address to listen on (node.host)")
    start.add_argument("--port", type=int, help="port to listen on (node.port)")
    start.add_argument("--db-url", help="database URL (database.url)")
    start.add_argument("--bus-url", help="message bus URL (bus.url)")
    start.set_defaults(func=cmd_start)

    sub.add_parser("stop", help="stop the management node").set_defaults(func=cmd_stop)

    status = sub.add_parser("status", help="say whether the node runs and answers")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    plugins = sub.add_parser("plugins", help="list installed plugins and their status")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    deploydb = sub.add_parser("deploydb", help="create or upgrade the database schema")
    deploydb.add_argument("--db-url", help="database URL (database.url)")
    deploydb.set_defaults(func=cmd_deploydb)

    sub.add_parser("show-config", help="print the effective configuration").set_defaults(
        func=cmd_show_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except StartupError as exc:
        print(f"zstack-ctl {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
