"""Instance offerings over REST: create, update, change state, delete, query, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from zcore.db import Base, ResourceVO, new_uuid
from zcore.node import Node
from zcore.testing import ApiClient
from zplugins.compute.offerings import HOST_ALLOCATOR_STRATEGIES, CreateInstanceOffering

from .helpers import call, fails, tenant

pytestmark = pytest.mark.db

SHARED = Path(__file__).parents[2] / ".." / "shared" / "zstack-api"
REFERENCE = Path(__file__).parents[1] / "reference" / "zstack_api.json"
ADMIN = "36c27e8ff05c4780bf6d2fa65700f22e"
GiB = 1024**3
MiB = 1024**2


async def offering(client: ApiClient, name: str = "small", cpuNum: int = 1,
                   memorySize: int = GiB, **params: Any) -> dict[str, Any]:
    reply = await client.call("CreateInstanceOffering", name=name, cpuNum=cpuNum,
                              memorySize=memorySize, **params)
    inventory: dict[str, Any] = reply["inventory"]
    return inventory


async def names(client: ApiClient, *conditions: str, **params: Any) -> list[str]:
    found = await client.call("QueryInstanceOffering", q=list(conditions), **params)
    return [i["name"] for i in found["inventories"]]


async def total(client: ApiClient) -> int:
    count: int = (await client.call("QueryInstanceOffering", count=True))["total"]
    return count


async def test_an_offering_has_zstacks_fields_and_defaults(api_client: Any) -> None:
    client = await api_client()
    status, body = await client.call_raw("CreateInstanceOffering", name="small", cpuNum=2,
                                         memorySize=2 * GiB)
    assert status == 200
    assert body["schema"] == {
        "inventory": "org.zstack.header.configuration.InstanceOfferingInventory"}
    o = body["inventory"]
    assert (o["name"], o["description"], o["cpuNum"], o["cpuSpeed"], o["memorySize"],
            o["reservedMemorySize"], o["type"], o["allocatorStrategy"], o["sortKey"],
            o["state"]) == ("small", None, 2, 0, 2 * GiB, 0, "UserVm",
                            "DefaultHostAllocatorStrategy", 0, "Enabled")
    assert o["createDate"] == o["lastOpDate"] and o["createDate"].endswith("+00:00")
    if (SHARED / "inventories.json").exists():
        fields = json.loads((SHARED / "inventories.json").read_text())
        assert set(o) == set(fields["InstanceOfferingInventory"]["fields"])
    row = await client.node.db.run(lambda s: s.get(ResourceVO, o["uuid"]))
    assert (row.resourceType, row.resourceName, row.ownerAccountUuid) == \
        ("InstanceOfferingVO", "small", ADMIN)


async def test_every_parameter_is_kept(api_client: Any) -> None:
    client = await api_client()
    uuid = new_uuid()
    o = await offering(client, "big", 16, 64 * GiB, description="for databases",
                       reservedMemorySize=GiB, allocatorStrategy="LeastVmPreferredHostAllocatorStrategy",
                       sortKey=7, type="UserVm", resourceUuid=uuid, userTags=["db"])
    assert (o["uuid"], o["description"], o["cpuNum"], o["memorySize"], o["reservedMemorySize"],
            o["allocatorStrategy"], o["sortKey"]) == \
        (uuid, "for databases", 16, 64 * GiB, GiB, "LeastVmPreferredHostAllocatorStrategy", 7)
    assert await names(client, "__userTag__=db") == ["big"]
    # Sizes are integers of bytes on the wire, even past 32 bits.
    huge = await offering(client, "huge", 1024, 2**40)
    assert huge["memorySize"] == 2**40
    # Names need not be unique, as in ZStack.
    await offering(client, "big", 8, 32 * GiB)
    assert await names(client, "name=big", sort="+cpuNum") == ["big", "big"]


@pytest.mark.parametrize(("params", "named"), [
    ({"cpuNum": 0}, "value 0 is out of the range [1, 1024]"),
    ({"cpuNum": 1025}, "value 1025 is out of the range [1, 1024]"),
    ({"cpuNum": "two"}, "'two'"),
    ({"memorySize": 0}, "value 0 is out of the range"),
    ({"memorySize": -GiB}, f"value {-GiB} is out of the range"),
    ({"memorySize": "1G"}, "'1G'"),
    ({"memorySize": 1.5}, "1.5"),
    ({"memorySize": MiB}, "1048576 bytes (1 MiB) is less than 16777216 bytes (16 MiB)"),
    ({"memorySize": 16 * MiB - 1}, "16777215 bytes"),
    ({"reservedMemorySize": 2 * GiB}, "2147483648 bytes is more than memorySize 1073741824"),
    ({"reservedMemorySize": -1}, "value -1 is out of the range"),
    ({"allocatorStrategy": "Random"},
     "'Random' is not a host allocator strategy; valid: " + ", ".join(HOST_ALLOCATOR_STRATEGIES)),
    ({"type": "VirtualRouter"}, "'VirtualRouter' is not an instance offering type; valid: UserVm"),
    ({"name": "x" * 256}, "256 characters long; at most 255"),
    ({"resourceUuid": "not-a-uuid"}, "'not-a-uuid' is not 32 lower-case hex digits"),
    ({"tagUuids": [new_uuid()]}, "not supported yet"),
    ({"cpus": 2}, "has no parameter 'cpus'"),
])
async def test_bad_input_is_refused_and_creates_nothing(api_client: Any, params: dict[str, Any],
                                                        named: str) -> None:
    client = await api_client()
    base: dict[str, Any] = {"name": "small", "cpuNum": 1, "memorySize": GiB}
    error = await fails(client.call("CreateInstanceOffering", **{**base, **params}), "SYS.1007")
    assert named in error.details
    assert await total(client) == 0


async def test_required_parameters(api_client: Any) -> None:
    client = await api_client()
    for missing in ("name", "cpuNum", "memorySize"):
        params: dict[str, Any] = {"name": "small", "cpuNum": 1, "memorySize": GiB}
        del params[missing]
        error = await fails(client.call("CreateInstanceOffering", **params), "SYS.1007")
        assert f"parameter '{missing}' of CreateInstanceOffering is required" in error.details
    assert await total(client) == 0


async def test_the_smallest_memory_is_16_mib(api_client: Any) -> None:
    client = await api_client()
    assert (await offering(client, memorySize=16 * MiB))["memorySize"] == 16 * MiB


async def test_a_dry_run_checks_everything_and_creates_nothing(api_client: Any) -> None:
    client = await api_client()
    error = await fails(client.call("CreateInstanceOffering", name="s", cpuNum=1,
                                    memorySize=MiB, systemTags=["validationOnly"]), "SYS.1007")
    assert "16 MiB" in error.details
    assert await client.call("CreateInstanceOffering", name="s", cpuNum=1, memorySize=GiB,
                             systemTags=["validationOnly"]) == {}
    assert await total(client) == 0


async def test_update_changes_only_what_is_given(api_client: Any) -> None:
    client = await api_client()
    o = await offering(client, "small", description="old")
    updated = (await client.call("UpdateInstanceOffering", uuid=o["uuid"],
                                 name="tiny"))["inventory"]
    assert (updated["name"], updated["description"], updated["allocatorStrategy"]) == \
        ("tiny", "old", "DefaultHostAllocatorStrategy")
    updated = (await client.call("UpdateInstanceOffering", uuid=o["uuid"], description="new",
                                 allocatorStrategy="MinimumCPUUsageHostAllocatorStrategy")
               )["inventory"]
    assert (updated["name"], updated["description"], updated["allocatorStrategy"]) == \
        ("tiny", "new", "MinimumCPUUsageHostAllocatorStrategy")
    assert updated["lastOpDate"] > o["lastOpDate"]

    error = await fails(client.call("UpdateInstanceOffering", uuid=o["uuid"], name="x",
                                    allocatorStrategy="Nope"), "SYS.1007")
    assert "'Nope'" in error.details
    # The sizes of an offering are what its VMs were made with: they do not change.
    error = await fails(client.call("UpdateInstanceOffering", uuid=o["uuid"], cpuNum=4),
                        "SYS.1007")
    assert "has no parameter 'cpuNum'" in error.details
    assert await names(client) == ["tiny"]
    await fails(client.call("UpdateInstanceOffering", uuid=new_uuid(), name="x"), "SYS.1003")


async def test_change_state(api_client: Any) -> None:
    client = await api_client()
    o = await offering(client)
    status, body = await client.request(
        "PUT", f"/instance-offerings/{o['uuid']}/actions",
        json={"changeInstanceOfferingState": {"stateEvent": "disable"}})
    assert status == 202
    status, body = await client.poll(body["location"])
    assert status == 200 and body["inventory"]["state"] == "Disabled"
    assert await names(client, "state=Disabled") == ["small"]
    enabled = await client.call("ChangeInstanceOfferingState", uuid=o["uuid"],
                                stateEvent="enable")
    assert enabled["inventory"]["state"] == "Enabled"
    error = await fails(client.call("ChangeInstanceOfferingState", uuid=o["uuid"],
                                    stateEvent="maintain"), "SYS.1007")
    assert "'maintain' is not one of 'enable', 'disable'" in error.details
    assert await names(client, "state=Enabled") == ["small"]


async def test_delete(api_client: Any) -> None:
    client = await api_client()
    keep = await offering(client, "keep")
    o = await offering(client, "gone", userTags=["t"])
    error = await fails(client.call("DeleteInstanceOffering", uuid=o["uuid"],
                                    deleteMode="Gently"), "SYS.1007")
    assert "'Gently'" in error.details
    assert await client.call("DeleteInstanceOffering", uuid=o["uuid"]) == {}
    assert await names(client) == ["keep"]
    assert await client.node.db.run(lambda s: s.get(ResourceVO, o["uuid"])) is None
    assert await names(client, "__userTag__=t") == []
    await fails(client.call("DeleteInstanceOffering", uuid=o["uuid"]), "SYS.1003")
    await client.call("DeleteInstanceOffering", uuid=keep["uuid"], deleteMode="Enforcing")
    assert await total(client) == 0


async def test_query_by_size_and_sort(api_client: Any) -> None:
    client = await api_client()
    await offering(client, "small", 1, GiB)
    await offering(client, "medium", 4, 8 * GiB)
    await offering(client, "large", 16, 64 * GiB,
                   allocatorStrategy="MinimumMemoryUsageHostAllocatorStrategy")
    assert await names(client, f"memorySize>={8 * GiB}", sort="-memorySize") == \
        ["large", "medium"]
    assert await names(client, "cpuNum<4") == ["small"]
    assert await names(client, "allocatorStrategy=MinimumMemoryUsageHostAllocatorStrategy") == \
        ["large"]
    found = await client.call("QueryInstanceOffering", q=["cpuNum>1"], fields=["name,cpuNum"],
                              sort="+cpuNum")
    assert found["inventories"] == [{"name": "medium", "cpuNum": 4},
                                    {"name": "large", "cpuNum": 16}]
    await fails(client.call("QueryInstanceOffering", q=["cpus>1"]), "SYS.1007")


async def test_an_account_sees_only_its_own_offerings(node: Node) -> None:
    a, b = tenant("a"), tenant("b")
    mine = (await call(node, "CreateInstanceOffering", a, name="mine", cpuNum=1,
                       memorySize=GiB))["inventory"]
    assert [i["name"] for i in (await call(node, "QueryInstanceOffering", a))["inventories"]] \
        == ["mine"]
    assert (await call(node, "QueryInstanceOffering", b))["inventories"] == []
    await fails(call(node, "DeleteInstanceOffering", b, uuid=mine["uuid"]), "ID.1002")
    await fails(call(node, "UpdateInstanceOffering", b, uuid=mine["uuid"], name="x"), "ID.1002")


async def test_the_migration_matches_the_model(node: Node) -> None:
    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table == "InstanceOfferingVO"

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []


def test_routes_and_parameters_are_zstacks() -> None:
    apis = json.loads(REFERENCE.read_text())["apis"]
    if (SHARED / "apis.json").exists():
        apis = {**json.loads((SHARED / "apis.json").read_text()), **apis}
    from zplugins.compute.offerings import APIS

    if any(cls.api_name not in apis for cls in APIS):
        pytest.skip("ZStack's description of the offering APIs is not in tests/reference yet")
    for cls in APIS:
        theirs = apis[cls.api_name]
        ours = cls.describe()
        for key in ("method", "path", "envelope", "async", "query", "result"):
            assert ours[key] == theirs[key], f"{cls.api_name}: {key}"
        if theirs["query"]:
            continue
        ours_params = {p["name"]: p for p in ours["params"]}
        assert set(ours_params) == {p["name"] for p in theirs["params"]}, cls.api_name
        for param in theirs["params"]:
            mine = ours_params[param["name"]]
            assert bool(mine.get("required")) == bool(param.get("required")), param["name"]
            assert mine.get("maxLength") == param.get("maxLength"), param["name"]
            assert mine.get("numberRange") == param.get("numberRange"), param["name"]
    assert CreateInstanceOffering.params["memorySize"].api_type == "Long"
