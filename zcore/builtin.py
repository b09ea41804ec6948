"""The core's own contributions, registered as the first plugin (``zcore``).

The core provides every chain in the distribution's ``flows/`` directory, and the APIs of
the core's own services (tags, global configuration, the version: :mod:`zcore.builtin_apis`).
"""

from __future__ import annotations

from collections.abc import Iterator

from zcore.hookspecs import hookimpl
from zcore.paths import data_path
from zcore.records import ApiMessage, FlowChainFile, ResourceType


@hookimpl
def zcore_flow_chains() -> Iterator[FlowChainFile]:
    for path in sorted(data_path("flows").glob("*.yaml")):
        yield FlowChainFile(path)


@hookimpl
def zcore_resource_types() -> Iterator[ResourceType]:
    from zcore.builtin_apis import resource_types

    yield from resource_types()


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zcore.builtin_apis import api_messages

    yield from api_messages()
