"""``AddNfsPrimaryStorage``."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from zcore.api import ApiContext, Param
from zcore.errors import INVALID_ARGUMENT, ZError
from zcore.query import Condition, Query
from zplugins.nfs.driver import NfsDriver
from zplugins.storage.public import AddPrimaryStorageMessage

__all__ = ["AddNfsPrimaryStorage"]

#: ``server:/path``: a host name or IPv4 address, a colon, an absolute path.
URL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?:/\S*$")


class AddNfsPrimaryStorage(AddPrimaryStorageMessage, method="POST",
                           path="/primary-storage/nfs"):
    """Add NFS primary storage: ``url`` is the export, ``server:/path``."""

    storage_type = NfsDriver.type

    type = Param(str, default=NfsDriver.type,
                 description="The storage type; if given, it must be NFS")

    def check_url(self, ctx: ApiContext) -> None:
        if not URL.match(self.url.strip()):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'url' of {self.api_name}: {self.url!r} is not an NFS "
                         "export: write server:/path, e.g. 192.168.0.10:/exports/zstack")

    async def validate(self, ctx: ApiContext) -> None:
        await super().validate(ctx)
        url = self.url.strip()

        def same_url(session: Session) -> list[str]:
            # Through the query engine: the storage plugin's models are its own.
            found = ctx.node.query.run(session, Query("PrimaryStorageVO", (
                Condition("type", "=", NfsDriver.type), Condition("url", "=", url),
                Condition("zoneUuid", "=", self.zoneUuid))))
            return [row.uuid for row in found.rows]

        taken = await ctx.run(same_url)
        if taken:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'url' of {self.api_name}: zone {self.zoneUuid} already has "
                         f"NFS primary storage {taken[0]} on {url}")
