"""The agent's configuration: a YAML file (``zstack-kvmagent --config PATH``).

::

    host: 0.0.0.0                 # address to listen on
    port: 7070
    libvirt_uri: qemu:///system   # test:///<dir>/node.xml for libvirt's test driver
    test_node: {cpus: 8, memory: 17179869184}  # the fake host written to a missing node.xml
    root: /                       # every file and bridge operation happens under this root
    state_dir: /var/lib/zstack/kvmagent        # under root: the state file
    log_file: null                # stderr when null
    pid_file: null

Every key is optional; an unknown key is an error (a misspelt key silently ignored would run
the agent against the real system).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_PORT", "AgentConfig", "ConfigError", "TestNode", "load_config"]

DEFAULT_PORT = 7070


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or holds a wrong key or value."""


@dataclass(frozen=True, slots=True)
class TestNode:
    """The fake host of libvirt's test driver: CPUs and memory (bytes)."""

    __test__ = False  # not a pytest test class

    cpus: int = 8
    memory: int = 16 * 1024**3
    sockets: int = 1
    mhz: int = 2600


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What the agent runs with; see the module docstring for the keys."""

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    libvirt_uri: str = "qemu:///system"
    test_node: TestNode = field(default_factory=TestNode)
    root: str = "/"
    state_dir: str = "/var/lib/zstack/kvmagent"
    log_file: str | None = None
    pid_file: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any], *, source: str = "configuration") -> AgentConfig:
        """The configuration in ``data`` (a parsed YAML mapping); ``ConfigError`` naming the
        key when one is unknown or of the wrong type."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; the keys are "
                              f"{', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for key in ("host", "libvirt_uri", "root", "state_dir"):
            if key in data:
                values[key] = _typed(source, key, data[key], str)
        for key in ("log_file", "pid_file"):
            if data.get(key) is not None:
                values[key] = _typed(source, key, data[key], str)
        if "port" in data:
            port = _typed(source, "port", data["port"], int)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{source}: port {port} is not a TCP port (0 to 65535)")
            values["port"] = port
        if data.get("test_node") is not None:
            node = data["test_node"]
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: test_node must be a mapping "
                                  "({cpus: 8, memory: <bytes>}), not {node!r}")
            node_keys = {f.name for f in fields(TestNode)}
            bad = sorted(set(node) - node_keys)
            if bad:
                raise ConfigError(f"{source}: unknown key(s) test_node.{', test_node.'.join(bad)}"
                                  f"; the keys are {', '.join(sorted(node_keys))}")
            values["test_node"] = TestNode(**{
                k: _typed(source, f"test_node.{k}", v, int) for k, v in node.items()})
        return cls(**values)

    def state_path(self) -> Path:
        """The directory of the state file, under ``root``."""
        return Path(self.root) / self.state_dir.lstrip("/")


def _typed(source: str, key: str, value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if kind is int else "a string"
        raise ConfigError(f"{source}: {key} must be {what}, not {value!r}")
    return value


def load_config(path: str | Path) -> AgentConfig:
    """Read the configuration file at ``path``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of keys, not {type(data).__name__}")
    return AgentConfig.of(data, source=str(path))
