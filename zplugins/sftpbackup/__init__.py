"""Sftp backup storage: images kept as files in a directory on a host.

The ``SftpBackupStorage`` driver (:mod:`zplugins.sftpbackup.driver`, in the namespace
``zcore.backup_storage``) and the APIs ``AddSftpBackupStorage`` and
``UpdateSftpBackupStorage``. The host, SSH port and account are kept in
``SftpBackupStorageVO`` (migration branch ``sftpbackup``). In this release the directory must
be on the management node's machine; the agent that reaches other hosts comes later.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zcore import ApiMessage, Migrations, hookimpl

ZCORE_REQUIRES = ("storage",)

_HERE = Path(__file__).resolve().parent


@hookimpl
def zcore_db_migrations() -> Iterator[Migrations]:
    yield Migrations("sftpbackup", _HERE / "migrations")


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zplugins.sftpbackup.api import APIS

    for message in APIS:
        yield ApiMessage(message)
