"""The KVM agent of zstack-py: an aiohttp server on a KVM host that drives libvirt.

The management node posts ZStack's KVM agent commands to it (``/host/connect``,
``/vm/start``, ``/localstorage/init``, ...; their schema is :mod:`zkvmagent.commands`, shared
with the node); the agent defines and runs libvirt domains, creates bridges and volume files,
and reports the VM state changes libvirt tells it about. ``zstack-kvmagent --config PATH``
runs it (:mod:`zkvmagent.main`).
"""

from __future__ import annotations

__all__ = ["__version__"]

#: The agent's version: the node skips deploying an agent that already runs it.
__version__ = "0.1.0"
