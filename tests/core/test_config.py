"""Configuration: the shipped file, environment overrides, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from zcore.config import load_settings
from zcore.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zstack.yaml"
    path.write_text(text)
    return path


def test_shipped_configuration_gives_the_embedded_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.node.port == 8080
    assert settings.node.host == "127.0.0.1"
    assert settings.bus.url == "inproc://"
    assert settings.plugins.enable == "all"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("/zstack.db")


def test_environment_overrides_are_typed() -> None:
    settings = load_settings(environ={
        "ZSTACK_NODE_PORT": "9090",
        "ZSTACK_DATABASE_ECHO": "true",
        "ZSTACK_DATABASE_URL": "postgresql+psycopg://u@h/db",
        "ZSTACK_PLUGINS_ENABLE": "mgmtnode, metrics",
    })
    assert settings.node.port == 9090
    assert settings.database.echo is True
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.plugins.enable == ["mgmtnode", "metrics"]


def test_command_line_overrides_win_over_environment() -> None:
    settings = load_settings(environ={"ZSTACK_NODE_PORT": "9090"},
                             overrides={"node": {"port": 9191}})
    assert settings.node.port == 9191


def test_disable_plugins_variable_adds_to_the_disabled_list(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins:\n  disable: [a]\n")
    settings = load_settings(path, environ={"ZSTACK_DISABLE_PLUGINS": "b, a,c"})
    assert settings.plugins.disable == ["a", "b", "c"]


def test_config_file_chosen_by_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 7000\n")
    assert load_settings(environ={"ZSTACK_CONFIG": str(path)}).node.port == 7000


@pytest.mark.parametrize(("text", "message"), [
    ("node:\n  prot: 1\n", "unknown key 'node.prot'; did you mean 'port'?"),
    ("nod:\n  port: 1\n", "unknown section 'nod'; did you mean 'node'?"),
    ("node:\n  port: eighty\n", "node.port: Expected `int`, got `str`"),
    ("node:\n  port: 70000\n", "node.port: 70000 is not a TCP port"),
    ("node: [1, 2]\n", "section 'node' must be a mapping"),
    ("- just\n- a list\n", "must be a mapping of sections"),
    ("node:\n  port: [\n", "not valid YAML"),
    ("database:\n  threads: 0\n", "database.threads: must be at least 1"),
    ("log:\n  level: LOUD\n", "log.level"),
])
def test_bad_file_is_a_clear_error_naming_file_and_key(tmp_path: Path, text: str,
                                                        message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(("environ", "message"), [
    ({"ZSTACK_NODE_PROT": "1"},
     "unknown variable ZSTACK_NODE_PROT; did you mean 'ZSTACK_NODE_PORT'?"),
    ({"ZSTACK_NODE_PORT": "x"}, "ZSTACK_NODE_PORT='x': Expected `int`"),
    ({"ZSTACK_DATABASE_ECHO": "maybe"}, "ZSTACK_DATABASE_ECHO='maybe'"),
])
def test_bad_environment_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert message in str(caught.value)


def test_test_variables_are_not_settings() -> None:
    load_settings(environ={"ZSTACK_TEST_POSTGRESQL_URL": "postgresql://x"})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file .*nope.yaml"):
        load_settings(tmp_path / "nope.yaml", environ={})
