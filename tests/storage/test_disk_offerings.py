"""Disk offerings over REST: create, update, change state, delete, query, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from zcore.api import SYSTEM, Caller
from zcore.db import Base, ResourceVO, new_uuid
from zcore.errors import ZError
from zcore.node import Node
from zcore.testing import ApiClient
from zplugins.storage.disk_offerings import APIS, PRIMARY_STORAGE_ALLOCATION_STRATEGIES

pytestmark = pytest.mark.db

SHARED = Path(__file__).parents[2] / ".." / "shared" / "zstack-api"
REFERENCE = Path(__file__).parents[1] / "reference" / "zstack_api.json"
ADMIN = "36c27e8ff05c4780bf6d2fa65700f22e"
GiB = 1024**3


async def fails(client: ApiClient, api: str, code: str = "SYS.1007", **params: Any) -> ZError:
    try:
        await client.call(api, **params)
    except ZError as exc:
        assert exc.code == code, f"expected {code}, got {exc}"
        return exc
    raise AssertionError(f"{api} succeeded; expected {code}")


async def offering(client: ApiClient, name: str = "d10", diskSize: int = 10 * GiB,
                   **params: Any) -> dict[str, Any]:
    inventory: dict[str, Any] = (await client.call("CreateDiskOffering", name=name,
                                                   diskSize=diskSize, **params))["inventory"]
    return inventory


async def names(client: ApiClient, *conditions: str, **params: Any) -> list[str]:
    found = await client.call("QueryDiskOffering", q=list(conditions), **params)
    return [i["name"] for i in found["inventories"]]


async def total(client: ApiClient) -> int:
    count: int = (await client.call("QueryDiskOffering", count=True))["total"]
    return count


async def test_a_disk_offering_has_zstacks_fields_and_defaults(api_client: Any) -> None:
    client = await api_client()
    status, body = await client.call_raw("CreateDiskOffering", name="d10", diskSize=10 * GiB)
    assert status == 200
    assert body["schema"] == {"inventory": "org.zstack.header.configuration.DiskOfferingInventory"}
    d = body["inventory"]
    assert (d["name"], d["description"], d["diskSize"], d["sortKey"], d["state"], d["type"],
            d["allocatorStrategy"]) == ("d10", None, 10 * GiB, 0, "Enabled",
                                        "DefaultDiskOfferingType",
                                        "DefaultPrimaryStorageAllocationStrategy")
    assert d["createDate"] == d["lastOpDate"]
    if (SHARED / "inventories.json").exists():
        fields = json.loads((SHARED / "inventories.json").read_text())
        assert set(d) == set(fields["DiskOfferingInventory"]["fields"])
    row = await client.node.db.run(lambda s: s.get(ResourceVO, d["uuid"]))
    assert (row.resourceType, row.resourceName, row.ownerAccountUuid) == \
        ("DiskOfferingVO", "d10", ADMIN)


async def test_every_parameter_is_kept(api_client: Any) -> None:
    client = await api_client()
    uuid = new_uuid()
    d = await offering(client, "local", 2**42, description="on local disks", sortKey=3,
                       allocationStrategy="LocalPrimaryStorageStrategy", type="zstack",
                       resourceUuid=uuid, userTags=["fast"])
    # ZStack spells the parameter allocationStrategy and the field allocatorStrategy.
    assert (d["uuid"], d["description"], d["diskSize"], d["sortKey"], d["allocatorStrategy"],
            d["type"]) == (uuid, "on local disks", 2**42, 3, "LocalPrimaryStorageStrategy",
                           "zstack")
    assert await names(client, "__userTag__=fast") == ["local"]
    assert await names(client, "allocatorStrategy=LocalPrimaryStorageStrategy") == ["local"]
    # One byte is a size, as in ZStack.
    assert (await offering(client, "tiny", 1))["diskSize"] == 1


@pytest.mark.parametrize(("params", "named"), [
    ({"diskSize": 0}, "value 0 is out of the range"),
    ({"diskSize": -GiB}, f"value {-GiB} is out of the range"),
    ({"diskSize": "10G"}, "'10G'"),
    ({"diskSize": 2.5}, "2.5"),
    ({"diskSize": True}, "True"),
    ({"allocationStrategy": "Random"},
     "'Random' is not a primary storage allocation strategy; valid: "
     + ", ".join(PRIMARY_STORAGE_ALLOCATION_STRATEGIES)),
    ({"allocatorStrategy": "LocalPrimaryStorageStrategy"},
     "has no parameter 'allocatorStrategy'; did you mean 'allocationStrategy'?"),
    ({"type": "ceph"}, "value 'ceph' is not one of 'zstack'"),
    ({"name": "x" * 256}, "at most 255"),
    ({"description": "x" * 2049}, "at most 2048"),
    ({"resourceUuid": "ABC"}, "'ABC' is not 32 lower-case hex digits"),
    ({"tagUuids": [new_uuid()]}, "not supported yet"),
])
async def test_bad_input_is_refused_and_creates_nothing(api_client: Any, params: dict[str, Any],
                                                        named: str) -> None:
    client = await api_client()
    error = await fails(client, "CreateDiskOffering", **{"name": "d", "diskSize": GiB, **params})
    assert named in error.details
    assert await total(client) == 0


async def test_required_parameters_and_dry_runs(api_client: Any) -> None:
    client = await api_client()
    error = await fails(client, "CreateDiskOffering", name="d")
    assert "parameter 'diskSize' of CreateDiskOffering is required" in error.details
    error = await fails(client, "CreateDiskOffering", diskSize=GiB)
    assert "parameter 'name' of CreateDiskOffering is required" in error.details
    await fails(client, "CreateDiskOffering", name="d", diskSize=GiB,
                allocationStrategy="x", systemTags=["validationOnly"])
    assert await client.call("CreateDiskOffering", name="d", diskSize=GiB,
                             systemTags=["validationOnly"]) == {}
    assert await total(client) == 0


async def test_update_changes_only_what_is_given(api_client: Any) -> None:
    client = await api_client()
    d = await offering(client, "d10", description="old")
    updated = (await client.call("UpdateDiskOffering", uuid=d["uuid"], name="ten"))["inventory"]
    assert (updated["name"], updated["description"], updated["diskSize"]) == \
        ("ten", "old", 10 * GiB)
    updated = (await client.call("UpdateDiskOffering", uuid=d["uuid"],
                                 description="new"))["inventory"]
    assert (updated["name"], updated["description"]) == ("ten", "new")
    error = await fails(client, "UpdateDiskOffering", uuid=d["uuid"], diskSize=GiB)
    assert "has no parameter 'diskSize'" in error.details
    error = await fails(client, "UpdateDiskOffering", uuid=d["uuid"], name="y" * 256)
    assert "at most 255" in error.details
    assert await names(client) == ["ten"]
    await fails(client, "UpdateDiskOffering", "SYS.1003", uuid=new_uuid(), name="x")


async def test_change_state(api_client: Any) -> None:
    client = await api_client()
    d = await offering(client)
    status, body = await client.request(
        "PUT", f"/disk-offerings/{d['uuid']}/actions",
        json={"changeDiskOfferingState": {"stateEvent": "disable"}})
    assert status == 202
    status, body = await client.poll(body["location"])
    assert status == 200 and body["inventory"]["state"] == "Disabled"
    assert await names(client, "state=Disabled") == ["d10"]
    await fails(client, "ChangeDiskOfferingState", uuid=d["uuid"], stateEvent="off")
    assert (await client.call("ChangeDiskOfferingState", uuid=d["uuid"],
                              stateEvent="enable"))["inventory"]["state"] == "Enabled"


async def test_delete(api_client: Any) -> None:
    client = await api_client()
    keep = await offering(client, "keep")
    d = await offering(client, "gone", userTags=["t"])
    error = await fails(client, "DeleteDiskOffering", uuid=d["uuid"], deleteMode="Soft")
    assert "'Soft'" in error.details
    assert await client.call("DeleteDiskOffering", uuid=d["uuid"]) == {}
    assert await names(client) == ["keep"]
    assert await names(client, "__userTag__=t") == []
    assert await client.node.db.run(lambda s: s.get(ResourceVO, d["uuid"])) is None
    await fails(client, "DeleteDiskOffering", "SYS.1003", uuid=d["uuid"])
    await client.call("DeleteDiskOffering", uuid=keep["uuid"], deleteMode="Enforcing")
    assert await total(client) == 0


async def test_query_by_size(api_client: Any) -> None:
    client = await api_client()
    for name, size in (("d1", GiB), ("d10", 10 * GiB), ("d100", 100 * GiB)):
        await offering(client, name, size)
    assert await names(client, f"diskSize>{GiB}", sort="-diskSize") == ["d100", "d10"]
    assert await names(client, f"diskSize?={GiB},{100 * GiB}", sort="+diskSize") == \
        ["d1", "d100"]
    assert (await client.call("QueryDiskOffering", q=[f"diskSize<={10 * GiB}"],
                              count=True))["total"] == 2


async def test_an_account_sees_only_its_own_disk_offerings(node: Node) -> None:
    a = Caller(account_uuid="a" * 32, account_name="a", is_admin=False)
    b = Caller(account_uuid="b" * 32, account_name="b", is_admin=False)
    mine = (await node.api.call("CreateDiskOffering", {"name": "mine", "diskSize": GiB},
                                caller=a))["inventory"]
    assert [i["uuid"] for i in (await node.api.call("QueryDiskOffering", {},
                                                    caller=a))["inventories"]] == [mine["uuid"]]
    assert (await node.api.call("QueryDiskOffering", {}, caller=b))["inventories"] == []
    with pytest.raises(ZError) as caught:
        await node.api.call("DeleteDiskOffering", {"uuid": mine["uuid"]}, caller=b)
    assert caught.value.code == "ID.1002"
    everything = await node.api.call("QueryDiskOffering", {}, caller=SYSTEM)
    assert len(everything["inventories"]) == 1


async def test_the_migration_matches_the_model(node: Node) -> None:
    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table == "DiskOfferingVO"

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []


def test_routes_and_parameters_are_zstacks() -> None:
    apis = json.loads(REFERENCE.read_text())["apis"]
    if (SHARED / "apis.json").exists():
        apis = {**json.loads((SHARED / "apis.json").read_text()), **apis}
    if any(cls.api_name not in apis for cls in APIS):
        pytest.skip("ZStack's description of the disk offering APIs is not in tests/reference "
                    "yet")
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
            for key in ("maxLength", "numberRange"):
                assert mine.get(key) == param.get(key), f"{cls.api_name}.{param['name']}"
            assert bool(mine.get("required")) == bool(param.get("required"))
            if param["name"] != "deleteMode":  # ours lists the two modes; ZStack lists none
                assert mine.get("validValues") == param.get("validValues"), param["name"]
