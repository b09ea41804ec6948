"""Helpers of the compute tests: calling APIs, counting rows, test plugins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select

from zcore import SystemTagPattern, hookimpl
from zcore.api import SYSTEM, Caller
from zcore.db import ResourceVO, SystemTagVO, UserTagVO
from zcore.errors import ZError
from zcore.node import Node
from zplugins.compute.models import ClusterVO, ZoneVO

MakeNode = Callable[..., Awaitable[Node]]


class compute_tags:  # a plugin with system tag patterns for zones and clusters
    @staticmethod
    @hookimpl
    def zcore_system_tag_patterns() -> Any:
        yield SystemTagPattern("owner::{team}", "ZoneVO")
        yield SystemTagPattern("rack::{rack}", "ClusterVO")


async def call(node: Node, api: str, caller: Caller = SYSTEM, /,
               **params: Any) -> dict[str, Any]:
    return await node.api.call(api, params, caller=caller)


async def zone(node: Node, name: str = "z1", caller: Caller = SYSTEM,
               **params: Any) -> dict[str, Any]:
    return (await call(node, "CreateZone", caller, name=name, **params))["inventory"]


async def cluster(node: Node, zone_uuid: str, name: str = "c1", caller: Caller = SYSTEM,
                  **params: Any) -> dict[str, Any]:
    params.setdefault("hypervisorType", "KVM")
    return (await call(node, "CreateCluster", caller, zoneUuid=zone_uuid, name=name,
                       **params))["inventory"]


async def resource(node: Node, uuid: str) -> ResourceVO:
    """The common resource row of ``uuid``, which must exist."""
    row = await node.db.run(lambda s: s.get(ResourceVO, uuid))
    assert row is not None, f"no resource {uuid}"
    return row


async def fails(awaitable: Awaitable[Any], code: str) -> ZError:
    """Await ``awaitable``, which must raise a ZError with ``code``; the error."""
    try:
        await awaitable
    except ZError as exc:
        assert exc.code == code, f"expected {code}, got {exc}"
        return exc
    raise AssertionError(f"expected {code}, but the call succeeded")


def details(error: ZError) -> str:
    """Every description and details in an error's cause chain, for matching."""
    return " | ".join(f"{e.description}: {e.details}" for e in error.causes())


async def counts(node: Node) -> dict[str, int]:
    """Rows of zones, clusters, their resource rows and tags."""
    def count(session: Any) -> dict[str, int]:
        kinds = ("ZoneVO", "ClusterVO")
        return {
            "zones": session.scalar(select(func.count()).select_from(ZoneVO)),
            "clusters": session.scalar(select(func.count()).select_from(ClusterVO)),
            "resources": session.scalar(select(func.count()).select_from(ResourceVO)
                                        .where(ResourceVO.resourceType.in_(kinds))),
            "system_tags": session.scalar(select(func.count()).select_from(SystemTagVO)),
            "user_tags": session.scalar(select(func.count()).select_from(UserTagVO)),
        }

    return await node.db.run(count)


NOTHING = {"zones": 0, "clusters": 0, "resources": 0, "system_tags": 0, "user_tags": 0}


def tenant(digit: str) -> Caller:
    """A normal (not admin) account, as the identity plugin would authenticate it."""
    return Caller(account_uuid=digit * 32, account_name=f"tenant-{digit}", is_admin=False)
