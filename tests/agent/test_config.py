"""The agent's configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest
from zkvmagent.config import DEFAULT_PORT, ConfigError, TestNode, load_config
from zkvmagent.main import main


def test_a_full_configuration(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("host: 127.0.0.1\nport: 7071\nlibvirt_uri: test:///x/node.xml\n"
                    "test_node: {cpus: 2, memory: 1073741824}\nroot: /tmp/r\n"
                    "state_dir: /state\nlog_file: null\npid_file: /tmp/r/pid\n")
    config = load_config(path)
    assert (config.host, config.port, config.libvirt_uri) == ("127.0.0.1", 7071,
                                                               "test:///x/node.xml")
    assert config.test_node == TestNode(cpus=2, memory=1024**3)
    assert config.state_path() == Path("/tmp/r/state")
    assert config.pid_file == "/tmp/r/pid" and config.log_file is None


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("")
    config = load_config(path)
    assert (config.port, config.libvirt_uri, config.root) == (DEFAULT_PORT, "qemu:///system",
                                                              "/")


@pytest.mark.parametrize("text, message", [
    ("prot: 7070\n", "unknown key(s) prot"),
    ("port: seventy\n", "port must be an integer, not 'seventy'"),
    ("port: 70000\n", "port 70000 is not a TCP port"),
    ("test_node: {cpu: 2}\n", "unknown key(s) test_node.cpu"),
    ("- a\n- b\n", "must hold a YAML mapping"),
])
def test_a_wrong_key_or_value_is_refused_naming_it(tmp_path: Path, text: str,
                                                    message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_the_program_refuses_a_bad_configuration(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("prot: 7070\n")
    assert main(["--config", str(path)]) == 2
    assert "unknown key(s) prot" in capsys.readouterr().err
