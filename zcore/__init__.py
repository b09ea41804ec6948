"""zcore: the minimal core of the platform; the only package a plugin imports from."""

from zcore.errors import ConfigError, StartupError, ZError
from zcore.hookspecs import hookimpl, hookspec
from zcore.records import (
    CascadeEdge,
    DriverNamespace,
    FlowChainFile,
    FlowInsertion,
    FlowStep,
    GlobalConfigOption,
    Migrations,
    ResourceType,
    SystemTagPattern,
    WebRoute,
)

__version__ = "0.1.0"

__all__ = [
    "CascadeEdge",
    "ConfigError",
    "DriverNamespace",
    "FlowChainFile",
    "FlowInsertion",
    "FlowStep",
    "GlobalConfigOption",
    "Migrations",
    "ResourceType",
    "StartupError",
    "SystemTagPattern",
    "WebRoute",
    "ZError",
    "__version__",
    "hookimpl",
    "hookspec",
]
