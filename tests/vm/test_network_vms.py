"""VM NICs end to end: IPs on two L3 networks, static IPs, attach/detach, refusals, and the
network service backends, through REST on simulator hosts."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
from sqlalchemy import func, select

from zcore import hookimpl
from zcore.db import ResourceVO, new_uuid
from zcore.errors import ZError
from zcore.testing.env import Environment
from zplugins.network import nic_steps
from zplugins.network.models import IpRangeVO, UsedIpVO, VmNicVO
from zplugins.network.public import (
    register_network_service_backend,
    register_network_service_provider,
)
from zplugins.simulator.hypervisor import SimulatorHypervisor
from zplugins.simulator.primary_storage import SimulatorPrimaryStorageDriver

MakeEnv = Callable[..., Awaitable[Environment]]


async def create_vm(env: Environment, name: str, **params: Any) -> dict[str, Any]:
    params.setdefault("instanceOfferingUuid", env.uuid("small"))
    params.setdefault("imageUuid", env.uuid("image1"))
    params.setdefault("l3NetworkUuids", [env.uuid("l3a"), env.uuid("l3b")])
    return (await env.client.call("CreateVmInstance", name=name, **params))["inventory"]


async def nic_rows(env: Environment) -> dict[str, int]:
    def read(session: Any) -> dict[str, int]:
        return {
            "nics": session.scalar(select(func.count()).select_from(VmNicVO)),
            "used_ips": session.scalar(select(func.count()).select_from(UsedIpVO)),
            "nic_resources": session.scalar(select(func.count()).select_from(ResourceVO).where(
                ResourceVO.resourceType == "VmNicVO"))}

    return await env.node.db.run(read)


def in_range(ip: str, start: str, end: str) -> bool:
    return IPv4Address(start) <= IPv4Address(ip) <= IPv4Address(end)


async def test_a_vm_gets_a_nic_with_an_ip_on_each_l3_network(vm_cloud: Environment) -> None:
    env = vm_cloud
    vm = await create_vm(env, "vm1", defaultL3NetworkUuid=env.uuid("l3b"))
    nics = vm["vmNics"]
    assert [n["deviceId"] for n in nics] == [0, 1]
    assert [n["l3NetworkUuid"] for n in nics] == [env.uuid("l3a"), env.uuid("l3b")]
    assert in_range(nics[0]["ip"], "10.0.0.10", "10.0.0.250")
    assert in_range(nics[1]["ip"], "10.1.0.10", "10.1.0.250")
    assert nics[0]["gateway"] == "10.0.0.1" and nics[0]["netmask"] == "255.255.255.0"
    assert all(n["mac"].startswith("fa:") and len(n["mac"]) == 17 for n in nics)
    assert nics[0]["mac"] != nics[1]["mac"]
    assert [u["ip"] for u in nics[0]["usedIps"]] == [nics[0]["ip"]]
    assert vm["defaultL3NetworkUuid"] == env.uuid("l3b")

    found = (await env.client.call("QueryVmNic",
                                   q=[f"vmInstanceUuid={vm['uuid']}"]))["inventories"]
    assert sorted(n["uuid"] for n in found) == sorted(n["uuid"] for n in nics)
    used = (await env.client.call("QueryIpAddress",
                                  q=[f"vmNicUuid={nics[1]['uuid']}"]))["inventories"]
    assert [u["ip"] for u in used] == [nics[1]["ip"]] and used[0]["usedFor"] == "Vm"


async def test_a_static_ip_is_given_and_a_taken_one_refused_leaving_nothing(
        vm_cloud: Environment) -> None:
    env = vm_cloud
    l3a = env.uuid("l3a")
    vm = await create_vm(env, "vm1", systemTags=[f"staticIp::{l3a}::10.0.0.100"])
    assert vm["vmNics"][0]["ip"] == "10.0.0.100"
    before = await nic_rows(env)

    with pytest.raises(ZError) as taken:
        await create_vm(env, "vm2", systemTags=[f"staticIp::{l3a}::10.0.0.100"])
    assert "10.0.0.100" in taken.value.details and "already used" in taken.value.details
    with pytest.raises(ZError) as outside:
        await create_vm(env, "vm3", systemTags=[f"staticIp::{l3a}::10.0.0.251"])
    assert "10.0.0.251" in outside.value.details and l3a in outside.value.details
    assert await nic_rows(env) == before


async def test_nics_attach_detach_and_change_their_ip(vm_cloud: Environment) -> None:
    env = vm_cloud
    call = env.client.call
    vm = await create_vm(env, "vm1", l3NetworkUuids=[env.uuid("l3a")])
    before = await nic_rows(env)

    attached = (await call("AttachL3NetworkToVm", vmInstanceUuid=vm["uuid"],
                           l3NetworkUuid=env.uuid("l3b"), staticIp="10.1.0.50"))["inventory"]
    assert [(n["deviceId"], n["ip"]) for n in attached["vmNics"]][1] == (1, "10.1.0.50")
    with pytest.raises(ZError, match="already has a NIC"):
        await call("AttachL3NetworkToVm", vmInstanceUuid=vm["uuid"],
                   l3NetworkUuid=env.uuid("l3b"))

    await call("SetVmStaticIp", vmInstanceUuid=vm["uuid"], l3NetworkUuid=env.uuid("l3b"),
               ip="10.1.0.60")
    other = await create_vm(env, "vm2", l3NetworkUuids=[env.uuid("l3b")],
                            systemTags=[f"staticIp::{env.uuid('l3b')}::10.1.0.70"])
    with pytest.raises(ZError, match="already used"):
        await call("SetVmStaticIp", vmInstanceUuid=vm["uuid"], l3NetworkUuid=env.uuid("l3b"),
                   ip="10.1.0.70")
    with pytest.raises(ZError, match="in no IP range"):
        await call("SetVmStaticIp", vmInstanceUuid=vm["uuid"], l3NetworkUuid=env.uuid("l3b"),
                   ip="10.1.0.5")
    nic = (await call("QueryVmNic", q=[f"vmInstanceUuid={vm['uuid']}",
                                       f"l3NetworkUuid={env.uuid('l3b')}"]))["inventories"][0]
    assert nic["ip"] == "10.1.0.60" and [u["ip"] for u in nic["usedIps"]] == ["10.1.0.60"]

    detached = (await call("DetachL3NetworkFromVm", vmNicUuid=nic["uuid"]))["inventory"]
    assert [n["l3NetworkUuid"] for n in detached["vmNics"]] == [env.uuid("l3a")]
    # Detaching the default network makes the next one the default.
    detached = (await call("DetachL3NetworkFromVm",
                           vmNicUuid=detached["vmNics"][0]["uuid"]))["inventory"]
    assert detached["vmNics"] == [] and detached["defaultL3NetworkUuid"] is None
    again = (await call("AttachL3NetworkToVm", vmInstanceUuid=vm["uuid"],
                        l3NetworkUuid=env.uuid("l3a")))["inventory"]
    assert again["defaultL3NetworkUuid"] == env.uuid("l3a")
    assert [n["deviceId"] for n in again["vmNics"]] == [0]
    await call("DestroyVmInstance", uuid=other["uuid"])
    await call("ExpungeVmInstance", uuid=other["uuid"])
    assert await nic_rows(env) == before


async def test_an_l2_or_l3_network_in_use_by_vms_cannot_go(vm_cloud: Environment) -> None:
    env = vm_cloud
    call = env.client.call
    vm = await create_vm(env, "vm1")
    with pytest.raises(ZError) as refused:
        await call("DetachL2NetworkFromCluster", l2NetworkUuid=env.uuid("l2b"),
                   clusterUuid=env.uuid("cluster1"))
    assert vm["uuid"] in refused.value.details
    with pytest.raises(ZError) as refused:
        await call("DeleteL3Network", uuid=env.uuid("l3b"))
    assert vm["uuid"] in str(refused.value)

    nic_b = vm["vmNics"][1]
    await call("DetachL3NetworkFromVm", vmNicUuid=nic_b["uuid"])
    await call("DetachL2NetworkFromCluster", l2NetworkUuid=env.uuid("l2b"),
               clusterUuid=env.uuid("cluster1"))
    await call("DeleteL3Network", uuid=env.uuid("l3b"))


class RecordingBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, list[str]]] = []
        self.fail = False

    async def apply(self, node: Any, host: Any, nics: list[Any]) -> None:
        self.calls.append(("apply", getattr(host, "uuid", None), [n.ip for n in nics]))
        if self.fail:
            raise ZError("SYS.1000", "backend failed", "injected backend failure")

    async def release(self, node: Any, host: Any, nics: list[Any]) -> None:
        self.calls.append(("release", getattr(host, "uuid", None), [n.ip for n in nics]))


def _backend_plugin(backend: RecordingBackend) -> object:
    class testnet:
        @staticmethod
        @hookimpl
        async def zcore_node_starting(node: Any) -> None:
            await register_network_service_provider(node, type="TestNet", name="test",
                                                    service_types=["DHCP"])
            register_network_service_backend(node, "TestNet", backend)

    return testnet


async def test_network_service_backends_are_called_and_can_fail_a_creation(
        make_env: MakeEnv, vm_cloud_spec: dict[str, Any],
        api_client: Callable[..., Awaitable[Any]]) -> None:
    backend = RecordingBackend()
    client = await api_client(("testnet", _backend_plugin(backend)))
    env = await make_env(vm_cloud_spec, client=client)
    providers = (await env.client.call("QueryNetworkServiceProvider",
                                       q=["type=TestNet"]))["inventories"]
    await env.client.call("AttachNetworkServiceToL3Network", l3NetworkUuid=env.uuid("l3a"),
                          networkServices={providers[0]["uuid"]: ["DHCP"]})

    vm = await create_vm(env, "vm1")
    ip_a = vm["vmNics"][0]["ip"]
    assert backend.calls == [("apply", vm["hostUuid"], [ip_a])]  # l3b has no TestNet
    await env.client.call("StopVmInstance", uuid=vm["uuid"])
    assert backend.calls[-1] == ("release", vm["hostUuid"], [ip_a])

    before = await nic_rows(env)
    backend.fail = True
    with pytest.raises(ZError, match="injected backend failure"):
        await create_vm(env, "vm2")
    assert await nic_rows(env) == before


async def test_the_ip_allocator_strategy_is_a_global_configuration(
        vm_cloud: Environment) -> None:
    env = vm_cloud
    await env.client.call("UpdateGlobalConfig", category="l3", name="ipAllocatorStrategy",
                          value="FirstAvailableIpAllocatorStrategy")
    vms = [await create_vm(env, f"vm{i}") for i in range(3)]
    assert [vm["vmNics"][0]["ip"] for vm in vms] == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    with pytest.raises(ZError, match="NoSuchStrategy"):
        await env.client.call("UpdateGlobalConfig", category="l3", name="ipAllocatorStrategy",
                              value="NoSuchStrategy")


async def test_a_static_ip_is_kept_as_a_tag_until_deleted(vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    vm = await create_vm(env, "vm1", l3NetworkUuids=[env.uuid("l3a")])
    l3 = env.uuid("l3a")

    async def static_tags() -> list[str]:
        reply = await call("QuerySystemTag", q=[f"resourceUuid={vm['uuid']}"])
        return sorted(t["tag"] for t in reply["inventories"] if t["tag"].startswith("staticIp"))

    await call("SetVmStaticIp", vmInstanceUuid=vm["uuid"], l3NetworkUuid=l3, ip="10.0.0.60")
    await call("SetVmStaticIp", vmInstanceUuid=vm["uuid"], l3NetworkUuid=l3, ip="10.0.0.61")
    assert await static_tags() == [f"staticIp::{l3}::10.0.0.61"]

    await call("DeleteVmStaticIp", vmInstanceUuid=vm["uuid"], l3NetworkUuid=l3)
    assert await static_tags() == []
    nic = (await call("QueryVmNic", q=[f"vmInstanceUuid={vm['uuid']}"]))["inventories"][0]
    assert nic["ip"] == "10.0.0.61"  # the address stays; it is just not static any more


async def test_a_mac_another_nic_has_is_drawn_again(vm_cloud: Environment,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    env = vm_cloud
    first = await create_vm(env, "vm1")
    taken = first["vmNics"][0]["mac"]
    drawn = iter([taken, taken, "fa:00:00:00:00:01", "fa:00:00:00:00:02"])
    monkeypatch.setattr(nic_steps, "random_mac", lambda: next(drawn))
    second = await create_vm(env, "vm2")
    assert [n["mac"] for n in second["vmNics"]] == ["fa:00:00:00:00:01", "fa:00:00:00:00:02"]
    # One NIC, one ResourceVO row each: the draws that collided left nothing behind.
    assert await nic_rows(env) == {"nics": 4, "used_ips": 4, "nic_resources": 4}


async def test_a_device_id_the_vm_has_already_leaves_no_nic_behind(
        vm_cloud: Environment) -> None:
    env = vm_cloud
    vm = await create_vm(env, "vm1")
    before = await nic_rows(env)

    def second_nic_0(session: Any) -> str:
        return nic_steps.insert_nic(session, vm["uuid"], env.uuid("l3b"), 0)

    with pytest.raises(ZError) as err:
        await env.node.db.run(second_nic_0)
    assert "no unique MAC / device id 0" in err.value.details
    assert await nic_rows(env) == before


async def test_vm_inventories_list_each_nics_used_ips_by_address(vm_cloud: Environment) -> None:
    # One query reads the NICs of a page of VMs with their addresses: a NIC with two, a
    # NIC with none, and each VM's NICs by device id.
    env = vm_cloud
    first, second = await create_vm(env, "vm1"), await create_vm(env, "vm2")
    two, none = first["vmNics"][1], second["vmNics"][0]

    def change(session: Any) -> None:
        used = session.scalars(select(UsedIpVO).where(UsedIpVO.vmNicUuid == two["uuid"])).one()
        session.add(UsedIpVO(uuid=new_uuid(), ipRangeUuid=used.ipRangeUuid,
                             l3NetworkUuid=used.l3NetworkUuid, ip="10.1.0.5", ipInLong=int(
                                 IPv4Address("10.1.0.5")), ipVersion=4, gateway=used.gateway,
                             netmask=used.netmask, usedFor="Vm", vmNicUuid=two["uuid"]))
        session.query(UsedIpVO).filter(UsedIpVO.vmNicUuid == none["uuid"]).delete()

    await env.node.db.run(change)
    found = {vm["name"]: vm for vm in (await env.client.call(
        "QueryVmInstance", q=[f"uuid?={first['uuid']},{second['uuid']}"]))["inventories"]}
    assert [[n["uuid"] for n in found[v["name"]]["vmNics"]] for v in (first, second)] == \
        [[n["uuid"] for n in v["vmNics"]] for v in (first, second)]
    nics = found["vm1"]["vmNics"]
    assert [u["ip"] for u in nics[1]["usedIps"]] == ["10.1.0.5", two["ip"]]
    assert all(u["vmNicUuid"] == two["uuid"] for u in nics[1]["usedIps"])
    assert [u["ip"] for u in nics[0]["usedIps"]] == [first["vmNics"][0]["ip"]]
    assert found["vm2"]["vmNics"][0]["usedIps"] == []
    assert [u["ip"] for u in found["vm2"]["vmNics"][1]["usedIps"]] == \
        [second["vmNics"][1]["ip"]]


async def test_an_ip_range_deleted_after_planning_is_read_again(
        vm_cloud: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    # allocate-ips picks from the ranges plan-networks read. A claim in a range deleted
    # since has no parent row: the allocation runs again with the ranges read anew.
    env = vm_cloud
    usable = nic_steps._usable_l3

    def gone(session: Any, l3_uuid: str, zone: str | None) -> Any:
        l3, ranges = usable(session, l3_uuid, zone)
        return l3, tuple(dataclasses.replace(r, uuid=new_uuid()) for r in ranges)

    monkeypatch.setattr(nic_steps, "_usable_l3", gone)
    vm = await create_vm(env, "vm1")
    nics = vm["vmNics"]
    assert in_range(nics[0]["ip"], "10.0.0.10", "10.0.0.250")
    assert in_range(nics[1]["ip"], "10.1.0.10", "10.1.0.250")

    def ranges_of_used(session: Any) -> set[str | None]:
        return set(session.scalars(select(IpRangeVO.l3NetworkUuid).join(
            UsedIpVO, UsedIpVO.ipRangeUuid == IpRangeVO.uuid)))

    assert await env.node.db.run(ranges_of_used) == {env.uuid("l3a"), env.uuid("l3b")}
    assert await nic_rows(env) == {"nics": 2, "used_ips": 2, "nic_resources": 2}


async def test_a_vm_needs_its_image_on_an_enabled_backup_storage(vm_cloud: Environment) -> None:
    # The image and its usable copies are read in one query: a disabled backup storage
    # holds no usable copy.
    env = vm_cloud
    bs = env.uuid("bs1")
    await env.client.call("ChangeBackupStorageState", uuid=bs, stateEvent="disable")
    with pytest.raises(ZError, match="on no Enabled, Connected backup storage"):
        await create_vm(env, "vm1")
    await env.client.call("ChangeBackupStorageState", uuid=bs, stateEvent="enable")
    vm = await create_vm(env, "vm1")
    assert vm["state"] == "Running" and vm["imageUuid"] == env.uuid("image1")


async def test_the_host_starts_each_nic_on_its_l2_networks_bridge(
        vm_cloud: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bridges come from plan-networks' read of the L3 networks.
    env = vm_cloud
    started: list[list[tuple[str, str | None]]] = []
    start = SimulatorHypervisor.start_vm

    async def recording(self: Any, node: Any, host: Any, vm: Any) -> None:
        started.append([(n.l3NetworkUuid, n.bridgeName) for n in vm.nics])
        await start(self, node, host, vm)

    monkeypatch.setattr(SimulatorHypervisor, "start_vm", recording)
    await create_vm(env, "vm1", l3NetworkUuids=[env.uuid("l3b"), env.uuid("l3a")])
    assert started == [[(env.uuid("l3b"), "br_eth1"), (env.uuid("l3a"), "br_eth0")]]


async def test_an_image_is_copied_to_a_primary_storage_once_for_its_vms(
        vm_cloud: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    # allocate-volumes reads the image's place in the storage's cache with the storage:
    # the first VM copies the image there, the next ones clone from that copy.
    env = vm_cloud
    copies: list[str] = []
    clones: list[str] = []
    download = SimulatorPrimaryStorageDriver.download_to_image_cache
    clone = SimulatorPrimaryStorageDriver.create_root_volume

    async def downloading(self: Any, *args: Any, **kwargs: Any) -> str:
        url: str = await download(self, *args, **kwargs)
        copies.append(url)
        return url

    async def cloning(self: Any, node: Any, ps: Any, host: Any, volume: str, url: str,
                      size: int) -> str:
        clones.append(url)
        return await clone(self, node, ps, host, volume, url, size)

    monkeypatch.setattr(SimulatorPrimaryStorageDriver, "download_to_image_cache", downloading)
    monkeypatch.setattr(SimulatorPrimaryStorageDriver, "create_root_volume", cloning)
    for name in ("vm1", "vm2", "vm3"):
        await create_vm(env, name)
    assert len(copies) == 1 and clones == copies * 3
