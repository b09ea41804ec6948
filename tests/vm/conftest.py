"""The VM tests' cloud: simulator hosts, storage, an image and two L3 networks."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from zcore.testing.env import Environment

#: Two hosts of 8 CPUs and 16 GiB, one shared primary storage, an image, two L3 networks.
VM_CLOUD: dict[str, Any] = {
    "zones": [{
        "name": "zone1",
        "backupStorage": [{"name": "bs1", "type": "Simulator", "url": "/sim/bs1",
                           "totalCapacity": "1T", "availableCapacity": "1T"}],
        "primaryStorage": [{"name": "ps1", "type": "Simulator", "url": "/sim/ps1",
                            "totalCapacity": "2T", "availableCapacity": "2T"}],
        "l2Networks": [
            {"name": "l2a", "type": "L2NoVlanNetwork", "physicalInterface": "eth0",
             "l3Networks": [{"name": "l3a", "ipRanges": [
                 {"startIp": "10.0.0.10", "endIp": "10.0.0.250",
                  "netmask": "255.255.255.0", "gateway": "10.0.0.1"}], "dns": ["8.8.8.8"]}]},
            {"name": "l2b", "type": "L2NoVlanNetwork", "physicalInterface": "eth1",
             "l3Networks": [{"name": "l3b", "ipRanges": [
                 {"startIp": "10.1.0.10", "endIp": "10.1.0.250",
                  "netmask": "255.255.255.0", "gateway": "10.1.0.1"}]}]},
        ],
        "clusters": [{
            "name": "cluster1", "hypervisorType": "Simulator",
            "primaryStorage": ["ps1"], "l2Networks": ["l2a", "l2b"],
            "hosts": [{"name": "host1", "managementIp": "192.168.0.1", "cpuCapacity": 8,
                       "memoryCapacity": "16G"},
                      {"name": "host2", "managementIp": "192.168.0.2", "cpuCapacity": 8,
                       "memoryCapacity": "16G"}],
        }],
    }],
    "images": [{"name": "image1", "url": "<file:// url of a 1 MiB file>", "format": "qcow2",
                "mediaType": "RootVolumeTemplate", "platform": "Linux",
                "backupStorage": ["bs1"]}],
    "instanceOfferings": [{"name": "small", "cpuNum": 1, "memorySize": "1G"}],
    "diskOfferings": [{"name": "disk10G", "diskSize": "10G"}],
}


@pytest.fixture(scope="session")
def image_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ``file://`` URL of a 1 MiB image the simulated backup storage downloads."""
    path: Path = tmp_path_factory.mktemp("images") / "image1.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(1024 * 1024 - 4))
    return path.as_uri()


@pytest.fixture
def vm_cloud_spec(image_url: str) -> dict[str, Any]:
    """:data:`VM_CLOUD` with its image's URL filled in; a test may change it first."""
    spec = copy.deepcopy(VM_CLOUD)
    spec["images"][0]["url"] = image_url
    return spec


@pytest_asyncio.fixture
async def vm_cloud(make_env: Callable[..., Awaitable[Environment]],
                   vm_cloud_spec: dict[str, Any]) -> Environment:
    """:data:`VM_CLOUD` deployed through REST on a served node with every plugin."""
    return await make_env(vm_cloud_spec)
