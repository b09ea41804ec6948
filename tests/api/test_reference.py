"""Every registered API and core inventory against ZStack's own description of it.

``tests/reference/zstack_api.json`` holds the entries of ZStack's API and inventory
descriptions for the APIs we implement (method, path, body envelope, sync or async,
parameters, result fields; inventory fields), so that ZStack's SDKs keep working.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zcore.api import APIMessage
from zcore.config import load_settings
from zcore.plugins import build_plugin_manager
from zcore.testing import sha512

REFERENCE = json.loads((Path(__file__).parents[1] / "reference" / "zstack_api.json")
                       .read_text())
APIS: dict[str, type[APIMessage]] = {
    name: p.record.message for name, p in
    build_plugin_manager(load_settings(None, environ={})).registry.api_messages.items()}
ZSTACK_APIS = sorted(set(APIS) & set(REFERENCE["apis"]))


def test_every_api_of_the_built_in_plugins_is_one_of_zstacks() -> None:
    ours = {name for name, cls in APIS.items()
            if cls.__module__.startswith(("zcore.", "zplugins."))}
    assert ours <= set(REFERENCE["apis"]), ours - set(REFERENCE["apis"])
    assert len(ZSTACK_APIS) >= 25


@pytest.mark.parametrize("name", ZSTACK_APIS)
def test_route_envelope_and_answer_are_zstacks(name: str) -> None:
    zstack, cls = REFERENCE["apis"][name], APIS[name]
    assert (cls.api_method, cls.api_path, cls.is_async) == \
        (zstack["method"], zstack["path"], zstack["async"])
    assert cls.envelope == zstack["envelope"]
    assert cls.need_session == zstack["needSession"]
    assert set(cls.result) == set(zstack["result"])


@pytest.mark.parametrize("name", ZSTACK_APIS)
def test_every_parameter_zstack_requires_is_taken(name: str) -> None:
    zstack, cls = REFERENCE["apis"][name], APIS[name]
    for param in zstack["params"]:
        assert param["name"] in cls.params, f"{name} lacks {param['name']}"
        if param.get("required"):
            assert cls.params[param["name"]].required, f"{name}.{param['name']} is required"


def _fields(inventory: str) -> set[str]:
    entry = REFERENCE["inventories"][inventory]
    fields = set(entry["fields"])
    if entry["extends"]:  # the tag inventories extend TagInventory
        fields |= set(REFERENCE["inventories"]["TagInventory"]["fields"])
    return fields


async def test_core_inventories_have_zstacks_fields(api_client: Any) -> None:
    client = await api_client()
    zone = (await client.call("CreateZone", name="z1"))["inventory"]
    assert set(zone) == _fields("ZoneInventory")
    cluster = (await client.call("CreateCluster", zoneUuid=zone["uuid"], name="c1",
                                 hypervisorType="KVM"))["inventory"]
    assert set(cluster) == _fields("ClusterInventory")
    user_tag = (await client.call("CreateUserTag", resourceType="ZoneVO",
                                  resourceUuid=zone["uuid"], tag="t"))["inventory"]
    assert set(user_tag) == _fields("UserTagInventory") - {"tagPattern"}
    config = (await client.call("QueryGlobalConfig", limit=1))["inventories"][0]
    assert set(config) == _fields("GlobalConfigInventory")
    account = (await client.call("QueryAccount", q=["name=admin"]))["inventories"][0]
    assert set(account) == _fields("AccountInventory")
    session = await client.call("LogInByAccount", accountName="admin",
                                password=sha512("password"))
    assert set(session["inventory"]) == _fields("SessionInventory")
