"""Deploying the KVM agent to a host: ``agents/kvm/ansible/deploy.yaml`` through ansible-runner.

When a KVM host is added or reconnected, :func:`ensure_agent` asks its agent for its version
(``/host/version``). An agent that answers with the node's own version
(``zkvmagent.__version__``) is left alone; otherwise the playbook runs: it copies the agent's
source (``agents/kvm`` packed as an sdist, :func:`agent_archive`) to the host, installs it with
pip into a virtual environment made by the host's ``python3 -m venv``, writes its YAML
configuration, (re)starts it (a systemd unit, or a daemon with a pid file where systemd does
not run) and waits until it answers with the expected version. The virtual environment does
not see the system's packages: the host's interpreter may not be the node's, and pip's wheel
cache already spares a second build of libvirt-python on the same machine.

ansible-runner is blocking: it runs in a worker thread, and its events come back to the event
loop. Every task is logged (started, ok, changed, failed) and recorded as a step of the API
job that connects the host (:mod:`zcore.progress`, ``GetTaskProgress``). A failed task fails
the connection with ``HOST.1000`` naming the task and its output.

Global configuration (category ``kvm``; string values may hold ``{hostUuid}`` and
``{managementIp}``, replaced per host, which is how several fake hosts on one machine each get
their own libvirt connection and root):

* ``agent.deploy`` (true): deploy the agent; false expects it to run already.
* ``agent.connection`` (``ssh``): how Ansible reaches the host: ``ssh`` with the host's
  ``username``, ``password`` and ``sshPort`` (a password needs ``sshpass`` on the node; a
  user other than root becomes root with ``sudo`` and the same password), or ``local``: the
  host is the node's own machine.
* ``agent.libvirtUri`` (``qemu:///system``), ``agent.root`` (``/``),
  ``agent.stateDir`` (``/var/lib/zstack/kvmagent``), ``agent.installDir``
  (``/var/lib/zstack/virtualenv/kvmagent``), ``agent.python`` (``python3``),
  ``agent.listenAddress`` (``0.0.0.0``), ``agent.serviceManager`` (``auto``, ``systemd`` or
  ``daemon``): what the playbook installs and writes (see its header).
* ``agent.deployTimeout`` (600): seconds the playbook may run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tarfile
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zkvmagent

from zcore.errors import ZError
from zcore.progress import current_job, progresses
from zcore.records import GlobalConfigOption
from zplugins.compute.public import HOST_CONNECT_FAILED
from zplugins.kvm.models import KVMHostVO

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from zcore.node import Node
    from zplugins.compute.public import HostInfo

log = logging.getLogger(__name__)

__all__ = ["PLAYBOOK", "agent_archive", "agent_source", "deploy_agent", "global_configs",
           "host_settings"]

CATEGORY = "kvm"
DEPLOY = "agent.deploy"
CONNECTION = "agent.connection"
LIBVIRT_URI = "agent.libvirtUri"
ROOT = "agent.root"
STATE_DIR = "agent.stateDir"
INSTALL_DIR = "agent.installDir"
PYTHON = "agent.python"
LISTEN_ADDRESS = "agent.listenAddress"
SERVICE_MANAGER = "agent.serviceManager"
DEPLOY_TIMEOUT = "agent.deployTimeout"

#: The playbook, relative to the agent's source directory.
PLAYBOOK = Path("ansible") / "deploy.yaml"

#: Characters of a failed task's output kept in the error.
_OUTPUT_LIMIT = 2000


def global_configs() -> list[GlobalConfigOption]:
    per_host = " ({hostUuid} and {managementIp} are replaced per host)"
    return [
        GlobalConfigOption(CATEGORY, DEPLOY, bool, True,
                           "Deploy the KVM agent with Ansible when a host is added or "
                           "reconnected and its agent does not run the node's version"),
        GlobalConfigOption(CATEGORY, CONNECTION, str, "ssh",
                           "How Ansible reaches a KVM host: ssh, or local (the node's own "
                           "machine)", choices=("ssh", "local")),
        GlobalConfigOption(CATEGORY, LIBVIRT_URI, str, "qemu:///system",
                           "The libvirt connection URI of the KVM agent" + per_host),
        GlobalConfigOption(CATEGORY, ROOT, str, "/",
                           "The directory under which the KVM agent does every file and "
                           "bridge operation" + per_host),
        GlobalConfigOption(CATEGORY, STATE_DIR, str, "/var/lib/zstack/kvmagent",
                           "The KVM agent's state directory, under its root" + per_host),
        GlobalConfigOption(CATEGORY, INSTALL_DIR, str, "/var/lib/zstack/virtualenv/kvmagent",
                           "Where the KVM agent's virtual environment is installed on a host"
                           + per_host),
        GlobalConfigOption(CATEGORY, PYTHON, str, "python3",
                           "The Python interpreter (3.11 or later) that creates the KVM "
                           "agent's virtual environment on a host"),
        GlobalConfigOption(CATEGORY, LISTEN_ADDRESS, str, "0.0.0.0",
                           "The address the KVM agent listens on" + per_host),
        GlobalConfigOption(CATEGORY, SERVICE_MANAGER, str, "auto",
                           "How the KVM agent runs: systemd, daemon (a pid file), or auto "
                           "(systemd where it runs)", choices=("auto", "systemd", "daemon")),
        GlobalConfigOption(CATEGORY, DEPLOY_TIMEOUT, int, 600,
                           "Seconds the deployment of a KVM agent may take", min=10),
    ]


def agent_source() -> Path:
    """The agent's source directory (``agents/kvm``): its ``pyproject.toml`` and playbook."""
    source = Path(zkvmagent.__file__).resolve().parent.parent
    if not (source / "pyproject.toml").is_file() or not (source / PLAYBOOK).is_file():
        raise ZError(HOST_CONNECT_FAILED, "cannot deploy the KVM agent",
                     f"the agent's source is not beside its package: {source} has no "
                     f"pyproject.toml or {PLAYBOOK}; run the node from a checkout (or an "
                     "install) that ships agents/kvm, or set kvm.agent.deploy to false and "
                     "install the agent on each host yourself")
    return source


def agent_archive(source: Path, directory: Path) -> Path:
    """Pack the agent's source (``pyproject.toml``, ``README.md``, ``zkvmagent``) as an sdist."""
    name = f"zstack-kvmagent-{zkvmagent.__version__}"
    archive = directory / f"{name}.tar.gz"

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if "__pycache__" in info.name or info.name.endswith(".pyc") else info

    with tarfile.open(archive, "w:gz") as tar:
        for part in ("pyproject.toml", "README.md", "zkvmagent"):
            if (source / part).exists():
                tar.add(source / part, arcname=f"{name}/{part}", filter=keep)
    return archive


def host_settings(node: Node, host: HostInfo) -> dict[str, Any]:
    """The playbook's variables for ``host``, from the global configuration."""
    def value(name: str) -> str:
        text = str(node.global_config.get(CATEGORY, name))
        return text.replace("{hostUuid}", host.uuid).replace("{managementIp}",
                                                              host.managementIp)

    from zplugins.kvm.hypervisor import AGENT_PORT

    address = host.managementIp
    return {
        "agent_version": zkvmagent.__version__,
        "agent_address": f"[{address}]" if ":" in address else address,
        "agent_listen": value(LISTEN_ADDRESS),
        "agent_port": int(node.global_config.get(CATEGORY, AGENT_PORT)),
        "libvirt_uri": value(LIBVIRT_URI),
        "agent_root": value(ROOT),
        "state_dir": value(STATE_DIR),
        "install_dir": value(INSTALL_DIR),
        "python": value(PYTHON),
        "service_manager": value(SERVICE_MANAGER),
        "service_name": "zstack-kvmagent",
    }


@dataclass(frozen=True, slots=True)
class _Credentials:
    username: str
    password: str
    sshPort: int


def _credentials(session: Session, uuid: str) -> _Credentials:
    row = session.get(KVMHostVO, uuid)
    if row is None:
        raise ZError(HOST_CONNECT_FAILED, "cannot deploy the KVM agent",
                     f"KVM host {uuid} has no SSH credentials (no KVMHostVO row)")
    return _Credentials(row.username, row.password, row.sshPort)


def _inventory(host: HostInfo, connection: str, creds: _Credentials) -> dict[str, Any]:
    if connection == "local":
        variables: dict[str, Any] = {"ansible_connection": "local",
                                     "ansible_python_interpreter": sys.executable}
    else:
        variables = {"ansible_connection": "ssh", "ansible_host": host.managementIp,
                     "ansible_port": creds.sshPort, "ansible_user": creds.username,
                     "ansible_password": creds.password,
                     "ansible_python_interpreter": "auto_silent"}
        if creds.username != "root":
            variables |= {"ansible_become": True, "ansible_become_password": creds.password}
    return {"all": {"hosts": {host.managementIp: variables}}}


def _output(result: Mapping[str, Any]) -> str:
    """What a failed task said: its message and its standard error (or output)."""
    parts = []
    for key in ("msg", "stderr", "stdout"):
        text = result.get(key)
        if text and (key != "stdout" or not result.get("stderr")):
            parts.append(str(text).strip())
    for item in result.get("results") or ():  # a loop: what its first failed item said
        if isinstance(item, Mapping) and item.get("failed"):
            parts.append(f"item {item.get('item')!r}: {_output(item)}")
            break
    text = "; ".join(p for p in parts if p) or "it gave no output"
    return text if len(text) <= _OUTPUT_LIMIT else text[:_OUTPUT_LIMIT] + " ..."


@dataclass
class _Run:
    """What one run of the playbook reported, gathered on the event loop."""

    node: Node
    host: HostInfo
    job: str | None
    failed: tuple[str, str] | None = None
    tasks: list[str] = field(default_factory=list)

    def step(self, task: str, content: str) -> None:
        if self.job is not None:
            progresses(self.node).add(self.job, f"deploy KVM agent: {task}", content,
                                      opaque={"hostUuid": self.host.uuid})

    def event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        task = str(data.get("task") or "")
        if kind == "playbook_on_task_start":
            self.tasks.append(task)
            log.info("%s: deploying the KVM agent: %s ...", self.host, task)
            self.step(task, "started")
        elif kind == "runner_on_ok":
            outcome = "changed" if (data.get("res") or {}).get("changed") else "ok"
            log.info("%s: deploying the KVM agent: %s: %s", self.host, task, outcome)
            self.step(task, outcome)
        elif kind == "runner_on_skipped":
            log.debug("%s: deploying the KVM agent: %s: skipped", self.host, task)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                return
            output = _output(data.get("res") or {})
            what = "failed" if kind == "runner_on_failed" else "host unreachable"
            log.error("%s: deploying the KVM agent: %s: %s: %s", self.host, task, what, output)
            self.step(task, f"{what}: {output}")
            self.failed = (task, output)


async def deploy_agent(node: Node, host: HostInfo) -> None:
    """Run the playbook for ``host`` in a worker thread; ``HOST.1000`` if it fails."""
    source = agent_source()
    try:
        import ansible_runner  # noqa: F401 - checked here, used in the worker thread
    except ImportError:
        raise ZError(HOST_CONNECT_FAILED, "cannot deploy the KVM agent",
                     f"deploying the KVM agent to {host} needs ansible-runner and "
                     "ansible-core on the management node (pip install ansible-runner "
                     "ansible-core), or set kvm.agent.deploy to false and install the agent "
                     "on each host yourself") from None
    creds = await node.db.run(_credentials, host.uuid)
    connection = str(node.global_config.get(CATEGORY, CONNECTION))
    timeout = int(node.global_config.get(CATEGORY, DEPLOY_TIMEOUT))
    settings = host_settings(node, host)
    inventory = _inventory(host, connection, creds)
    run = _Run(node, host, current_job.get())
    loop = asyncio.get_running_loop()
    cancelled = threading.Event()

    def on_event(event: dict[str, Any]) -> bool:
        loop.call_soon_threadsafe(run.event, event)
        return False  # nothing reads the artifacts afterwards

    def play() -> tuple[str, int, str]:
        import ansible_runner

        # ansible-runner starts ansible-playbook from PATH: the node's own bin folder first.
        bin_dir = os.path.dirname(sys.executable)
        envvars = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1",
                   "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_PIPELINING": "True"}
        with tempfile.TemporaryDirectory(prefix="zstack-kvm-deploy-") as private:
            extravars = {"agent_archive": str(agent_archive(source, Path(private))),
                         **settings}
            runner = ansible_runner.run(
                private_data_dir=private, project_dir=str(source / PLAYBOOK.parent),
                playbook=PLAYBOOK.name, inventory=inventory, extravars=extravars,
                envvars=envvars, event_handler=on_event, quiet=True, timeout=timeout,
                cancel_callback=cancelled.is_set)
            try:
                stdout = runner.stdout.read() if runner.stdout else ""
            except OSError:
                stdout = ""
            return str(runner.status), int(runner.rc or 0), stdout

    log.info("%s: deploying the KVM agent %s (%s connection)", host, zkvmagent.__version__,
             connection)
    run.step("deploy", f"deploying the KVM agent {zkvmagent.__version__}")
    try:
        status, rc, stdout = await asyncio.to_thread(play)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    await asyncio.sleep(0)  # the events the thread scheduled last
    if status == "successful" and rc == 0:
        log.info("%s: the KVM agent %s is deployed", host, zkvmagent.__version__)
        run.step("deploy", "done")
        return
    if run.failed is not None:
        task, output = run.failed
        why = f"task '{task}' failed: {output}"
    elif status == "timeout":
        why = (f"the playbook did not finish within {timeout} s (global configuration "
               f"{CATEGORY}.{DEPLOY_TIMEOUT})")
    else:
        tail = stdout.strip()[-_OUTPUT_LIMIT:] or "no output"
        why = f"ansible-playbook ended {status} with exit code {rc}: {tail}"
    raise ZError(HOST_CONNECT_FAILED, "cannot deploy the KVM agent",
                 f"deploying the KVM agent to {host} failed: {why}")
