"""The core's own contributions, registered as the first plugin (``zcore``).

The core provides every chain in the distribution's ``flows/`` directory.
"""

from __future__ import annotations

from collections.abc import Iterator

from zcore.hookspecs import hookimpl
from zcore.paths import data_path
from zcore.records import FlowChainFile


@hookimpl
def zcore_flow_chains() -> Iterator[FlowChainFile]:
    for path in sorted(data_path("flows").glob("*.yaml")):
        yield FlowChainFile(path)
