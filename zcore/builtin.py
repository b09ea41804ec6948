"""The core's own contributions, registered as the first plugin (``zcore``).

The core provides every chain in the distribution's ``flows/`` directory, and the APIs of
the core's own services (tags, global configuration, the version: :mod:`zcore.builtin_apis`;
the garbage collector: :mod:`zcore.gc_apis`) and the garbage collector's settings.
"""

from __future__ import annotations

from collections.abc import Iterator

from zcore.hookspecs import hookimpl
from zcore.paths import data_path
from zcore.records import ApiMessage, FlowChainFile, GlobalConfigOption, ResourceType


@hookimpl
def zcore_flow_chains() -> Iterator[FlowChainFile]:
    for path in sorted(data_path("flows").glob("*.yaml")):
        yield FlowChainFile(path)


@hookimpl
def zcore_resource_types() -> Iterator[ResourceType]:
    from zcore.builtin_apis import resource_types
    from zcore.gc_apis import resource_types as gc_resource_types

    yield from resource_types()
    yield from gc_resource_types()


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zcore.builtin_apis import api_messages
    from zcore.gc_apis import api_messages as gc_api_messages
    from zcore.progress_apis import api_messages as progress_api_messages

    yield from api_messages()
    yield from gc_api_messages()
    yield from progress_api_messages()


@hookimpl
def zcore_global_configs() -> Iterator[GlobalConfigOption]:
    from zcore.gc import global_configs
    from zcore.rest import global_configs as rest_global_configs

    yield from global_configs()
    yield from rest_global_configs()
