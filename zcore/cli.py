"""``zstack-cli``: the command line for the management node's API.

The API itself arrives with the REST surface; until then the CLI reports which node it would
talk to and whether that node answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zstack-cli",
                                     description="Command line for the management node's API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("command", nargs="*", help="an API call, e.g. QueryZone name=z1")
    args = parser.parse_args(argv)
    url = f"http://{args.host}:{args.port}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as reply:
            health = json.load(reply)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"zstack-cli: no management node answers on {url}: {exc}", file=sys.stderr)
        return 1
    if args.command:
        print(f"zstack-cli: {args.command[0]}: this node (version {health['version']}) serves "
              "no API calls yet", file=sys.stderr)
        return 1
    print(f"management node {health['nodeUuid']} on {url}, version {health['version']}")
    return 0
