"""KVM: the ``KVM`` hypervisor, driven through an agent on each host that talks to libvirt.

The plugin provides the driver (``zplugins.kvm.hypervisor.KvmHypervisor`` in the
``zcore.hypervisors`` namespace), which speaks ZStack's KVM agent protocol (JSON over HTTP to
``kvm.agent.port`` of each host), the API ``AddKVMHost`` and the table ``KVMHostVO`` (SSH
credentials and operating system of each KVM host). KVM hosts answer with ZStack's
``KVMHostInventory``: HostInventory plus ``username``, ``sshPort``, ``osDistribution``,
``osRelease`` and ``osVersion`` (never the password). Adding or reconnecting a host deploys
its agent (``agents/kvm``) with Ansible when it does not already run the node's version
(:mod:`zplugins.kvm.deploy`); agents post the replies of long commands and their events to
the routes of :mod:`zplugins.kvm.callbacks`.

Global configuration: ``kvm.agent.port`` (the port every KVM agent listens on, 7070) and the
deployment's settings (``kvm.agent.deploy``, ``kvm.agent.connection``,
``kvm.agent.libvirtUri``, ... see :mod:`zplugins.kvm.deploy`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zcore import ApiMessage, GlobalConfigOption, Migrations, WebRoute, hookimpl

ZCORE_REQUIRES = ("compute",)


@hookimpl
def zcore_db_migrations() -> Iterator[Migrations]:
    yield Migrations("kvm", Path(__file__).resolve().parent / "migrations")


@hookimpl
def zcore_global_configs() -> Iterator[GlobalConfigOption]:
    from zplugins.kvm.hypervisor import AGENT_PORT, CATEGORY

    yield GlobalConfigOption(CATEGORY, AGENT_PORT, int, 7070,
                             "The TCP port the KVM agent of every KVM host listens on",
                             min=1, max=65535)
    from zplugins.kvm.deploy import global_configs

    yield from global_configs()


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zplugins.kvm.hosts import api_messages

    yield from api_messages()


@hookimpl
def zcore_web_routes() -> Iterator[WebRoute]:
    from zplugins.kvm.callbacks import web_routes

    yield from web_routes()
