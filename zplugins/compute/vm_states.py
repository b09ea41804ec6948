"""ZStack's VM state machine: the states of a VM and the operations each state allows.

A VM is ``Created`` while ``vm-create`` runs, then ``Running`` (or ``Stopped`` with the
``CreateStopped`` strategy). Operations move it through transient states (``Starting``,
``Stopping``, ``Rebooting``, ``Migrating``, ``Pausing``, ``Resuming``, ``Destroying``,
``Expunging``) to stable ones (``Running``, ``Stopped``, ``Paused``, ``Destroyed``).
``Unknown`` is a VM whose host cannot say (disconnected). Every operation names the states
it may start from; :func:`check` refuses any other with ``VM.1000`` naming the current state.
"""

from __future__ import annotations

from collections.abc import Mapping

from zcore.errors import ZError

__all__ = [
    "ALLOWED",
    "HOLDS_HOST",
    "STATES",
    "VM_STATE_ERROR",
    "check",
]

#: The error code of an operation refused in the VM's current state.
VM_STATE_ERROR = "VM.1000"

STATES = ("Created", "Starting", "Running", "Stopping", "Stopped", "Rebooting", "Migrating",
          "Pausing", "Paused", "Resuming", "Destroying", "Destroyed", "Expunging", "Unknown")

#: States in which a VM holds its host's CPU and memory (``hostUuid`` is set).
HOLDS_HOST = frozenset({"Created", "Starting", "Running", "Stopping", "Rebooting",
                        "Migrating", "Pausing", "Paused", "Resuming", "Unknown"})

_LIVE = ("Running", "Stopped", "Paused", "Unknown")

#: The states each operation may start from, by API name.
ALLOWED: Mapping[str, tuple[str, ...]] = {
    "StartVmInstance": ("Stopped",),
    "StopVmInstance": ("Running", "Paused", "Unknown", "Stopped"),
    "RebootVmInstance": ("Running",),
    "PauseVmInstance": ("Running",),
    "ResumeVmInstance": ("Paused",),
    "DestroyVmInstance": ("Running", "Stopped", "Paused", "Unknown", "Destroyed"),
    "RecoverVmInstance": ("Destroyed",),
    "ExpungeVmInstance": ("Destroyed",),
    "MigrateVm": ("Running",),
    "GetVmMigrationCandidateHosts": ("Running",),
    "ChangeInstanceOffering": ("Stopped",),
    "UpdateVmInstance": (*_LIVE, "Created"),
    "AttachL3NetworkToVm": ("Running", "Stopped"),
    "DetachL3NetworkFromVm": ("Running", "Stopped"),
    "SetVmStaticIp": ("Running", "Stopped"),
    "GetVmConsoleAddress": ("Running", "Paused"),
    "AttachDataVolumeToVm": ("Running", "Stopped", "Paused"),
    "DetachDataVolumeFromVm": ("Running", "Stopped", "Paused"),
    "CreateVolumeSnapshot": ("Running", "Stopped", "Paused"),
    "RevertVolumeFromSnapshot": ("Stopped",),
    "CreateRootVolumeTemplateFromRootVolume": ("Stopped",),
}


def check(operation: str, state: str, vm_uuid: str) -> None:
    """Raise ``VM.1000`` unless ``operation`` may run on a VM in ``state``."""
    allowed = ALLOWED.get(operation)
    if allowed is None:
        raise KeyError(f"no VM state rule for operation {operation!r}")
    if state not in allowed:
        raise ZError(VM_STATE_ERROR, "operation not allowed in the VM's current state",
                     f"VM {vm_uuid} is {state}; {operation} needs it "
                     f"{' or '.join(allowed)}")
