"""``AddKVMHost``: a host whose KVM agent the node talks to over HTTP.

The agent listens on ``kvm.agent.port`` (global configuration, 7070 as ZStack's) of the
host's management IP. The node deploys it through SSH with ``username``, ``password`` and
``sshPort`` (Ansible, :mod:`zplugins.kvm.deploy`); the password is stored for later
reconnections and never returned. ``GetTaskProgress`` with the call's job uuid shows the
deployment task by task.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.orm import Session

from zcore import ApiMessage
from zcore.api import Param
from zplugins.compute.public import AddHostMessage
from zplugins.kvm.models import KVMHostVO

__all__ = ["AddKVMHost"]


class AddKVMHost(AddHostMessage, path="/hosts/kvm"):
    """Add a KVM host: deploy its agent, connect to it, read its CPUs, memory and OS.

    The SSH credentials are stored for the deployment and never returned.
    """

    hypervisor_type = "KVM"

    username = Param(str, required=True, max_length=255, non_empty=True,
                     description="The SSH user that deploys the agent")
    password = Param(str, required=True, max_length=255,
                     description="The SSH password; stored, never returned")
    sshPort = Param(int, default=22, number_range=(1, 65535), api_type="int")

    def persist_details(self, session: Session, host_uuid: str) -> None:
        session.add(KVMHostVO(uuid=host_uuid, username=self.username, password=self.password,
                              sshPort=self.sshPort))


def api_messages() -> Iterator[ApiMessage]:
    yield ApiMessage(AddKVMHost)
