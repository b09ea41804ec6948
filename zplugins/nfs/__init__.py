"""NFS: primary storage on an NFS export that every host of its clusters mounts.

``AddNfsPrimaryStorage`` (``url``: ``server:/export/path``) adds a primary storage of type
``NFS`` (driver :class:`zplugins.nfs.driver.NfsDriver` in ``zcore.primary_storage``), whose
hosts mount it at ``/opt/zstack/nfsprimarystorage/prim-<uuid>`` (its ``mountPath``).
Attached to a cluster, it is mounted on every connected host of the cluster
(``/nfsprimarystorage/mount``, which reports the export's capacity), and on each host that
joins or reconnects later; detached, it is unmounted. One zone holds at most one NFS primary
storage per url, as in ZStack.
"""

from __future__ import annotations

from collections.abc import Iterator

from zcore import ApiMessage, hookimpl

ZCORE_REQUIRES = ("storage",)


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zplugins.nfs.api import AddNfsPrimaryStorage

    yield ApiMessage(AddNfsPrimaryStorage)
