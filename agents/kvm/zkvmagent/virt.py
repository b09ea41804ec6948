"""The agent's libvirt connection: one per agent, every call in one worker thread.

libvirt-python blocks, so nothing here runs a libvirt call on the event loop:
:meth:`Libvirt.call` hands a function of the connection to a single-thread executor that owns
the connection. Lifecycle events come from libvirt's default event loop implementation,
registered once per process (:func:`libvirt.virEventRegisterDefaultImpl`) and run by a daemon
thread (:func:`libvirt.virEventRunDefaultImpl`); each event is handed to the asyncio loop with
``call_soon_threadsafe``.

With libvirt's test driver (``test:///<dir>/node.xml``) a missing node file is written first
with the configured fake host; every agent process then has its own in-memory host.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import libvirt

from zkvmagent.config import TestNode

__all__ = ["DOMAIN_STATES", "EVENT_STATES", "Libvirt", "StateListener", "test_node_path",
           "vm_uuid", "write_test_node"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Called on the event loop with the VM uuid and its new state when libvirt reports one.
StateListener = Callable[[str, str], None]

#: libvirt's domain states as the node's words (``/vm/vmsync``).
DOMAIN_STATES: dict[int, str] = {
    libvirt.VIR_DOMAIN_RUNNING: "Running",
    libvirt.VIR_DOMAIN_BLOCKED: "Running",
    libvirt.VIR_DOMAIN_PAUSED: "Paused",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "Paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "Shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "Shutdown",
    libvirt.VIR_DOMAIN_CRASHED: "Crashed",
}

#: libvirt's lifecycle events as the node's words; events not here (defined, undefined, the
#: guest asking to shut down: a stopped event follows) are not reported.
EVENT_STATES: dict[int, str] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: "Running",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "Running",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "Paused",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "Paused",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "Shutdown",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "Crashed",
}



def vm_uuid(dom: libvirt.virDomain) -> str:
    """The uuid of the VM of ``dom`` as the node writes it (ZStack's, without dashes)."""
    return str(dom.UUIDString()).replace("-", "")


def _quiet(_ctx: Any, _error: Any) -> None:
    # libvirt prints every error on stderr by default; the agent reports them itself.
    return None


_events_lock = threading.Lock()
_events_thread: threading.Thread | None = None


def _run_events() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:
            log.exception("libvirt's event loop failed; continuing")


def start_event_thread() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per
    process; it must happen before the first connection is opened)."""
    global _events_thread
    with _events_lock:
        if _events_thread is None:
            libvirt.registerErrorHandler(_quiet, None)
            libvirt.virEventRegisterDefaultImpl()
            _events_thread = threading.Thread(target=_run_events, name="libvirt-events",
                                              daemon=True)
            _events_thread.start()


def test_node_path(uri: str) -> Path | None:
    """The node file of a ``test:///<file>`` URI (``None`` for another URI or the driver's
    built-in ``test:///default``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "test" or parsed.path in ("", "/default"):
        return None
    return Path(parsed.path)


def write_test_node(path: Path, node: TestNode) -> None:
    """Write the test driver's description of a fake host with ``node``'s CPUs and memory."""
    cores = max(1, node.cpus // max(1, node.sockets))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<node>\n"
        "  <cpu>\n"
        f"    <nodes>1</nodes><sockets>{node.sockets}</sockets><cores>{cores}</cores>"
        "<threads>1</threads>\n"
        f"    <active>{node.cpus}</active><mhz>{node.mhz}</mhz><model>x86_64</model>\n"
        "  </cpu>\n"
        f"  <memory>{node.memory // 1024}</memory>\n"
        "</node>\n")


class Libvirt:
    """The connection to ``uri``, its worker thread and its lifecycle events.

    ``on_state`` is called on the event loop for each reported state change.
    """

    def __init__(self, uri: str, *, test_node: TestNode | None = None,
                 on_state: StateListener | None = None) -> None:
        self.uri = uri
        self._test_node = test_node or TestNode()
        self._on_state = on_state
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="libvirt")
        self._conn: libvirt.virConnect | None = None
        self._callback_id: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_test_driver(self) -> bool:
        return urlparse(self.uri).scheme == "test"

    async def open(self) -> None:
        """Open the connection and subscribe to lifecycle events."""
        self._loop = asyncio.get_running_loop()
        start_event_thread()
        node = test_node_path(self.uri)
        if node is not None and not node.exists():
            write_test_node(node, self._test_node)

        def open_(_: None) -> None:
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise ConnectionError(f"cannot connect to libvirt at {self.uri}: "
                                      f"{exc.get_error_message()}") from exc
            self._conn = conn
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)

        await self._loop.run_in_executor(self._executor, open_, None)

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        # On libvirt's event thread.
        state = EVENT_STATES.get(event)
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and \
                detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
            state = "Crashed"
        if state is None or self._on_state is None or self._loop is None:
            return
        uuid = vm_uuid(dom)
        log.debug("libvirt: domain %s is now %s (event %d, detail %d)", uuid, state, event,
                  detail)
        try:
            self._loop.call_soon_threadsafe(self._on_state, uuid, state)
        except RuntimeError:  # the loop is closed: the agent is stopping
            pass

    async def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(connection)`` in the connection's thread; its result."""
        conn = self._conn
        if conn is None:
            raise ConnectionError(f"the libvirt connection to {self.uri} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

    async def call_long(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(connection)`` in a thread of its own (a call that takes minutes, such as
        a migration, must not hold up the connection's thread)."""
        conn = self._conn
        if conn is None:
            raise ConnectionError(f"the libvirt connection to {self.uri} is not open")
        return await asyncio.to_thread(fn, conn)

    async def close(self) -> None:
        """Unsubscribe from events and close the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            def close_(_: None) -> None:
                if self._callback_id is not None:
                    try:
                        conn.domainEventDeregisterAny(self._callback_id)
                    except libvirt.libvirtError:
                        pass
                conn.close()

            await asyncio.get_running_loop().run_in_executor(self._executor, close_, None)
        self._executor.shutdown(wait=False)
