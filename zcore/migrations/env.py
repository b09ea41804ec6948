"""Alembic environment of the node's database: the core's revisions and every plugin branch.

Migrations run through :meth:`zcore.db.Database.upgrade` (node start-up, ``zstack-ctl
deploydb``), which builds the Alembic configuration in code and passes its open connection
in ``config.attributes["connection"]``. There is no ``alembic.ini``: running the ``alembic``
command against this directory stops with an explanation instead.
"""

from __future__ import annotations

from alembic import context

from zcore.db import Base

config = context.config

if context.is_offline_mode():
    raise RuntimeError(
        "zcore migrations do not support offline (--sql) mode: they run through "
        "zcore.db.Database.upgrade(), e.g. `zstack-ctl deploydb`, against a live database"
    )

connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "zcore migrations need an open connection in config.attributes['connection']; run "
        "them with `zstack-ctl deploydb` or zcore.db.create_database(url).upgrade(sources), "
        "not with the alembic command"
    )

on_version_apply = config.attributes.get("on_version_apply")
context.configure(
    connection=connection,
    # Only for its naming convention, so that constraints a migration leaves unnamed get
    # the same names as the models give them.
    target_metadata=Base.metadata,
    on_version_apply=on_version_apply,
)

with context.begin_transaction():
    context.run_migrations()
