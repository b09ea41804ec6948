"""A management node running as its own process, for tests that drive it from outside."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zcore.testing import free_port


def _request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
             ) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=10) as reply:
        return json.load(reply)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A node started with ``zstack-ctl start --foreground`` on a fresh data directory.

    Yields its ``url`` and an admin ``session`` uuid; the process is stopped afterwards.
    """
    data_dir: Path = tmp_path_factory.mktemp("node")
    port = free_port()
    env = {**os.environ, "ZSTACK_NODE_DATA_DIR": str(data_dir), "ZSTACK_NODE_PORT": str(port),
           "ZSTACK_LOG_LEVEL": "WARNING"}
    env.pop("ZSTACK_DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "zcore.ctl", "start", "--foreground"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _request("GET", f"{url}/health")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the node did not start: "
                                       + (process.stderr.read().decode()
                                          if process.stderr else "")) from None
                time.sleep(0.2)
        login = _request("PUT", f"{url}/zstack/v1/accounts/login", {"logInByAccount": {
            "accountName": "admin", "password": hashlib.sha512(b"password").hexdigest()}})
        yield {"url": url, "session": login["inventory"]["uuid"]}
    finally:
        process.terminate()
        process.wait(timeout=30)
