"""Local storage: primary storage on a directory of each host's own disk.

``AddLocalPrimaryStorage`` (``url``: an absolute directory path on the hosts) adds a
primary storage of type ``LocalStorage`` (driver
:class:`zplugins.localstorage.driver.LocalStorageDriver` in ``zcore.primary_storage``).
Attached to a cluster, it is initialised on every connected host of the cluster (the agent
command ``/localstorage/init`` creates the directory and reports the disk's capacity), and on
each host that joins or reconnects later; its capacity is the sum over its hosts.
"""

from __future__ import annotations

from collections.abc import Iterator

from zcore import ApiMessage, hookimpl

ZCORE_REQUIRES = ("storage",)


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zplugins.localstorage.api import AddLocalPrimaryStorage

    yield ApiMessage(AddLocalPrimaryStorage)
