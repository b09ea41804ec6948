"""Every identity API matches ZStack's description of it (tests/reference/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zcore.api import APIMessage
from zplugins.identity import api

REFERENCE = Path(__file__).parents[1] / "reference" / "zstack_api.json"
APIS_JSON = "apis"
INVENTORIES_JSON = "inventories"


def _load(part: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text())[part]
    return data


@pytest.mark.parametrize("name", api.__all__)
def test_api_matches_zstack(name: str) -> None:
    zstack = _load(APIS_JSON)[name]
    cls: type[APIMessage] = getattr(api, name)
    ours = cls.describe()
    assert cls.api_name == name
    for key in ("method", "path", "async", "query", "needSession"):
        assert ours[key] == zstack[key], key
    expected_envelope = None if zstack["method"] in ("GET", "DELETE") else zstack["envelope"]
    assert ours["envelope"] == expected_envelope
    if not zstack["query"]:
        assert ours["result"] == zstack["result"]
    params = {p["name"]: p for p in ours["params"]}
    for param in zstack["params"]:
        assert param["name"] in params, f"{name} lacks parameter {param['name']}"
        mine = params[param["name"]]
        for check in ("required", "maxLength", "validValues", "numberRange", "type"):
            if check in param:
                assert mine.get(check) == param[check], (param["name"], check)


def test_inventories_have_zstacks_fields() -> None:
    from datetime import UTC, datetime

    from zplugins.identity.models import AccountVO, SessionVO
    from zplugins.identity.service import (
        ACCOUNT_INVENTORY,
        SESSION_INVENTORY,
        account_inventory,
        session_inventory,
    )

    inventories = _load(INVENTORIES_JSON)
    now = datetime.now(UTC)
    account = AccountVO(uuid="a" * 32, name="n", description=None, type="Normal",
                        password="$argon2id$secret", createDate=now, lastOpDate=now)
    fields = account_inventory(account)
    assert set(fields) == set(inventories["AccountInventory"]["fields"])
    assert "$argon2id$secret" not in fields.values()
    assert inventories["AccountInventory"]["serverClass"] == ACCOUNT_INVENTORY
    session = SessionVO(uuid="b" * 32, accountUuid="a" * 32, userUuid="a" * 32,
                        userType="Account", createDate=now, expiredDate=now)
    inventory = session_inventory(session)
    assert set(inventory) == set(inventories["SessionInventory"]["fields"])
    assert inventory.server_class == inventories["SessionInventory"]["serverClass"] \
        == SESSION_INVENTORY
