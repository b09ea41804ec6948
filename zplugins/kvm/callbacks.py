"""The routes KVM agents post to: replies of asynchronous commands, and events.

* ``POST /zstack/asyncrest/callback`` with header ``taskuuid``: the reply of an asynchronous
  command; it completes the command waiting for that task on this node
  (:meth:`zplugins.kvm.hypervisor.KvmHypervisor.complete`). A reply nobody waits for (the
  command timed out, or another node sent it) is logged and dropped.
* ``POST /zstack/asyncrest/sendcommand`` with header ``commandpath``: an event.
  ``/kvm/reportvmstate`` (``{"hostUuid", "vmUuid", "vmState"}``, libvirt's word) records the
  VM's new state when the VM is on that host: ``Running``, ``Paused``, and ``Shutdown`` or
  ``Crashed`` as ``Stopped`` (its CPU and memory go back to the host), through
  :func:`zplugins.compute.public.record_vm_state`.

Both answer at once; the work happens in the background, so an agent is never held up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from zcore.records import WebRoute
from zcore.web import NODE
from zplugins.compute.public import hypervisor_of, record_vm_state
from zplugins.kvm.commands import REPORT_VM_STATE_PATH
from zplugins.kvm.hypervisor import CALLBACK_PATH, EVENT_PATH, KvmHypervisor

log = logging.getLogger(__name__)

__all__ = ["VM_STATES", "web_routes"]

#: libvirt's words, as the node's VM states.
VM_STATES = {"Running": "Running", "Paused": "Paused", "Shutdown": "Stopped",
             "Crashed": "Stopped"}

def _answer() -> web.Response:
    return web.json_response({"success": True, "error": None})


def _refuse(status: int, why: str) -> web.Response:
    log.warning("a KVM agent posted something unusable: %s", why)
    return web.json_response({"success": False, "error": why}, status=status)


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def callback(request: web.Request) -> web.Response:
    node = request.app[NODE]
    task = request.headers.get("taskuuid")
    if not task:
        return _refuse(400, f"{CALLBACK_PATH}: the header 'taskuuid' is missing")
    body = await _body(request)
    if body is None:
        return _refuse(400, f"{CALLBACK_PATH}: the reply of task {task} is not a JSON object")
    driver = hypervisor_of(node, KvmHypervisor.hypervisor_type)
    assert isinstance(driver, KvmHypervisor)
    if not driver.complete(task, body):
        log.warning("a KVM agent posted the reply of task %s, which no command on this node "
                    "waits for (it timed out?); dropped: %s", task, str(body)[:300])
    return _answer()


async def send_command(request: web.Request) -> web.Response:
    node = request.app[NODE]
    path = request.headers.get("commandpath")
    body = await _body(request)
    if body is None:
        return _refuse(400, f"{EVENT_PATH}: the event {path} is not a JSON object")
    if path != REPORT_VM_STATE_PATH:
        return _refuse(404, f"{EVENT_PATH}: unknown commandpath {path!r}; this node takes "
                            f"{REPORT_VM_STATE_PATH}")
    host_uuid, vm_uuid, word = body.get("hostUuid"), body.get("vmUuid"), body.get("vmState")
    state = VM_STATES.get(str(word))
    if not isinstance(host_uuid, str) or not isinstance(vm_uuid, str) or state is None:
        return _refuse(400, f"{REPORT_VM_STATE_PATH}: needs hostUuid, vmUuid and vmState "
                            f"(one of {', '.join(VM_STATES)}); got {body}")
    node.spawn(record_vm_state(node, host_uuid, vm_uuid, state),
               name=f"kvm-vm-state-{vm_uuid}")
    return _answer()


def web_routes() -> Iterator[WebRoute]:
    yield WebRoute("POST", CALLBACK_PATH, callback)
    yield WebRoute("POST", EVENT_PATH, send_command)
