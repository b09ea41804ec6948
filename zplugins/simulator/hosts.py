"""Simulated hosts: ``AddSimulatorHost`` and the in-process world they live in.

:data:`SIMULATOR` is the simulated world outside the management nodes: the machines that
``AddSimulatorHost`` adds, with the CPUs and memory it was given. Every node of a process
sees the same machines, as management nodes share real hosts. The ``Simulator`` hypervisor
driver (:mod:`zplugins.simulator.hypervisor`) answers every agent command from them:

* A path with a registered handler is answered by it; any other path answers
  ``{"success": true}``. Other simulator modules register handlers for the commands their
  feature sends, once, at import time or when the node starts (registering the same function
  again is harmless)::

      def create_bridge(host: SimHost, body: dict) -> dict:
          host.state.setdefault("bridges", set()).add(body["bridgeName"])
          return {"success": True}

      SIMULATOR.register_handler("/network/l2novlan/createbridge", create_bridge)

* Every command a host answers except pings is recorded in its ``calls``; ``state`` is a dict
  for the handlers' own use.
* Tests make a host unreachable (``SIMULATOR.host(uuid).reachable = False``: every command,
  pings included, then fails as if the host were down) or make commands fail
  (``SIMULATOR.fail(path, error, host_uuid=None)``: on one host or, without a uuid, on every
  host; ``/host/connect`` makes connecting fail). ``SIMULATOR.heal()`` undoes failures and
  ``SIMULATOR.clear()`` forgets every machine.

``AddSimulatorHost`` takes ``cpuCapacity`` (the host's number of CPUs, its ``cpuNum``, as in
ZStack's simulator) and ``memoryCapacity`` (bytes). The inventory is ZStack's
``SimulatorHostInventory``: HostInventory plus ``cpuCapacity`` and ``memoryCapacity``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from zcore import ApiMessage
from zcore.api import ApiContext, Param
from zcore.errors import ZError
from zplugins.compute.public import HOST_OPERATION_FAILED, AddHostMessage

__all__ = [
    "SIMULATOR",
    "AddSimulatorHost",
    "Handler",
    "SimHost",
    "SimulatedHostDown",
    "Simulator",
]

#: What a handler gets and answers: the host and the command's body; a reply dict.
Handler = Callable[["SimHost", dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]

#: The paths the driver itself uses.
CONNECT_PATH = "/host/connect"
PING_PATH = "/host/ping"


class SimulatedHostDown(ConnectionError):
    """A command was sent to a simulated host that is unreachable."""


@dataclass(eq=False)
class SimHost:
    """One simulated machine: what it reports, what it was sent, and test controls."""

    uuid: str
    cpuNum: int
    totalMemory: int
    cpuSockets: int = 1
    cpuSpeed: int = 2400
    architecture: str = "x86_64"
    #: False: every command, pings included, fails as if the host were down.
    reachable: bool = True
    #: Paths whose commands fail on this host, with the error the agent gives.
    failures: dict[str, str] = field(default_factory=dict)
    #: Every command answered, pings excepted: ``(path, body)``.
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: For the handlers' own use.
    state: dict[str, Any] = field(default_factory=dict)

    def vms(self) -> dict[str, dict[str, Any]]:
        """A copy of the VMs this machine runs or defines, by uuid (see
        :mod:`zplugins.simulator.vms`): ``state``, ``cpuNum``, ``memory``, ``volumes``,
        ``nics``, ..."""
        return copy.deepcopy(self.state.get("vms", {}))


class Simulator:
    """The simulated machines and the handlers of agent commands."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._hosts: dict[str, SimHost] = {}
        self._failures: dict[str, str] = {}

    # ----------------------------------------------------------------- handlers

    def register_handler(self, path: str, fn: Handler) -> None:
        """Answer the agent command ``path`` with ``fn(host, body)`` on every simulated host.

        Registering the same function (by module and name) again replaces it; another
        function for a path that has one is an error naming both.
        """
        if not path.startswith("/"):
            raise ValueError(f"simulator handler path {path!r} must start with '/'")
        old = self._handlers.get(path)
        if old is not None and _name(old) != _name(fn):
            raise ValueError(f"simulator path {path} is already handled by {_name(old)}; "
                             f"{_name(fn)} cannot handle it too")
        self._handlers[path] = fn

    def unregister_handler(self, path: str) -> None:
        self._handlers.pop(path, None)

    # ----------------------------------------------------------------- machines

    def add_host(self, uuid: str, cpu_num: int, memory: int, *, cpu_sockets: int = 1,
                 architecture: str = "x86_64") -> SimHost:
        """Make (or replace) the machine of host ``uuid``."""
        host = self._hosts[uuid] = SimHost(uuid, cpu_num, memory, cpu_sockets,
                                           architecture=architecture)
        return host

    def host(self, uuid: str) -> SimHost:
        """The machine of host ``uuid``; ``KeyError`` naming it if there is none."""
        try:
            return self._hosts[uuid]
        except KeyError:
            raise KeyError(f"no simulated host {uuid}") from None

    def get(self, uuid: str) -> SimHost | None:
        return self._hosts.get(uuid)

    def remove_host(self, uuid: str) -> None:
        self._hosts.pop(uuid, None)

    def hosts(self) -> list[SimHost]:
        return list(self._hosts.values())

    # ----------------------------------------------------------------- test controls

    def fail(self, path: str, error: str = "failed on purpose", *,
             host_uuid: str | None = None) -> None:
        """Make command ``path`` fail on host ``host_uuid`` (or on every host)."""
        if host_uuid is None:
            self._failures[path] = error
        else:
            self.host(host_uuid).failures[path] = error

    def heal(self) -> None:
        """Every command succeeds again and every host is reachable."""
        self._failures.clear()
        for host in self._hosts.values():
            host.failures.clear()
            host.reachable = True

    def clear(self) -> None:
        """Forget every machine and failure (the handlers stay)."""
        self._hosts.clear()
        self._failures.clear()

    # ----------------------------------------------------------------- answering

    async def answer(self, uuid: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Host ``uuid``'s reply to command ``path``; raises :class:`SimulatedHostDown`."""
        host = self.get(uuid)
        if host is None or not host.reachable:
            raise SimulatedHostDown(f"simulated host {uuid} is unreachable"
                                    if host is not None else f"no simulated host {uuid}")
        if path != PING_PATH:
            host.calls.append((path, body))
        error = host.failures.get(path, self._failures.get(path))
        if error is not None:
            return {"success": False, "error": error}
        handler = self._handlers.get(path)
        if handler is None:
            return {"success": True}
        reply = handler(host, body)
        if inspect.isawaitable(reply):
            reply = await reply
        if not isinstance(reply, dict):
            raise ZError(HOST_OPERATION_FAILED, "simulator handler failed",
                         f"the simulator handler of {path} ({_name(handler)}) returned "
                         f"{type(reply).__name__}, not a dict")
        return {"success": True, **reply}


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


#: The simulated world of this process.
SIMULATOR = Simulator()


# --------------------------------------------------------------------------- the API


class AddSimulatorHost(AddHostMessage, path="/hosts/simulators"):
    """Add a simulated host with the given CPUs and memory, for tests and benchmarks."""

    hypervisor_type = "Simulator"

    memoryCapacity = Param(int, required=True, number_range=(1, 2**63 - 1), api_type="long",
                           description="The host's memory in bytes")
    cpuCapacity = Param(int, required=True, number_range=(1, 2**31 - 1), api_type="long",
                        description="The host's number of CPUs (its cpuNum)")

    async def prepare(self, ctx: ApiContext, host_uuid: str) -> None:
        SIMULATOR.add_host(host_uuid, self.cpuCapacity, self.memoryCapacity)

    async def forget(self, ctx: ApiContext, host_uuid: str) -> None:
        SIMULATOR.remove_host(host_uuid)


def api_messages() -> Iterator[ApiMessage]:
    yield ApiMessage(AddSimulatorHost)
