"""Test helpers for the node and for plugin authors, as an opt-in pytest plugin.

Enable it with ``-p zcore.testing`` (or ``pytest_plugins = ["zcore.testing"]`` in a
``conftest.py``). It gives: a fresh plugin manager built from chosen plugins, a migrated
database per test on every backend chosen with ``--db`` (``sqlite``, ``postgresql``,
``mariadb``, or ``all``), a flow runner that records which steps ran and which rolled back,
a started node, and a REST client that calls a served node's APIs by name
(:class:`~zcore.testing.api.ApiClient`, fixture ``api_client``).
"""

from zcore.testing.api import *
from zcore.testing.db import *
from zcore.testing.env import *
from zcore.testing.flows import *
from zcore.testing.node import *
