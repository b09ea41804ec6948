"""What other plugins may use of the compute plugin's hosts.

The only module of ``zplugins.compute`` that another plugin imports (besides
:mod:`zplugins.compute.hypervisor` for hypervisor drivers); everything else is internal.

* :class:`HostInfo`: a host, read-only.
* :func:`cluster_hosts`, :func:`get_host`: find hosts.
* :func:`host_call`: send an agent command to a host through its hypervisor driver.
* :data:`HOST_CONNECT_CHAIN`: the chain that runs when a host is added and each time it
  (re)connects. Its step ``connect-host`` provides ``ctx["host"]`` (a :class:`HostInfo`). To
  prepare something on every host as it connects, insert a step after it::

      def flow_insertions():
          yield FlowInsertion(HOST_CONNECT_CHAIN, "prepare-l2-on-host", after="connect-host")

      def flow_steps():
          yield FlowStep("prepare-l2-on-host", PrepareL2OnHost())  # requires = ("host",)

  A failing step fails the connection: a host being added is not added, an existing one
  stays ``Disconnected`` with the error.
* :class:`AddHostMessage`: the base of the APIs that add hosts of one hypervisor.

VMs (see ``flows/vm-*.yaml`` for the chains other plugins put steps into):

* :class:`VmSpec`, :class:`VolumeTO`, :class:`NicTO`, :class:`VmTO`: what the steps of
  ``vm-create`` and the hypervisor drivers hand each other;
* :func:`check_vm_state`: refuse an operation in a state it does not allow (``VM.1000``);
* :class:`VmInfo`, :func:`get_vm`: read a VM;
* :func:`vm_queue`: run work on a VM after every earlier operation on it, alone;
* :func:`on_host`, :func:`hypervisor_of`: call a host's hypervisor driver, at most
  ``kvm.host.syncLevel`` calls at once per host.

A host takes new VMs only when its ``state`` is ``Enabled`` and its ``status`` ``Connected``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zcore.errors import ZError
from zplugins.compute.host_service import (
    CONNECTED,
    CONNECTING,
    DISCONNECTED,
    HOST_CONNECT_CHAIN,
    HOST_CONNECT_FAILED,
    HOST_OPERATION_FAILED,
    HostInfo,
    host_event,
    service,
)
from zplugins.compute.hosts import AddHostMessage
from zplugins.compute.hypervisor import HostFacts, HypervisorDriver
from zplugins.compute.models import HostVO
from zplugins.compute.vm_contract import (
    CREATE_STOPPED,
    INSTANT_START,
    NicTO,
    VmSpec,
    VmTO,
    VolumeTO,
)
from zplugins.compute.vm_service import VmInfo, get_vm, hypervisor_of, on_host, vm_queue
from zplugins.compute.vm_states import VM_STATE_ERROR
from zplugins.compute.vm_states import check as check_vm_state
from zplugins.compute.vm_steps import record_vm_state

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "CONNECTED",
    "CONNECTING",
    "CREATE_STOPPED",
    "DISCONNECTED",
    "HOST_CONNECT_CHAIN",
    "HOST_CONNECT_FAILED",
    "HOST_OPERATION_FAILED",
    "INSTANT_START",
    "VM_STATE_ERROR",
    "AddHostMessage",
    "HostFacts",
    "HostInfo",
    "HypervisorDriver",
    "NicTO",
    "VmInfo",
    "VmSpec",
    "VmTO",
    "VolumeTO",
    "check_vm_state",
    "cluster_hosts",
    "get_host",
    "get_vm",
    "host_call",
    "host_event",
    "hypervisor_of",
    "on_host",
    "record_vm_state",
    "vm_queue",
]


def _cluster_hosts(session: Session, cluster_uuid: str, connected_only: bool) -> list[HostInfo]:
    query = select(HostVO).where(HostVO.clusterUuid == cluster_uuid)
    if connected_only:
        query = query.where(HostVO.status == CONNECTED)
    return [HostInfo.of(row) for row in session.scalars(query.order_by(HostVO.name,
                                                                       HostVO.uuid))]


async def cluster_hosts(node: Node, cluster_uuid: str, *,
                        connected_only: bool = True) -> list[HostInfo]:
    """The hosts of a cluster (only ``Connected`` ones unless told), by name.

    A host that is connecting is not ``Connected`` yet: it is prepared by the steps inserted
    into :data:`HOST_CONNECT_CHAIN` instead.
    """
    return await node.db.run(_cluster_hosts, cluster_uuid, connected_only)


async def get_host(node: Node, uuid: str) -> HostInfo | None:
    """The host ``uuid`` as it is now, or ``None`` if there is none."""
    def read(session: Session) -> HostInfo | None:
        row = session.get(HostVO, uuid)
        return HostInfo.of(row) if row is not None else None

    return await node.db.run(read)


async def host_call(node: Node, host: HostInfo, path: str, body: Mapping[str, Any], *,
                    timeout: float | None = None) -> dict[str, Any]:
    """Send an agent command to ``host`` through its hypervisor driver; the agent's reply.

    ``path`` follows ZStack's KVM agent protocol (``/network/l2vlan/createbridge``), ``body``
    is the command. Raises ``ZError("HOST.1001")`` naming the host and the command when the
    command cannot be delivered, times out (``timeout`` seconds; ``None`` for the driver's
    default) or the agent answers ``{"success": false, "error": ...}``.
    """
    try:
        reply = await service(node).driver(host.hypervisorType).call(
            node, host, path, dict(body), timeout)
    except Exception as exc:
        cause = exc if isinstance(exc, ZError) else None
        why = (exc.details or exc.description) if isinstance(exc, ZError) else \
            (str(exc) or type(exc).__name__)
        if isinstance(exc, TimeoutError):
            why = f"no answer within {timeout:g} s" if timeout else "timed out"
        raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                     f"command {path} on {host} failed: {why}", cause=cause) from exc
    if not isinstance(reply, dict):
        raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                     f"command {path} on {host} answered {type(reply).__name__}, not a JSON "
                     "object")
    if reply.get("success") is False:
        raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                     f"command {path} on {host} failed: "
                     f"{reply.get('error') or 'the agent gave no reason'}")
    return reply
