"""Whole environments for tests, built through the REST API by :mod:`zcore.deploy`.

``make_env(spec)`` serves a node (or uses the client given), builds the environment the
description says, and returns an :class:`Environment`: the uuids by kind and name plus the
client that built it::

    async def test_hosts_are_connected(make_env):
        env = await make_env({"zones": [{"name": "z1", "clusters": [
            {"name": "c1", "hypervisorType": "Simulator",
             "hosts": [{"name": "h1", "managementIp": "10.0.0.1", "cpuCapacity": 8,
                        "memoryCapacity": "16G"}]}]}]})
        host = await env.client.call("QueryHost", q=[f"uuid={env['hosts']['h1']}"])
        assert env.uuid("c1") == host["inventories"][0]["clusterUuid"]

``cloud`` is :data:`SIMULATOR_CLOUD` deployed: one zone, one simulator cluster with two hosts,
simulator primary and backup storage, a flat L2 with an L3 and an IP range, two offerings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml

from zcore.deploy import Deployment, deploy, load_spec
from zcore.node import Node
from zcore.testing.api import ApiClient

__all__ = ["SIMULATOR_CLOUD", "Environment", "cloud", "make_env", "node_apis"]

log = logging.getLogger("zcore.testing.env")

#: A small all-simulator cloud: what the ``cloud`` fixture deploys.
SIMULATOR_CLOUD: dict[str, Any] = {
    "zones": [{
        "name": "zone1",
        "backupStorage": [{"name": "bs1", "type": "Simulator", "url": "/sim/bs1",
                           "totalCapacity": "1T", "availableCapacity": "1T"}],
        "primaryStorage": [{"name": "ps1", "type": "Simulator", "url": "/sim/ps1",
                            "totalCapacity": "10T", "availableCapacity": "10T"}],
        "l2Networks": [{"name": "l2", "type": "L2NoVlanNetwork", "physicalInterface": "eth0",
                        "l3Networks": [{"name": "l3", "ipRanges": [
                            {"startIp": "10.0.0.10", "endIp": "10.0.0.250",
                             "netmask": "255.255.255.0", "gateway": "10.0.0.1"}],
                            "dns": ["8.8.8.8"]}]}],
        "clusters": [{
            "name": "cluster1", "hypervisorType": "Simulator",
            "primaryStorage": ["ps1"], "l2Networks": ["l2"],
            "hosts": [{"name": "host1", "managementIp": "192.168.0.1", "cpuCapacity": 32,
                       "memoryCapacity": "64G"},
                      {"name": "host2", "managementIp": "192.168.0.2", "cpuCapacity": 32,
                       "memoryCapacity": "64G"}],
        }],
    }],
    "instanceOfferings": [{"name": "small", "cpuNum": 1, "memorySize": "1G"}],
    "diskOfferings": [{"name": "disk10G", "diskSize": "10G"}],
}


class Environment(Deployment):
    """A deployed environment: uuids by kind and name (``env["hosts"]["host1"]``,
    ``env.uuid("zone1")``), the ``client`` that built it and its ``node``."""

    def __init__(self, deployment: Deployment, client: ApiClient) -> None:
        super().__init__()
        self.uuids = deployment.uuids
        self.client = client
        self.node: Node = client.node


def node_apis(node: Node) -> dict[str, set[str]]:
    """Every API of ``node`` and its parameter names, for :func:`zcore.deploy.plan`."""
    return {name: set(cls.params) for name, cls in node.api.messages.items()}


def _spec(spec: Mapping[str, Any] | str | os.PathLike[str]) -> Any:
    if isinstance(spec, os.PathLike):
        return load_spec(Path(spec))
    if isinstance(spec, str):
        return yaml.safe_load(spec)
    return spec


@pytest_asyncio.fixture
async def make_env(api_client: Callable[..., Awaitable[ApiClient]]
                   ) -> Callable[..., Awaitable[Environment]]:
    """A factory: ``await make_env(spec)`` deploys ``spec`` (a mapping, YAML text, or a
    path to a YAML file) through REST and returns the :class:`Environment`.

    ``client=`` deploys through that client (a node already served); other keywords go to
    ``api_client`` (``disable=("cascade",)`` serves a node without that plugin);
    ``skip_existing=True`` reuses what exists by name. A wrong description raises
    :class:`~zcore.deploy.SpecError` and a failing call :class:`~zcore.deploy.DeployError`.
    """

    async def make(spec: Mapping[str, Any] | str | os.PathLike[str], *,
                   client: ApiClient | None = None, skip_existing: bool = False,
                   **options: Any) -> Environment:
        if client is None:
            client = await api_client(**options)
        deployment = await deploy(_spec(spec), client, skip_existing=skip_existing,
                                  apis=node_apis(client.node), progress=log.info)
        return Environment(deployment, client)

    return make


@pytest_asyncio.fixture
async def cloud(make_env: Callable[..., Awaitable[Environment]]) -> Environment:
    """:data:`SIMULATOR_CLOUD`, deployed on a served node with every installed plugin."""
    return await make_env(SIMULATOR_CLOUD)
