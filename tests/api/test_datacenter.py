"""A whole datacenter built through REST, queried across resources, then cascaded away."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect

from zcore.db import Base, ResourceVO
from zcore.testing import free_port

pytestmark = pytest.mark.db

IMAGE = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=IMAGE)

    app = web.Application()
    app.router.add_get("/images/disk.raw", image)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def datacenter(image_url: str, backup_dir: Path) -> dict[str, Any]:
    hosts = iter(range(1, 10))

    def host(name: str) -> dict[str, Any]:
        return {"name": name, "managementIp": f"10.10.0.{next(hosts)}", "cpuCapacity": 16,
                "memoryCapacity": "32G"}

    return {
        "zones": [{
            "name": "dc1",
            "backupStorage": [{"name": "sftp1", "type": "SftpBackupStorage",
                               "url": str(backup_dir), "hostname": "127.0.0.1",
                               "username": "root", "password": "password"}],
            "primaryStorage": [{"name": "local1", "type": "LocalStorage",
                                "url": "/zstack/local"},
                               {"name": "nfs1", "type": "NFS", "url": "10.10.9.9:/export"}],
            "l2Networks": [{"name": "vlan100", "type": "L2VlanNetwork", "vlan": 100,
                            "physicalInterface": "eth1",
                            "l3Networks": [{"name": "public", "ipRanges": [
                                {"startIp": "172.20.0.10", "endIp": "172.20.0.250",
                                 "netmask": "255.255.0.0", "gateway": "172.20.0.1"}],
                                "dns": ["8.8.8.8"]}]}],
            "clusters": [
                {"name": "a", "hypervisorType": "Simulator", "primaryStorage": ["local1", "nfs1"],
                 "l2Networks": ["vlan100"], "hosts": [host("a1"), host("a2")]},
                {"name": "b", "hypervisorType": "Simulator", "primaryStorage": ["nfs1"],
                 "l2Networks": ["vlan100"], "hosts": [host("b1")]},
            ],
        }],
        "images": [{"name": "disk", "url": f"{image_url}/images/disk.raw", "format": "raw",
                    "mediaType": "RootVolumeTemplate", "backupStorage": ["sftp1"]}],
        "instanceOfferings": [{"name": "small", "cpuNum": 1, "memorySize": "1G"}],
        "diskOfferings": [{"name": "d20", "diskSize": "20G"}],
    }


async def names(client: Any, api: str, *conditions: str) -> list[str]:
    body = await client.call(api, q=list(conditions))
    return sorted(item["name"] for item in body["inventories"])


async def test_a_datacenter_is_built_queried_and_cascaded_away(
        make_env: Any, image_server: str, tmp_path: Path) -> None:
    env = await make_env(datacenter(image_server, tmp_path / "backup"))
    client = env.client

    image = (await client.call("QueryImage", q=["name=disk"]))["inventories"][0]
    assert image["status"] == "Ready" and image["size"] == len(IMAGE)
    assert image["md5Sum"] == hashlib.md5(IMAGE).hexdigest()

    assert await names(client, "QueryHost", "cluster.zone.name=dc1") == ["a1", "a2", "b1"]
    assert await names(client, "QueryHost", "cluster.name=b") == ["b1"]
    assert await names(client, "QueryL3Network",
                       f"l2Network.cluster.uuid={env.uuid('b')}") == ["public"]
    assert await names(client, "QueryPrimaryStorage",
                       f"cluster.host.uuid={env['hosts']['b1']}") == ["nfs1"]
    assert await names(client, "QueryPrimaryStorage", "cluster.name=a") == ["local1", "nfs1"]
    assert await names(client, "QueryImage",
                       "backupStorageRefs.backupStorage.name=sftp1") == ["disk"]
    assert await names(client, "QueryZone", "cluster.host.name=a2") == ["dc1"]
    ranges = await client.call("QueryIpRange", q=["l3Network.l2Network.name=vlan100"])
    assert [r["startIp"] for r in ranges["inventories"]] == ["172.20.0.10"]

    counts_before = await row_counts(client.node)
    assert counts_before["HostVO"] == 3 and counts_before["ClusterVO"] == 2

    await client.call("DeleteZone", uuid=env.uuid("dc1"))
    after = await row_counts(client.node)
    zone_tree = ("ZoneVO", "ClusterVO", "HostVO", "PrimaryStorageVO",
                 "PrimaryStorageClusterRefVO", "L2NetworkVO", "L2NetworkClusterRefVO",
                 "L3NetworkVO", "IpRangeVO", "L3NetworkDnsVO", "BackupStorageZoneRefVO")
    assert {t: after.get(t, 0) for t in zone_tree} == dict.fromkeys(zone_tree, 0)
    # Backup storage is not in a zone, as in ZStack: deleting the zone detached it; its
    # images stay, and so do the offerings, which belong to no zone.
    assert after["BackupStorageVO"] == 1 and after["ImageVO"] == 1
    assert after["InstanceOfferingVO"] == 1 and after["DiskOfferingVO"] == 1
    assert await orphans(client.node) == []


async def row_counts(node: Any) -> dict[str, int]:
    def count(session: Any) -> dict[str, int]:
        # Other test modules declare models of their own; count the tables this node has.
        present = set(sa_inspect(session.connection()).get_table_names())
        return {table.name: session.scalar(select(func.count()).select_from(table))
                for table in Base.metadata.sorted_tables if table.name in present}
    result: dict[str, int] = await node.db.run(count)
    return result


async def orphans(node: Any) -> list[str]:
    """Resource rows whose resource is gone: nothing may be left half-deleted."""
    models = {name: p.record.model for name, p in node.registry.resource_types.items()
              if p.record.model is not None and hasattr(p.record.model, "uuid")}

    def find(session: Any) -> list[str]:
        left = []
        for uuid, kind in session.execute(select(ResourceVO.uuid, ResourceVO.resourceType)):
            model = models.get(kind)
            if model is not None and session.get(model, uuid) is None:
                left.append(f"{kind} {uuid}")
        return left

    result: list[str] = await node.db.run(find)
    return result
