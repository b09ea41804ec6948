"""KVM domain XML: a VM of :class:`~zkvmagent.commands.StartVmCmd` as libvirt defines it,
and the devices attached to it later.

The domain's name and uuid are the VM's uuid (as ZStack names its domains); the VM's name is
the domain's ``<description>`` and in its ``<metadata>``. Disks are files (qcow2 or raw) on
virtio (or IDE) with the volume uuid as serial; NICs are ``<interface type='bridge'>`` with
the NIC's MAC, bridge and tap name; the console is VNC (or SPICE).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

from zkvmagent.commands import AgentNic, AgentVolume, StartVmCmd

__all__ = [
    "ZSTACK_NS",
    "DomainXmlError",
    "add_device",
    "disk_element",
    "domain_xml",
    "find_disk",
    "find_nic",
    "graphics_ports",
    "nic_element",
    "remove_device",
    "tostring",
]

#: The namespace of the agent's ``<metadata>``.
ZSTACK_NS = "http://zstack.org"
ET.register_namespace("zs", ZSTACK_NS)

_BOOT_DEVICES = {"hd": "hd", "harddisk": "hd", "cdrom": "cdrom", "network": "network"}


class DomainXmlError(ValueError):
    """A command describes a device that cannot be put into a domain; the message says
    which and why."""


def tostring(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def _letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (as Linux names disks)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("a") + rest) + name
    return name


def disk_element(volume: AgentVolume, source: str) -> ET.Element:
    """The ``<disk>`` of ``volume`` whose file (or block device) is ``source``."""
    if volume.deviceId < 0:
        raise DomainXmlError(f"volume {volume.volumeUuid} has device id {volume.deviceId}; "
                             "device ids start at 0")
    if volume.deviceType not in ("file", "block"):
        raise DomainXmlError(f"volume {volume.volumeUuid} is of device type "
                             f"{volume.deviceType!r}; the agent attaches 'file' and 'block'")
    disk = ET.Element("disk", type=volume.deviceType, device="disk")
    _sub(disk, "driver", name="qemu", type=volume.format or "qcow2",
         cache=volume.cacheMode or "none")
    _sub(disk, "source", **({"file": source} if volume.deviceType == "file" else
                            {"dev": source}))
    if volume.useVirtio:
        _sub(disk, "target", dev=f"vd{_letters(volume.deviceId)}", bus="virtio")
    else:
        _sub(disk, "target", dev=f"hd{_letters(volume.deviceId)}", bus="ide")
    _sub(disk, "serial", volume.volumeUuid.replace("-", ""))
    if volume.shareable:
        _sub(disk, "shareable")
    return disk


def nic_element(nic: AgentNic) -> ET.Element:
    """The ``<interface type='bridge'>`` of ``nic``."""
    if not nic.bridgeName:
        raise DomainXmlError(f"NIC {nic.uuid} ({nic.mac}) names no bridge to plug into")
    interface = ET.Element("interface", type="bridge")
    _sub(interface, "mac", address=nic.mac.lower())
    _sub(interface, "source", bridge=nic.bridgeName)
    if nic.nicInternalName:
        _sub(interface, "target", dev=nic.nicInternalName)
    _sub(interface, "model", type="virtio" if nic.useVirtio else "e1000")
    return interface


def domain_xml(cmd: StartVmCmd, *, source: Callable[[AgentVolume], str], arch: str = "x86_64",
               vnc_port: int | None = None, domain_type: str = "kvm") -> str:
    """The domain of ``cmd``: ``source`` gives each volume's file on the host; ``vnc_port``
    a fixed console port (``None``: libvirt picks one); ``domain_type`` ``kvm``, or ``qemu``
    on a host without hardware virtualization."""
    if cmd.cpuNum < 1:
        raise DomainXmlError(f"VM {cmd.vmInstanceUuid} has {cmd.cpuNum} CPUs; at least 1")
    if cmd.memory < 1024 * 1024:
        raise DomainXmlError(f"VM {cmd.vmInstanceUuid} has {cmd.memory} bytes of memory; "
                             "at least 1 MiB")
    dom = ET.Element("domain", type=domain_type)
    _sub(dom, "name", cmd.vmInstanceUuid)
    _sub(dom, "uuid", cmd.vmInstanceUuid)
    _sub(dom, "description", cmd.vmName)
    metadata = _sub(dom, "metadata")
    zstack = _sub(metadata, f"{{{ZSTACK_NS}}}zstack")
    _sub(zstack, f"{{{ZSTACK_NS}}}vmName", cmd.vmName)
    if cmd.hostname:
        _sub(zstack, f"{{{ZSTACK_NS}}}hostname", cmd.hostname)
    _sub(dom, "memory", str(cmd.memory // 1024), unit="KiB")
    _sub(dom, "currentMemory", str(cmd.memory // 1024), unit="KiB")
    _sub(dom, "vcpu", str(cmd.cpuNum), placement="static")
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch=arch)
    for dev in cmd.bootDev or ["hd"]:
        boot = _BOOT_DEVICES.get(dev.lower())
        if boot is None:
            raise DomainXmlError(f"VM {cmd.vmInstanceUuid}: unknown boot device {dev!r}; "
                                 f"one of {', '.join(sorted(_BOOT_DEVICES))}")
        _sub(os_, "boot", dev=boot)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "restart")
    devices = _sub(dom, "devices")
    volumes = [cmd.rootVolume, *cmd.dataVolumes]
    _unique((v.deviceId for v in volumes), cmd.vmInstanceUuid, "volumes", "device id")
    for volume in volumes:
        devices.append(disk_element(volume, source(volume)))
    _unique((n.mac.lower() for n in cmd.nics), cmd.vmInstanceUuid, "NICs", "MAC")
    for nic in sorted(cmd.nics, key=lambda n: n.deviceId):
        devices.append(nic_element(nic))
    _sub(devices, "input", type="tablet", bus="usb")
    graphics = ET.Element("graphics", type="spice" if cmd.consoleMode == "spice" else "vnc",
                          listen="0.0.0.0")
    if vnc_port is None:
        graphics.set("port", "-1")
        graphics.set("autoport", "yes")
    else:
        graphics.set("port", str(vnc_port))
        graphics.set("autoport", "no")
    if cmd.consolePassword:
        graphics.set("passwd", cmd.consolePassword)
    devices.append(graphics)
    return tostring(dom)


def _unique(values: Iterable[object], vm_uuid: str, what: str, key: str) -> None:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise DomainXmlError(f"VM {vm_uuid}: two {what} have {key} {value}")
        seen.add(value)


def find_disk(xml: str, volume_uuid: str, source: str | None) -> ET.Element | None:
    """The ``<disk>`` of volume ``volume_uuid`` (by serial, else by file) in domain ``xml``."""
    serial = volume_uuid.replace("-", "")
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        src = disk.find("source")
        if disk.findtext("serial") in (serial, volume_uuid) or (
                source is not None and src is not None and source in (
                    src.get("file"), src.get("dev"))):
            return disk
    return None


def find_nic(xml: str, mac: str) -> ET.Element | None:
    """The ``<interface>`` with MAC ``mac`` in domain ``xml``."""
    for interface in ET.fromstring(xml).iterfind("devices/interface"):
        address = interface.find("mac")
        if address is not None and (address.get("address") or "").lower() == mac.lower():
            return interface
    return None


def _key(device: ET.Element) -> tuple[str | None, ...]:
    """What identifies a device in a domain: a disk's target, an interface's MAC."""
    if device.tag == "disk":
        target = device.find("target")
        return ("disk", target.get("dev") if target is not None else None)
    if device.tag == "interface":
        mac = device.find("mac")
        return ("interface", (mac.get("address") or "").lower() if mac is not None else None)
    return (device.tag, tostring(device).strip())


def add_device(xml: str, device: ET.Element) -> str:
    """Domain ``xml`` with ``device`` added to its devices (after the last of its kind)."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        devices = _sub(root, "devices")
    kin = [i for i, child in enumerate(devices) if child.tag == device.tag]
    devices.insert(kin[-1] + 1 if kin else len(devices), device)
    return tostring(root)


def remove_device(xml: str, device: ET.Element) -> str:
    """Domain ``xml`` without ``device`` (an element found in it by :func:`find_disk` or
    :func:`find_nic`)."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is not None:
        for child in list(devices):
            if _key(child) == _key(device):
                devices.remove(child)
    return tostring(root)


def graphics_ports(xml: str) -> list[tuple[str, int]]:
    """The consoles of domain ``xml``: their protocol and port (``-1`` while none is
    allocated)."""
    ports = []
    for graphics in ET.fromstring(xml).iterfind("devices/graphics"):
        try:
            port = int(graphics.get("port", "-1"))
        except ValueError:
            port = -1
        ports.append((graphics.get("type", "vnc"), port))
    return ports
