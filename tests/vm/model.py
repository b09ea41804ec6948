"""What a user expects of VMs and volumes: a model the stateful test checks the cloud against.

The model is written from ZStack's documented behaviour, not from this project's tables: which
states each VM operation may start from and where it leaves the VM, what destroying,
recovering and expunging a VM does to its volumes and NICs, and what deleting, recovering
and expunging a data volume does. Nothing here talks to the cloud.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "HOLDING_HOST",
    "NIC_VM_STATES",
    "VM_OPERATIONS",
    "VOLUME_VM_STATES",
    "ZSTACK_VM_STATES",
    "Model",
    "VmModel",
    "VolumeModel",
]

#: Every state ZStack's VmInstanceState names.
ZSTACK_VM_STATES = frozenset({
    "Created", "Starting", "Running", "Stopping", "Stopped", "Rebooting", "Migrating",
    "Pausing", "Paused", "Resuming", "Destroying", "Destroyed", "Expunging", "Unknown",
    "VolumeMigrating", "Crashed", "NoState"})

#: VM operation -> (the states it may start from, the state it leaves the VM in; ``None``:
#: the VM is gone). Stopping a stopped VM and destroying a destroyed one do nothing.
VM_OPERATIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "StopVmInstance": (frozenset({"Running", "Paused", "Stopped"}), "Stopped"),
    "StartVmInstance": (frozenset({"Stopped"}), "Running"),
    "RebootVmInstance": (frozenset({"Running"}), "Running"),
    "PauseVmInstance": (frozenset({"Running"}), "Paused"),
    "ResumeVmInstance": (frozenset({"Paused"}), "Running"),
    "MigrateVm": (frozenset({"Running"}), "Running"),
    "DestroyVmInstance": (frozenset({"Running", "Stopped", "Paused", "Destroyed"}),
                          "Destroyed"),
    "RecoverVmInstance": (frozenset({"Destroyed"}), "Stopped"),
    "ExpungeVmInstance": (frozenset({"Destroyed"}), None),
}

#: The VM states in which its data volumes may be attached, detached or snapshotted.
VOLUME_VM_STATES = frozenset({"Running", "Stopped", "Paused"})

#: The VM states in which NICs may be attached or detached.
NIC_VM_STATES = frozenset({"Running", "Stopped"})

#: The stable VM states in which a VM occupies a host (its CPU and memory are taken).
HOLDING_HOST = frozenset({"Running", "Paused"})


@dataclass
class VmModel:
    """One VM as the user expects it."""

    label: str
    uuid: str
    state: str
    cpu: int
    memory: int
    root_volume: str
    #: NIC uuid -> L3 network uuid.
    nics: dict[str, str] = field(default_factory=dict)
    #: The host it occupies (which one is the allocator's choice, read from the cloud).
    host: str | None = None


@dataclass
class VolumeModel:
    """One volume (root or data) as the user expects it."""

    label: str
    uuid: str
    type: str
    #: ``NotInstantiated``, ``Ready`` or ``Deleted``.
    status: str
    vm: str | None = None
    snapshots: int = 0


@dataclass
class Model:
    """Everything one sequence of operations created and has not expunged, in creation
    order (so that drawing "the n-th VM" is the same VM whenever a sequence is replayed)."""

    #: How many VMs (all of one offering) each host has room for.
    room: dict[str, int] = field(default_factory=dict)
    vms: dict[str, VmModel] = field(default_factory=dict)
    volumes: dict[str, VolumeModel] = field(default_factory=dict)
    counter: int = 0

    def label(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    # ------------------------------------------------------------------- VM operations

    def allows(self, operation: str, vm: VmModel) -> bool:
        return vm.state in VM_OPERATIONS[operation][0]

    def free(self, host: str) -> int:
        return self.room[host] - sum(1 for vm in self.vms.values() if vm.host == host)

    def has_room(self, but: str | None = None) -> bool:
        """Whether a host (other than ``but``) has room for one more VM."""
        return any(self.free(host) > 0 for host in self.room if host != but)

    def fits(self, operation: str, vm: VmModel) -> bool:
        """Whether an allowed operation finds the host it needs: starting needs room on
        any host, migrating room on another one."""
        if operation == "StartVmInstance":
            return self.has_room()
        if operation == "MigrateVm":
            return self.has_room(but=vm.host)
        return True

    def apply_vm_operation(self, operation: str, vm: VmModel) -> None:
        """The effect of a VM operation the model allows."""
        after = VM_OPERATIONS[operation][1]
        root = self.volumes[vm.root_volume]
        if after is None:  # expunged: root volume and NICs go, data volumes are detached
            del self.vms[vm.uuid]
            del self.volumes[vm.root_volume]
            for volume in self.volumes.values():
                if volume.vm == vm.uuid:
                    volume.vm = None
            return
        if after == "Destroyed":
            root.status = "Deleted"
        elif operation == "RecoverVmInstance":
            root.status = "Ready"
        vm.state = after
        if after not in HOLDING_HOST:
            vm.host = None

    # ------------------------------------------------------------------- volume operations

    def vm_of(self, volume: VolumeModel) -> VmModel | None:
        return self.vms[volume.vm] if volume.vm is not None else None

    def detached_data_volumes(self) -> list[VolumeModel]:
        return [v for v in self.volumes.values() if v.type == "Data" and v.vm is None
                and v.status in ("Ready", "NotInstantiated")]

    def attached_data_volumes(self) -> list[VolumeModel]:
        return [v for v in self.volumes.values() if v.type == "Data" and v.vm is not None]

    def live_data_volumes(self) -> list[VolumeModel]:
        return [v for v in self.volumes.values() if v.type == "Data" and v.status != "Deleted"]

    def deleted_data_volumes(self) -> list[VolumeModel]:
        return [v for v in self.volumes.values() if v.type == "Data" and v.status == "Deleted"]

    def snapshottable(self) -> list[VolumeModel]:
        """Ready volumes whose VM (if any) lets them be snapshotted."""
        return [v for v in self.volumes.values() if v.status == "Ready"
                and (v.vm is None or self.vms[v.vm].state in VOLUME_VM_STATES)]

    def delete_data_volume(self, volume: VolumeModel) -> None:
        """DeleteDataVolume, allowed: a NotInstantiated volume goes at once, a deleted one
        stays deleted, any other is detached and ``Deleted``."""
        if volume.status == "NotInstantiated":
            del self.volumes[volume.uuid]
        else:
            volume.status, volume.vm = "Deleted", None
