"""Networks over REST, as ZStack's SDKs call them: a datacenter's networks, built and deleted."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from zcore.db import ResourceVO
from zcore.testing import ApiClient
from zplugins.network.public import provider_uuid

from .helpers import GiB, bridges, rows, use_ips
from .test_services import fake_provider

pytestmark = pytest.mark.db

L2_VLAN_CLASS = "org.zstack.header.network.l2.L2VlanNetworkInventory"
L2_CLASS = "org.zstack.header.network.l2.L2NetworkInventory"
L3_CLASS = "org.zstack.header.network.l3.L3NetworkInventory"
RANGE_CLASS = "org.zstack.header.network.l3.IpRangeInventory"
REF_CLASS = "org.zstack.header.network.service.NetworkServiceL3NetworkRefInventory"


async def raw(client: ApiClient, api: str, **params: Any) -> dict[str, Any]:
    """The whole reply body of ``api``, ``schema`` included; it must succeed."""
    status, body = await client.call_raw(api, **params)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def finish(client: ApiClient, status: int, body: Any) -> dict[str, Any]:
    """Poll an asynchronous call's job to its result, which must be a success."""
    assert status == 202, body
    status, body = await client.poll(body["location"])
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def attach(client: ApiClient, l2_uuid: str, cluster_uuid: str) -> dict[str, Any]:
    """AttachL2NetworkToCluster as ZStack's SDKs send it: its body envelope is "null"."""
    status, body = await client.request(
        "POST", f"/l2-networks/{l2_uuid}/clusters/{cluster_uuid}", json={"null": {}})
    return await finish(client, status, body)


async def test_a_datacenters_networks_over_rest(api_client: Any) -> None:
    client: ApiClient = await api_client(("fake_provider", fake_provider))
    node = client.node
    zone = (await client.call("CreateZone", name="z1"))["inventory"]
    clusters = [(await client.call("CreateCluster", zoneUuid=zone["uuid"], name=name,
                                   hypervisorType="Simulator"))["inventory"]
                for name in ("c1", "c2")]
    hosts = []
    for i, c in enumerate((clusters[0], clusters[0], clusters[1])):
        hosts.append((await client.call("AddSimulatorHost", clusterUuid=c["uuid"],
                                        name=f"h{i}", managementIp=f"10.0.0.{i + 1}",
                                        cpuCapacity=4, memoryCapacity=4 * GiB))["inventory"])

    created = await raw(client, "CreateL2VlanNetwork", zoneUuid=zone["uuid"], name="vlan100",
                        physicalInterface="eth0", vlan=100)
    assert created["schema"] == {"inventory": L2_VLAN_CLASS}
    l2 = created["inventory"]
    # vlan 0 is refused before anything is created
    status, body = await client.call_raw("CreateL2VlanNetwork", zoneUuid=zone["uuid"],
                                         name="bad", physicalInterface="eth0", vlan=0)
    assert (status, body["error"]["code"]) == (503, "SYS.1007")

    for c in clusters:
        reply = await attach(client, l2["uuid"], c["uuid"])
        assert reply["schema"] == {"inventory": L2_VLAN_CLASS}
    assert sorted(reply["inventory"]["attachedClusterUuids"]) == \
        sorted(c["uuid"] for c in clusters)
    for h in hosts:
        assert bridges(h["uuid"]) == ["br_eth0_100"]
    # The same attach again is refused.
    status, body = await client.request(
        "POST", f"/l2-networks/{l2['uuid']}/clusters/{clusters[0]['uuid']}")
    status, body = await client.poll(body["location"])
    assert (status, body["error"]["code"]) == (503, "SYS.1006")

    l3 = (await client.call("CreateL3Network", l2NetworkUuid=l2["uuid"], name="l3"))["inventory"]
    ip_range = (await client.call("AddIpRange", l3NetworkUuid=l3["uuid"], name="r",
                                  startIp="192.168.10.10", endIp="192.168.10.200",
                                  netmask="255.255.255.0", gateway="192.168.10.1"))["inventory"]
    status, body = await client.call_raw("AddIpRange", l3NetworkUuid=l3["uuid"], name="r2",
                                         startIp="192.168.10.100", endIp="192.168.10.250",
                                         netmask="255.255.255.0", gateway="192.168.10.1")
    assert (status, body["error"]["code"]) == (503, "SYS.1007")
    await client.call("AddDnsToL3Network", l3NetworkUuid=l3["uuid"], dns="8.8.8.8")
    await client.call("AttachNetworkServiceToL3Network", l3NetworkUuid=l3["uuid"],
                      networkServices={"Fake": ["DHCP", "DNS"]})
    await use_ips(node, ip_range["uuid"], "192.168.10.10")

    found = await raw(client, "QueryL3Network",
                      q=[f"l2Network.cluster.uuid={clusters[1]['uuid']}",
                         "ipRanges.gateway=192.168.10.1", "zone.name=z1"])
    assert [x["uuid"] for x in found["inventories"]] == [l3["uuid"]]
    assert found["inventories"][0]["dns"] == ["8.8.8.8"]
    assert found["schema"] == {"inventories[0]": L3_CLASS,
                               "inventories[0].ipRanges[0]": RANGE_CLASS,
                               "inventories[0].networkServices[0]": REF_CLASS,
                               "inventories[0].networkServices[1]": REF_CLASS}
    l2s = await raw(client, "QueryL2Network", q=["cluster.name=c2"])
    assert l2s["schema"] == {"inventories[0]": L2_VLAN_CLASS}
    status, one = await client.request("GET", f"/l2-networks/{l2['uuid']}")
    assert status == 200 and one["schema"] == {"inventories[0]": L2_VLAN_CLASS}
    by_l2 = await client.call("QueryCluster", q=["l2Network.virtualNetworkId=100"])
    assert len(by_l2["inventories"]) == 2

    free = await raw(client, "GetFreeIp", l3NetworkUuid=l3["uuid"], limit=2)
    assert [x["ip"] for x in free["inventories"]] == ["192.168.10.11", "192.168.10.12"]
    assert free["schema"]["inventories[0]"] == "org.zstack.header.network.l3.FreeIpInventory"
    capacity = await client.call("GetIpAddressCapacity", zoneUuids=[zone["uuid"]])
    assert (capacity["totalCapacity"], capacity["usedIpAddressNumber"],
            capacity["availableCapacity"]) == (191, 1, 190)

    # A map in a query string: networkServices.<provider>=<types>
    status, body = await client.request(
        "DELETE", f"/l3-networks/{l3['uuid']}/network-services",
        params={f"networkServices.{provider_uuid('Fake')}": "DNS"})
    body = await finish(client, status, body)
    assert [s["networkServiceType"] for s in body["inventory"]["networkServices"]] == ["DHCP"]
    status, body = await client.request("DELETE", f"/l3-networks/{l3['uuid']}/dns/8.8.8.8")
    assert (await finish(client, status, body))["inventory"]["dns"] == []

    await client.call("DeleteZone", uuid=zone["uuid"])
    left = await rows(node)
    assert left == dict.fromkeys(left, 0)

    def resources(session: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(ResourceVO).where(
            ResourceVO.resourceType.in_(("ZoneVO", "ClusterVO", "HostVO", "L2NetworkVO",
                                         "L3NetworkVO", "IpRangeVO")))))

    assert await node.db.run(resources) == 0


async def test_an_attach_body_may_be_empty(api_client: Any) -> None:
    client: ApiClient = await api_client()
    zone = (await client.call("CreateZone", name="z1"))["inventory"]
    c = (await client.call("CreateCluster", zoneUuid=zone["uuid"], name="c1",
                           hypervisorType="Simulator"))["inventory"]
    l2 = (await client.call("CreateL2NoVlanNetwork", zoneUuid=zone["uuid"], name="flat",
                            physicalInterface="eth0"))["inventory"]
    status, body = await client.request("POST", f"/l2-networks/{l2['uuid']}/clusters/{c['uuid']}")
    reply = await finish(client, status, body)
    assert reply["schema"] == {"inventory": L2_CLASS}
    assert reply["inventory"]["attachedClusterUuids"] == [c["uuid"]]
    status, body = await client.request(
        "DELETE", f"/l2-networks/{l2['uuid']}/clusters/{c['uuid']}")
    assert (await finish(client, status, body))["inventory"]["attachedClusterUuids"] == []
