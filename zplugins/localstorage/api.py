"""``AddLocalPrimaryStorage``."""

from __future__ import annotations

import posixpath

from zcore.api import ApiContext
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.localstorage.driver import LocalStorageDriver
from zplugins.storage.public import AddPrimaryStorageMessage

__all__ = ["AddLocalPrimaryStorage"]


class AddLocalPrimaryStorage(AddPrimaryStorageMessage, method="POST",
                             path="/primary-storage/local-storage"):
    """Add local storage: ``url`` is an absolute directory on every host (``/zstack_ps``)."""

    storage_type = LocalStorageDriver.type

    def check_url(self, ctx: ApiContext) -> None:
        url = self.url.strip()
        if not url.startswith("/") or posixpath.normpath(url) in ("/", "//"):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'url' of {self.api_name}: {self.url!r} is not an absolute "
                         "directory path on the hosts other than '/', e.g. /zstack_ps")
