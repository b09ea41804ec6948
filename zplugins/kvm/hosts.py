"""``AddKVMHost``: a host whose KVM agent the node talks to over HTTP.

The agent listens on ``kvm.agent.port`` (global configuration, 7070 as ZStack's) of the
host's management IP. Deploying it through SSH with ``username``, ``password`` and
``sshPort`` (ansible) comes with the agent's own issue: until then the agent must already run
on the host, and the credentials are only stored (the password is never returned).
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
    """Add a KVM host: connect to its agent, read its CPUs, memory and operating system.

    The agent must already run (its deployment through SSH arrives with the agent's issue);
    the SSH credentials are stored for it and never returned.
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
