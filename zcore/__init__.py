"""zcore: the minimal core of the platform; the only package a plugin imports from."""

from zcore.errors import ConfigError, StartupError, ZError
from zcore.hookspecs import hookimpl, hookspec
from zcore.records import (
    ApiMessage,
    CascadeEdge,
    DriverNamespace,
    FlowChainFile,
    FlowInsertion,
    FlowStep,
    GcJobKind,
    GlobalConfigOption,
    InventoryExtension,
    Migrations,
    QueryExpansion,
    ResourceType,
    SystemTagPattern,
    WebRoute,
)

__version__ = "0.1.0"

__all__ = [
    "ApiMessage",
    "CascadeEdge",
    "ConfigError",
    "DriverNamespace",
    "FlowChainFile",
    "FlowInsertion",
    "FlowStep",
    "GcJobKind",
    "GlobalConfigOption",
    "InventoryExtension",
    "Migrations",
    "QueryExpansion",
    "ResourceType",
    "StartupError",
    "SystemTagPattern",
    "WebRoute",
    "ZError",
    "__version__",
    "hookimpl",
    "hookspec",
]
