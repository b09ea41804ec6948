"""The node's static configuration: ``config/zstack.yaml`` overridden by ``ZSTACK_*`` variables.

Every key is declared here with its type and default; an unknown key, a wrong type or an
unknown ``ZSTACK_*`` variable is a :class:`~zcore.errors.ConfigError` whose message names the
file, the key, the value and the closest valid key. Run-time settings that an operator changes
through the API are not here: they are global configuration, declared by plugins
(:class:`zcore.records.GlobalConfigOption`).

Environment overrides are ``ZSTACK_<SECTION>_<KEY>`` in upper case (``ZSTACK_NODE_PORT=8081``,
``ZSTACK_DATABASE_URL=postgresql+psycopg://...``); lists are comma-separated. Besides them:
``ZSTACK_CONFIG`` names the configuration file and ``ZSTACK_DISABLE_PLUGINS`` adds plugins to
``plugins.disable``.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from zcore.errors import ConfigError
from zcore.paths import data_path

__all__ = [
    "BusSettings",
    "DatabaseSettings",
    "LogSettings",
    "NodeSettings",
    "PluginSettings",
    "Settings",
    "load_settings",
]

# Variables that are not settings of the file but are read elsewhere.
_OWN_VARIABLES = {"ZSTACK_CONFIG", "ZSTACK_DISABLE_PLUGINS"}
_FOREIGN_PREFIXES = ("ZSTACK_TEST_", "ZSTACK_CLI_")


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class NodeSettings(_Section):
    """Where the management node listens and keeps its files."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "~/.zstack"
    cpu: int | Literal["auto", "none"] = "auto"


class DatabaseSettings(_Section):
    """The database: SQLite in ``data_dir`` unless ``url`` names a server."""

    url: str | None = None
    threads: int | None = None
    echo: bool = False


class BusSettings(_Section):
    """The message bus: ``inproc://`` (one node) or ``amqp://user:pass@host/`` (many)."""

    url: str = "inproc://"
    default_timeout: float = 1800.0


class PluginSettings(_Section):
    """Which installed plugins run: ``enable`` is ``all`` or a list; ``disable`` wins."""

    enable: Literal["all"] | list[str] = "all"
    disable: list[str] = msgspec.field(default_factory=list)


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    """The whole configuration; ``source`` is the file it was read from."""

    node: NodeSettings = msgspec.field(default_factory=NodeSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    bus: BusSettings = msgspec.field(default_factory=BusSettings)
    plugins: PluginSettings = msgspec.field(default_factory=PluginSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    source: str | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.node.data_dir).expanduser()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'zstack.db'}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "management-server.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "management-server.log"

    @property
    def url(self) -> str:
        return f"http://{self.node.host}:{self.node.port}"


_SECTIONS: dict[str, type[_Section]] = {
    name: typing.get_type_hints(Settings)[name]
    for name in Settings.__struct_fields__
    if name != "source"
}


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(sorted(choices))}"


def _check_keys(data: Mapping[str, Any], where: str) -> None:
    for section, body in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section '{section}'"
                              + _suggest(str(section), list(_SECTIONS)))
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: section '{section}' must be a mapping of keys, "
                              f"not {body!r}")
        fields = list(_SECTIONS[section].__struct_fields__)
        for key in body:
            if key not in fields:
                raise ConfigError(f"{where}: unknown key '{section}.{key}'"
                                  + _suggest(str(key), fields))


def _accepts_list(hint: Any) -> bool:
    return typing.get_origin(hint) is list or any(
        typing.get_origin(arg) is list for arg in typing.get_args(hint))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    known: dict[str, tuple[str, str]] = {
        f"ZSTACK_{section}_{key}".upper(): (section, key)
        for section, cls in _SECTIONS.items()
        for key in cls.__struct_fields__
    }
    out: dict[str, dict[str, Any]] = {}
    for var, raw in environ.items():
        if not var.startswith("ZSTACK_") or var in _OWN_VARIABLES or var.startswith(
            _FOREIGN_PREFIXES
        ):
            continue
        if var not in known:
            raise ConfigError(f"environment: unknown variable {var}"
                              + _suggest(var, [*known, *_OWN_VARIABLES]))
        section, key = known[var]
        hint = typing.get_type_hints(_SECTIONS[section])[key]
        value: Any = raw
        if raw != "all" and _accepts_list(hint):
            value = [item.strip() for item in raw.split(",") if item.strip()]
        try:
            value = msgspec.convert(value, hint, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"environment: {var}={raw!r}: {exc}") from None
        out.setdefault(section, {})[key] = value
    return out


def default_config_file() -> Path:
    """The configuration shipped with the distribution (``config/zstack.yaml``)."""
    return data_path("config") / "zstack.yaml"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Read the configuration file, apply environment variables, then ``overrides``.

    ``path`` defaults to ``$ZSTACK_CONFIG``, then to the shipped ``config/zstack.yaml``.
    ``overrides`` (``{"node": {"port": 8081}}``) are what command-line options set; they win
    over the environment. Raises :class:`ConfigError` with a message for an operator.
    """
    environ = os.environ if environ is None else environ
    source = Path(path or environ.get("ZSTACK_CONFIG") or default_config_file())
    try:
        text = source.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {source}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of sections, not {type(data).__name__}")
    _check_keys(data, str(source))
    merged: dict[str, dict[str, Any]] = {k: dict(v or {}) for k, v in data.items()}
    for layer in (_env_overrides(environ), overrides or {}):
        _check_keys(layer, "override")
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    try:
        settings = msgspec.convert(merged, Settings)
    except msgspec.ValidationError as exc:
        where = str(exc).rsplit(" - at `$.", 1)
        detail = f"{where[1].rstrip('`')}: {where[0]}" if len(where) == 2 else str(exc)
        raise ConfigError(f"{source}: {detail}") from None
    disabled = [p.strip() for p in environ.get("ZSTACK_DISABLE_PLUGINS", "").split(",")
                if p.strip()]
    if disabled:
        settings.plugins.disable = [*settings.plugins.disable,
                                    *(p for p in disabled if p not in settings.plugins.disable)]
    if not 0 < settings.node.port < 65536:
        raise ConfigError(f"{source}: node.port: {settings.node.port} is not a TCP port (1-65535)")
    if settings.database.threads is not None and settings.database.threads < 1:
        raise ConfigError(f"{source}: database.threads: must be at least 1, "
                          f"not {settings.database.threads}")
    settings.source = str(source)
    return settings
