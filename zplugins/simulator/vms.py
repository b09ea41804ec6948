"""Simulated VMs: the KVM agent's ``/vm/*`` commands answered by simulated hosts.

The ``Simulator`` hypervisor driver sends the same commands with the same bodies as the KVM
driver (ZStack's ``StartVmCmd`` to ``/vm/start``, ...; :func:`start_body` and friends build
them) through :meth:`zplugins.simulator.hosts.Simulator.answer`, so that
``SIMULATOR.fail("/vm/start", ...)`` and unreachable hosts fail VM operations as they fail
everything else. The handlers here keep each machine's VMs in ``host.state["vms"]``::

    {vm uuid: {"state": "Running" | "Paused" | "Stopped", "name", "cpuNum", "memory",
               "volumes": {volume uuid: {...}}, "nics": {nic uuid: {...}}, "vncPort"}}

Tests read them with :meth:`zplugins.simulator.hosts.SimHost.vms` (a copy). Like a libvirt
host: starting a VM it knows restarts it, stopping or destroying one it does not know
succeeds, and rebooting, pausing, resuming or migrating one it does not know fails naming
the VM. ``/vm/migrate`` moves the VM to the machine named by ``destHostUuid`` (a field the
simulator adds to ZStack's ``MigrateVmCmd``: simulated hosts may share a management IP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zplugins.simulator.hosts import SIMULATOR, SimHost

if TYPE_CHECKING:
    from zplugins.compute.public import HostInfo, NicTO, VmTO, VolumeTO

__all__ = [
    "HANDLERS",
    "MIGRATE_PATH",
    "PAUSED",
    "RUNNING",
    "STOPPED",
    "migrate_body",
    "nic_body",
    "register",
    "start_body",
    "volume_body",
]

START_PATH = "/vm/start"
STOP_PATH = "/vm/stop"
REBOOT_PATH = "/vm/reboot"
PAUSE_PATH = "/vm/pause"
RESUME_PATH = "/vm/resume"
DESTROY_PATH = "/vm/destroy"
MIGRATE_PATH = "/vm/migrate"
ATTACH_VOLUME_PATH = "/vm/attachdatavolume"
DETACH_VOLUME_PATH = "/vm/detachdatavolume"
ATTACH_NIC_PATH = "/vm/attachnic"
DETACH_NIC_PATH = "/vm/detachnic"
SYNC_PATH = "/vm/vmsync"
VNC_PORT_PATH = "/vm/getvncport"

RUNNING = "Running"
PAUSED = "Paused"
STOPPED = "Stopped"

#: The first console port of a host, as libvirt's.
FIRST_VNC_PORT = 5900


# --------------------------------------------------------------------------- bodies


def volume_body(volume: VolumeTO) -> dict[str, Any]:
    """ZStack's agent ``VolumeTO`` of ``volume``."""
    return {"volumeUuid": volume.uuid, "installPath": volume.installPath,
            "deviceId": volume.deviceId, "format": volume.format, "deviceType": "file",
            "useVirtio": True, "shareable": volume.shareable, "cacheMode": "none"}


def nic_body(nic: NicTO) -> dict[str, Any]:
    """ZStack's agent ``NicTO`` of ``nic``."""
    return {"uuid": nic.uuid, "mac": nic.mac, "deviceId": nic.deviceId,
            "bridgeName": nic.bridgeName, "nicInternalName": nic.internalName, "ip": nic.ip,
            "netmask": nic.netmask, "gateway": nic.gateway, "l3NetworkUuid": nic.l3NetworkUuid,
            "isDefaultRoute": nic.isDefault, "useVirtio": True}


def start_body(vm: VmTO) -> dict[str, Any]:
    """ZStack's ``StartVmCmd`` of ``vm``."""
    return {"vmInstanceUuid": vm.uuid, "vmName": vm.name, "cpuNum": vm.cpuNum,
            "cpuSpeed": vm.cpuSpeed, "memory": vm.memorySize,
            "rootVolume": volume_body(vm.rootVolume),
            "dataVolumes": [volume_body(v) for v in vm.dataVolumes],
            "nics": [nic_body(n) for n in vm.nics], "bootDev": [vm.bootDev],
            "consoleMode": "vnc", "consolePassword": None, "hostname": vm.hostname,
            "timeout": 300}


def migrate_body(vm_uuid: str, host: HostInfo, destination: HostInfo) -> dict[str, Any]:
    """ZStack's ``MigrateVmCmd``, plus the destination's uuid for the simulator."""
    return {"vmUuid": vm_uuid, "destHostIp": destination.managementIp,
            "srcHostIp": host.managementIp, "migrateFromDestination": False,
            "destHostUuid": destination.uuid}


# --------------------------------------------------------------------------- handlers


def _vms(host: SimHost) -> dict[str, dict[str, Any]]:
    vms: dict[str, dict[str, Any]] = host.state.setdefault("vms", {})
    return vms


def _refuse(host: SimHost, vm_uuid: Any, why: str) -> dict[str, Any]:
    return {"success": False, "error": f"VM {vm_uuid} on simulated host {host.uuid} {why}"}


def _known(host: SimHost, vm_uuid: Any, *states: str) -> dict[str, Any] | str:
    """The VM, or why the command cannot act on it (unknown, or not in ``states``)."""
    vm = _vms(host).get(vm_uuid)
    if vm is None:
        return "does not exist on this host"
    if states and vm["state"] not in states:
        return f"is {vm['state']}, not {' or '.join(states)}"
    return vm


def _volumes(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    volumes = [body["rootVolume"], *(body.get("dataVolumes") or [])]
    return {v["volumeUuid"]: dict(v) for v in volumes}


def _free_port(host: SimHost) -> int:
    used = {vm.get("vncPort") for vm in _vms(host).values()}
    port = FIRST_VNC_PORT
    while port in used:
        port += 1
    return port


def _start(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    uuid = body["vmInstanceUuid"]
    vm = _vms(host).get(uuid)
    port = vm["vncPort"] if vm is not None else _free_port(host)
    _vms(host)[uuid] = {"state": RUNNING, "name": body.get("vmName"), "cpuNum": body["cpuNum"],
                        "memory": body["memory"], "volumes": _volumes(body),
                        "nics": {n["uuid"]: dict(n) for n in body.get("nics") or []},
                        "vncPort": port}
    return {}


def _stop(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    # As on a KVM host, a stopped VM's domain is undefined: the host forgets it, and the
    # next start defines it again (on whichever host the node picks).
    _vms(host).pop(body["uuid"], None)
    return {}


def _reboot(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _known(host, body["uuid"], RUNNING)
    if isinstance(vm, str):
        return _refuse(host, body["uuid"], f"cannot reboot: it {vm}")
    return {}


def _pause(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _known(host, body["uuid"], RUNNING, PAUSED)
    if isinstance(vm, str):
        return _refuse(host, body["uuid"], f"cannot pause: it {vm}")
    vm["state"] = PAUSED
    return {}


def _resume(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _known(host, body["uuid"], RUNNING, PAUSED)
    if isinstance(vm, str):
        return _refuse(host, body["uuid"], f"cannot resume: it {vm}")
    vm["state"] = RUNNING
    return {}


def _destroy(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    _vms(host).pop(body["uuid"], None)
    return {}


def _migrate(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    uuid = body["vmUuid"]
    vm = _known(host, uuid, RUNNING, PAUSED)
    if isinstance(vm, str):
        return _refuse(host, uuid, f"cannot migrate: it {vm}")
    dest = SIMULATOR.get(body.get("destHostUuid") or "")
    if dest is None or not dest.reachable:
        return _refuse(host, uuid, f"cannot migrate: destination host "
                                   f"{body.get('destHostUuid')} ({body.get('destHostIp')}) "
                                   "is unreachable")
    if dest is host:
        return _refuse(host, uuid, "cannot migrate: the destination is its own host")
    del _vms(host)[uuid]
    vm["vncPort"] = _free_port(dest)
    _vms(dest)[uuid] = vm
    return {}


def _attach_volume(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _known(host, body["vmInstanceUuid"])
    if isinstance(vm, str):
        return _refuse(host, body["vmInstanceUuid"], f"cannot attach a volume: it {vm}")
    volume = body["volume"]
    vm["volumes"][volume["volumeUuid"]] = dict(volume)
    return {}


def _detach_volume(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _vms(host).get(body["vmInstanceUuid"])
    if vm is not None:
        vm["volumes"].pop(body["volume"]["volumeUuid"], None)
    return {}


def _attach_nic(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _known(host, body["vmUuid"])
    if isinstance(vm, str):
        return _refuse(host, body["vmUuid"], f"cannot attach a NIC: it {vm}")
    nic = body["nic"]
    vm["nics"][nic["uuid"]] = dict(nic)
    return {}


def _detach_nic(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _vms(host).get(body["vmUuid"])
    if vm is not None:
        vm["nics"].pop(body["nic"]["uuid"], None)
    return {}


def _sync(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vms: dict[str, dict[str, Any]] = host.state.get("vms", {})
    return {"states": {uuid: vm["state"] for uuid, vm in vms.items()}}


def _vnc_port(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
    vm = _known(host, body["vmUuid"], RUNNING, PAUSED)
    if isinstance(vm, str):
        return _refuse(host, body["vmUuid"], f"has no console: it {vm}")
    return {"port": vm["vncPort"], "protocol": "vnc"}


HANDLERS = {
    START_PATH: _start,
    STOP_PATH: _stop,
    REBOOT_PATH: _reboot,
    PAUSE_PATH: _pause,
    RESUME_PATH: _resume,
    DESTROY_PATH: _destroy,
    MIGRATE_PATH: _migrate,
    ATTACH_VOLUME_PATH: _attach_volume,
    DETACH_VOLUME_PATH: _detach_volume,
    ATTACH_NIC_PATH: _attach_nic,
    DETACH_NIC_PATH: _detach_nic,
    SYNC_PATH: _sync,
    VNC_PORT_PATH: _vnc_port,
}


def register() -> None:
    """Answer the ``/vm/*`` commands on every simulated host (harmless when repeated)."""
    for path, handler in HANDLERS.items():
        SIMULATOR.register_handler(path, handler)


register()
