"""The network-service framework: providers registered by plugins, services on L3 networks."""

from __future__ import annotations

from typing import Any

import pytest

from zcore import hookimpl
from zcore.node import Node
from zplugins.network.public import provider_uuid, register_network_service_provider

from .helpers import MakeNode, call, fails, l3, rows, vlan_l2, zone

pytestmark = pytest.mark.db

PROVIDER_FIELDS = {"attachedL2NetworkUuids", "createDate", "description", "lastOpDate", "name",
                   "networkServiceTypes", "type", "uuid"}


class fake_provider:  # a plugin that provides DHCP and DNS, as Flat networking will
    @staticmethod
    @hookimpl
    async def zcore_node_starting(node: Node) -> None:
        await register_network_service_provider(
            node, type="Fake", name="Fake provider", service_types=["DHCP", "DNS"],
            description="for tests")


class other_provider:
    @staticmethod
    @hookimpl
    async def zcore_node_starting(node: Node) -> None:
        await register_network_service_provider(
            node, type="Other", name="Other provider", service_types=["DHCP", "SNAT"])


async def l3_network(node: Node) -> dict[str, Any]:
    z = await zone(node)
    return await l3(node, (await vlan_l2(node, z["uuid"]))["uuid"])


async def test_no_provider_is_registered_by_default(node: Node) -> None:
    assert (await call(node, "QueryNetworkServiceProvider"))["inventories"] == []
    net = await l3_network(node)
    error = await fails(call(node, "AttachNetworkServiceToL3Network", l3NetworkUuid=net["uuid"],
                             networkServices={"Flat": ["DHCP"]}), "SYS.1007")
    assert "no network service provider has the uuid or type 'Flat'" in error.details
    assert "providers: none" in error.details


async def test_a_plugin_registers_its_provider(make_node: MakeNode) -> None:
    node = await make_node(("fake_provider", fake_provider))
    found = (await call(node, "QueryNetworkServiceProvider"))["inventories"]
    assert len(found) == 1
    provider = found[0]
    assert set(provider) == PROVIDER_FIELDS
    assert (provider["uuid"], provider["type"], provider["name"], provider["description"],
            provider["networkServiceTypes"], provider["attachedL2NetworkUuids"]) == \
        (provider_uuid("Fake"), "Fake", "Fake provider", "for tests", ["DHCP", "DNS"], [])
    by_type = await call(node, "QueryNetworkServiceProvider",
                         q=["networkServiceTypes.type=DNS"])
    assert [p["type"] for p in by_type["inventories"]] == ["Fake"]
    # A second node (or a restart) registers it again: one provider, its types brought up
    # to date.
    await register_network_service_provider(node, type="Fake", name="Fake v2",
                                            service_types=["DHCP", "Userdata"])
    again = (await call(node, "QueryNetworkServiceProvider"))["inventories"]
    assert [(p["name"], p["networkServiceTypes"]) for p in again] == \
        [("Fake v2", ["DHCP", "Userdata"])]
    second = await make_node(("fake_provider", fake_provider))
    assert len((await call(second, "QueryNetworkServiceProvider"))["inventories"]) == 1


async def test_attaching_and_detaching_services(make_node: MakeNode) -> None:
    node = await make_node(("fake_provider", fake_provider), ("other_provider", other_provider))
    net = await l3_network(node)
    fake, other = provider_uuid("Fake"), provider_uuid("Other")
    attached = (await call(node, "AttachNetworkServiceToL3Network", l3NetworkUuid=net["uuid"],
                           networkServices={fake: ["DHCP", "DNS"]}))["inventory"]
    assert attached["networkServices"] == [
        {"l3NetworkUuid": net["uuid"], "networkServiceProviderUuid": fake,
         "networkServiceType": "DHCP"},
        {"l3NetworkUuid": net["uuid"], "networkServiceProviderUuid": fake,
         "networkServiceType": "DNS"}]
    # A provider may be named by its type, as in ZStack.
    await call(node, "AttachNetworkServiceToL3Network", l3NetworkUuid=net["uuid"],
               networkServices={"Other": ["SNAT"]})
    refs = (await call(node, "QueryNetworkServiceL3NetworkRef",
                       q=[f"l3NetworkUuid={net['uuid']}"]))["inventories"]
    assert sorted((r["networkServiceType"], r["networkServiceProviderUuid"]) for r in refs) == \
        [("DHCP", fake), ("DNS", fake), ("SNAT", other)]
    found = await call(node, "QueryL3Network", q=["networkServices.networkServiceType=SNAT"])
    assert [x["uuid"] for x in found["inventories"]] == [net["uuid"]]
    detached = (await call(node, "DetachNetworkServiceFromL3Network",
                           l3NetworkUuid=net["uuid"],
                           networkServices={fake: ["DNS"]}))["inventory"]
    assert [s["networkServiceType"] for s in detached["networkServices"]] == ["DHCP", "SNAT"]
    detached = (await call(node, "DetachNetworkServiceFromL3Network",
                           l3NetworkUuid=net["uuid"], service="SNAT"))["inventory"]
    assert [s["networkServiceType"] for s in detached["networkServices"]] == ["DHCP"]
    # Deleting the network takes its services with it.
    await call(node, "DeleteL3Network", uuid=net["uuid"])
    assert (await rows(node))["NetworkServiceL3NetworkRefVO"] == 0


@pytest.mark.parametrize(("services", "code", "fragment"), [
    ({"Fake": ["SNAT"]}, "SYS.1007", "does not provide SNAT; it provides DHCP, DNS"),
    ({"0" * 32: ["DHCP"]}, "SYS.1007", "no network service provider has the uuid or type"),
    ({}, "SYS.1007", "must not be empty"),
    ({"Fake": []}, "SYS.1007", "give the service types of provider 'Fake'"),
    ({"Fake": "DHCP"}, "SYS.1006", "already has the network service DHCP"),
    ({"Fake": ["DNS"], "Other": ["DNS"]}, "SYS.1007", "does not provide DNS"),
    ({"Fake": ["DNS"], "Other": ["DHCP"]}, "SYS.1006", "already has the network service DHCP"),
])
async def test_bad_services_are_refused(make_node: MakeNode, services: dict[str, Any],
                                        code: str, fragment: str) -> None:
    node = await make_node(("fake_provider", fake_provider), ("other_provider", other_provider))
    net = await l3_network(node)
    await call(node, "AttachNetworkServiceToL3Network", l3NetworkUuid=net["uuid"],
               networkServices={"Fake": ["DHCP"]})
    error = await fails(call(node, "AttachNetworkServiceToL3Network", l3NetworkUuid=net["uuid"],
                             networkServices=services), code)
    assert fragment in error.details
    assert (await rows(node))["NetworkServiceL3NetworkRefVO"] == 1


async def test_one_provider_per_service(make_node: MakeNode) -> None:
    node = await make_node(("fake_provider", fake_provider), ("other_provider", other_provider))
    net = await l3_network(node)
    error = await fails(call(node, "AttachNetworkServiceToL3Network", l3NetworkUuid=net["uuid"],
                             networkServices={"Fake": ["DHCP"], "Other": ["DHCP"]}),
                        "SYS.1007")
    assert "asked of two providers" in error.details
    assert (await rows(node))["NetworkServiceL3NetworkRefVO"] == 0
    await fails(call(node, "DetachNetworkServiceFromL3Network", l3NetworkUuid=net["uuid"]),
                "SYS.1007")


async def test_a_provider_needs_a_type_a_name_and_services(node: Node) -> None:
    await fails(register_network_service_provider(node, type="X", name="x", service_types=[]),
                "SYS.1007")
