"""The environment builder: a whole cloud from a declarative description, through the API.

A description (YAML or a dict) names every resource; the builder checks it all first, then
creates it through the public API in dependency order, refers to resources by name, and
returns their uuids by kind and name::

    zones:
      - name: zone1
        clusters:
          - name: cluster1
            hypervisorType: Simulator
            hosts:
              - {name: host1, managementIp: 10.0.0.1, cpuCapacity: 32, memoryCapacity: 64G}
            primaryStorage: [ps1]          # attached by name
            l2Networks: [l2]
        primaryStorage:
          - {name: ps1, type: Simulator, url: sim, totalCapacity: 10T}
        backupStorage:
          - {name: bs1, type: Simulator, url: sim, totalCapacity: 10T}
        l2Networks:
          - name: l2
            type: L2NoVlanNetwork
            physicalInterface: eth0
            l3Networks:
              - name: l3
                ipRanges: [{startIp: 10.0.0.10, endIp: 10.0.0.200, netmask: 255.255.255.0,
                            gateway: 10.0.0.1}]
                dns: [8.8.8.8]
    images:
      - {name: ttylinux, url: "http://...", format: qcow2, backupStorage: [bs1]}
    instanceOfferings: [{name: small, cpuNum: 1, memorySize: 1G}]
    diskOfferings: [{name: d10, diskSize: 10G}]

Each item becomes one API call. Its ``type`` picks the API (:data:`PRIMARY_STORAGE_APIS`,
:data:`BACKUP_STORAGE_APIS`, :data:`L2_NETWORK_APIS`; hosts by their cluster's
``hypervisorType``, :data:`HOST_APIS`), or an ``api`` key names it outright (a third-party
plugin's ``AddXyzPrimaryStorage``). The keys that shape the tree (:data:`STRUCTURE`) are the
builder's; every other key goes to the API as a parameter, so whatever the API accepts works.
The builder fills in the uuids of parents (``zoneUuid``, ``clusterUuid``, ``l2NetworkUuid``,
...). Sizes (:data:`SIZE_KEYS`) take ``64G``, ``1.5T`` (binary units) or a number of bytes.
A ``backupStorage`` entry of a zone that is a name, not a mapping, attaches backup storage
defined in another zone.

Order: per zone, the zone, its backup storage (added, attached), its primary storage, its L2
networks with their L3 networks, IP ranges and DNS, then its clusters (created, primary
storage and L2 networks attached, hosts added); then offerings; then images.

:func:`plan` checks the whole description before anything is created (structure, unknown
keys, sizes, duplicate names, names referred to but not defined; with ``apis``, that every
API exists and takes every parameter given) and raises :class:`SpecError` listing each
problem at its place (``zones[0].clusters[1].primaryStorage: no primary storage named 'nfs2'
in zone 'zone1'``). :func:`deploy` then calls the APIs through any object with
``async call(api, **params)`` (:class:`zcore.testing.ApiClient`, the CLI's client). On the
first failure it stops with :class:`DeployError`, naming the resource, its place and the API;
what was created before stays (nothing is half-deleted): fix the description and deploy again
with ``skip_existing=True``, which reuses the resources that exist by name (hosts by
``managementIp``) and skips attachments already made.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "BACKUP_STORAGE_APIS",
    "HOST_APIS",
    "KINDS",
    "L2_NETWORK_APIS",
    "PRIMARY_STORAGE_APIS",
    "SIZE_KEYS",
    "STRUCTURE",
    "Action",
    "ApiCaller",
    "DeployError",
    "Deployment",
    "Plan",
    "Ref",
    "SpecError",
    "deploy",
    "load_spec",
    "parse_size",
    "plan",
]

#: The kinds of resources the builder creates, as the top-level keys and the keys of a
#: :class:`Deployment`, and how messages call them.
KINDS: dict[str, str] = {
    "zones": "zone",
    "clusters": "cluster",
    "hosts": "host",
    "primaryStorage": "primary storage",
    "backupStorage": "backup storage",
    "l2Networks": "L2 network",
    "l3Networks": "L3 network",
    "ipRanges": "IP range",
    "images": "image",
    "instanceOfferings": "instance offering",
    "diskOfferings": "disk offering",
}

#: The query API that finds an existing resource of each kind (for ``skip_existing``).
QUERY_APIS: dict[str, str] = {
    "zones": "QueryZone",
    "clusters": "QueryCluster",
    "hosts": "QueryHost",
    "primaryStorage": "QueryPrimaryStorage",
    "backupStorage": "QueryBackupStorage",
    "l2Networks": "QueryL2Network",
    "l3Networks": "QueryL3Network",
    "ipRanges": "QueryIpRange",
    "images": "QueryImage",
    "instanceOfferings": "QueryInstanceOffering",
    "diskOfferings": "QueryDiskOffering",
}

#: A primary storage ``type`` and the API that adds it.
PRIMARY_STORAGE_APIS: dict[str, str] = {
    "LocalStorage": "AddLocalPrimaryStorage",
    "NFS": "AddNfsPrimaryStorage",
    "Simulator": "AddSimulatorPrimaryStorage",
    "SharedMountPoint": "AddSharedMountPointPrimaryStorage",
    "Ceph": "AddCephPrimaryStorage",
}

#: A backup storage ``type`` and the API that adds it.
BACKUP_STORAGE_APIS: dict[str, str] = {
    "SftpBackupStorage": "AddSftpBackupStorage",
    "Simulator": "AddSimulatorBackupStorage",
    "ImageStoreBackupStorage": "AddImageStoreBackupStorage",
    "Ceph": "AddCephBackupStorage",
}

#: An L2 network ``type`` and the API that creates it; without a type, an L2 network with a
#: ``vlan`` is an ``L2VlanNetwork`` and one without is an ``L2NoVlanNetwork``.
L2_NETWORK_APIS: dict[str, str] = {
    "L2VlanNetwork": "CreateL2VlanNetwork",
    "L2NoVlanNetwork": "CreateL2NoVlanNetwork",
}

#: A cluster's ``hypervisorType`` and the API that adds its hosts.
HOST_APIS: dict[str, str] = {
    "KVM": "AddKVMHost",
    "Simulator": "AddSimulatorHost",
}

#: The keys of each level that are the builder's own; every other key is an API parameter.
STRUCTURE: dict[str, frozenset[str]] = {
    "top": frozenset({"zones", "images", "instanceOfferings", "diskOfferings"}),
    "zone": frozenset({"clusters", "primaryStorage", "backupStorage", "l2Networks"}),
    "cluster": frozenset({"hosts", "primaryStorage", "l2Networks"}),
    "host": frozenset({"api"}),
    "primaryStorage": frozenset({"type", "api"}),
    "backupStorage": frozenset({"type", "api"}),
    "l2Network": frozenset({"type", "api", "l3Networks"}),
    "l3Network": frozenset({"api", "ipRanges", "dns"}),
    "ipRange": frozenset({"api"}),
    "image": frozenset({"api", "backupStorage"}),
    "instanceOffering": frozenset({"api"}),
    "diskOffering": frozenset({"api"}),
}

#: Parameters that are sizes in bytes: ``64G`` and ``1.5T`` are accepted for them.
SIZE_KEYS = frozenset({"memoryCapacity", "totalCapacity", "availableCapacity",
                       "totalPhysicalCapacity", "availablePhysicalCapacity", "memorySize",
                       "reservedMemorySize", "diskSize"})

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """Bytes from ``64G``, ``1.5T``, ``512MiB``, ``1024`` or an integer (binary units).

    Raises ``ValueError`` saying what is accepted.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            number = float(match.group(1)) * _UNITS[match.group(2).upper()]
            if number.is_integer():
                return int(number)
            raise ValueError(f"{value!r} is not a whole number of bytes")
    raise ValueError(f"{value!r} is not a size: give a number of bytes or a number with K, M, "
                     "G, T or P (binary units: 1G is 1073741824)")


# --------------------------------------------------------------------------- errors


class SpecError(ValueError):
    """The description cannot be deployed: ``problems`` lists each, with its place."""

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" {source}" if source else ""
        count = len(self.problems)
        super().__init__(f"the environment{where} has {count} problem{'s' * (count != 1)}:\n"
                         + "\n".join(f"  - {p}" for p in self.problems))


class DeployError(Exception):
    """An API call failed while deploying: ``action`` is the call, ``cause`` the error,
    ``deployment`` what exists so far (nothing created before the failure is deleted)."""

    def __init__(self, action: Action, cause: BaseException, deployment: Deployment) -> None:
        self.action = action
        self.cause = cause
        self.deployment = deployment
        super().__init__(
            f"{action.path}: {action.subject}: {action.api} failed: {cause}\n"
            "What was created before it is left in place; fix the cause and deploy again "
            "with skip_existing (zstack-cli deploy --skip-existing) to reuse it.")


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Ref:
    """The uuid of the resource of ``kind`` named ``name``, known once it is created."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Attached:
    """For ``skip_existing``: the attachment is made when the inventory of ``resource``
    (found by its query API) lists ``value`` in ``field``."""

    resource: Ref
    field: str
    value: Any


@dataclass(frozen=True)
class Action:
    """One API call of a plan.

    ``params`` may hold :class:`Ref` values (and lists of them), resolved when the call is
    made. An action with a ``kind`` creates a resource of that kind, recorded by ``name``;
    ``find`` are the query conditions that locate an existing one (``skip_existing``). An
    attachment has ``attached`` instead. ``subject`` says what it does, for messages.
    """

    path: str
    api: str
    params: Mapping[str, Any]
    subject: str
    kind: str | None = None
    name: str = ""
    find: tuple[tuple[str, Any], ...] = ()
    attached: Attached | None = None
    user_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The API calls that build a checked description, in order."""

    actions: tuple[Action, ...]

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def apis(self) -> list[str]:
        """The APIs the plan calls, each once, in order of first use."""
        return list(dict.fromkeys(a.api for a in self.actions))


@dataclass
class _Definition:
    path: str
    zone: str | None


@dataclass
class _Planner:
    problems: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    defined: dict[str, dict[str, _Definition]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    # (path, kind, name, zone it must be in or None): checked once everything is defined.
    references: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}" if path else text)

    # ----------------------------------------------------------------- shapes

    def items(self, node: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Any]]:
        """The entries of the list ``node[key]``, with their paths."""
        value = node.get(key)
        where = f"{path}.{key}" if path else key
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(where, f"expects a list, got {_shown(value)}")
            return []
        return [(f"{where}[{i}]", item) for i, item in enumerate(value)]

    def mapping(self, item: Any, path: str, what: str) -> dict[str, Any] | None:
        if not isinstance(item, Mapping):
            self.problem(path, f"expects a mapping describing a {what}, got {_shown(item)}")
            return None
        return dict(item)

    def names(self, node: Mapping[str, Any], key: str, path: str) -> list[tuple[str, str]]:
        """The names in the list ``node[key]`` (references), with their paths."""
        out = []
        for where, item in self.items(node, key, path):
            if isinstance(item, str) and item:
                out.append((where, item))
            else:
                self.problem(where, f"expects a name, got {_shown(item)}")
        return out

    def define(self, kind: str, item: Mapping[str, Any], path: str,
               zone: str | None = None) -> str | None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            self.problem(path, f"every {KINDS[kind]} needs a name (a non-empty string), got "
                               f"{_shown(name) if 'name' in item else 'none'}")
            return None
        earlier = self.defined[kind].get(name)
        if earlier is not None:
            self.problem(f"{path}.name", f"a {KINDS[kind]} named {name!r} is already defined "
                                         f"at {earlier.path}; names must be unique per kind")
            return None
        self.defined[kind][name] = _Definition(path, zone)
        return name

    def refer(self, path: str, kind: str, name: str, zone: str | None = None) -> Ref:
        self.references.append((path, kind, name, zone))
        return Ref(kind, name)

    def params(self, item: Mapping[str, Any], path: str, level: str,
               injected: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The API parameters of an item: every key but the structural ones, sizes parsed."""
        params: dict[str, Any] = {}
        for key, value in item.items():
            if not isinstance(key, str):
                self.problem(path, f"key {key!r} is not a string")
                continue
            if key in STRUCTURE[level]:
                continue
            if key in injected:
                self.problem(f"{path}.{key}", "is filled in by the builder from where the item "
                                              "sits in the description; leave it out")
                continue
            if key in SIZE_KEYS:
                try:
                    value = parse_size(value)
                except ValueError as exc:
                    self.problem(f"{path}.{key}", str(exc))
                    continue
            params[key] = value
        user_keys = tuple(params)
        return {**params, **injected}, user_keys

    def pick_api(self, item: Mapping[str, Any], path: str, what: str, key: str,
                 value: Any, apis: Mapping[str, str]) -> str | None:
        """The API an item's ``api`` key names, or the one its ``type`` (``key``) picks."""
        explicit = item.get("api")
        if explicit is not None:
            if not isinstance(explicit, str) or not explicit:
                self.problem(f"{path}.api", f"expects an API name, got {_shown(explicit)}")
                return None
            return explicit
        if value is None:
            self.problem(path, f"a {what} needs a {key} ({', '.join(apis)}) or an api")
            return None
        if value not in apis:
            self.problem(f"{path}.{key}", f"no API is known for {what} {key} {value!r}"
                                          f"{_did_you_mean(str(value), apis)}; known: "
                                          f"{', '.join(apis)}; or name the API with 'api'")
            return None
        return apis[value]

    def add(self, action: Action) -> None:
        self.actions.append(action)

    # ----------------------------------------------------------------- levels

    def top(self, spec: Any) -> None:
        if not isinstance(spec, Mapping):
            self.problem("", f"the description must be a mapping (zones:, images:, ...), got "
                             f"{_shown(spec)}")
            return
        self.unknown(spec, "", "top")
        for path, item in self.items(spec, "zones", ""):
            zone = self.mapping(item, path, "zone")
            if zone is not None:
                self.zone(zone, path)
        for kind, api in (("instanceOfferings", "CreateInstanceOffering"),
                          ("diskOfferings", "CreateDiskOffering")):
            for path, item in self.items(spec, kind, ""):
                offering = self.mapping(item, path, KINDS[kind])
                if offering is not None:
                    self.simple(kind, offering, path, kind[:-1],
                                offering.get("api") or api)
        for path, item in self.items(spec, "images", ""):
            image = self.mapping(item, path, "image")
            if image is not None:
                self.image(image, path)

    def unknown(self, node: Mapping[str, Any], path: str, level: str) -> None:
        for key in node:
            if key not in STRUCTURE[level]:
                self.problem(f"{path}.{key}" if path else str(key),
                             f"unknown key{_did_you_mean(str(key), STRUCTURE[level])}; "
                             f"expected: {', '.join(sorted(STRUCTURE[level]))}")

    def simple(self, kind: str, item: Mapping[str, Any], path: str, level: str,
               api: str, injected: Mapping[str, Any] | None = None,
               find: tuple[tuple[str, Any], ...] = (), zone: str | None = None) -> str | None:
        name = self.define(kind, item, path, zone)
        params, user_keys = self.params(item, path, level, injected or {})
        if name is not None:
            self.add(Action(path, api, params, f"{KINDS[kind]} {name!r}", kind, name,
                            (("name", name), *find), user_keys=user_keys))
        return name

    def zone(self, item: dict[str, Any], path: str) -> None:
        name = self.define("zones", item, path)
        params, user_keys = self.params(item, path, "zone", {})
        if name is None:
            return
        self.add(Action(path, "CreateZone", params, f"zone {name!r}", "zones", name,
                        (("name", name),), user_keys=user_keys))
        zone = Ref("zones", name)

        for where, entry in self.items(item, "backupStorage", path):
            if isinstance(entry, str) and entry:  # defined in another zone: attach only
                bs = self.refer(where, "backupStorage", entry)
            else:
                bs_item = self.mapping(entry, where, "backup storage (or the name of one)")
                bs_name = None if bs_item is None else self.backup_storage(bs_item, where, name)
                if bs_name is None:
                    continue
                bs = Ref("backupStorage", bs_name)
            self.add(Action(where, "AttachBackupStorageToZone",
                            {"zoneUuid": zone, "backupStorageUuid": bs},
                            f"attach backup storage {bs.name!r} to zone {name!r}",
                            attached=Attached(bs, "attachedZoneUuids", zone)))

        for where, entry in self.items(item, "primaryStorage", path):
            ps_item = self.mapping(entry, where, "primary storage")
            if ps_item is None:
                continue
            api = self.pick_api(ps_item, where, "primary storage", "type", ps_item.get("type"),
                                PRIMARY_STORAGE_APIS)
            ps = self.define("primaryStorage", ps_item, where, name)
            params, user_keys = self.params(ps_item, where, "primaryStorage", {"zoneUuid": zone})
            if api and ps:
                self.add(Action(where, api, params, f"primary storage {ps!r}",
                                "primaryStorage", ps, (("name", ps), ("zoneUuid", zone)),
                                user_keys=user_keys))

        for where, entry in self.items(item, "l2Networks", path):
            l2_item = self.mapping(entry, where, "L2 network")
            if l2_item is not None:
                self.l2_network(l2_item, where, name)

        for where, entry in self.items(item, "clusters", path):
            cluster = self.mapping(entry, where, "cluster")
            if cluster is not None:
                self.cluster(cluster, where, name)

    def backup_storage(self, item: dict[str, Any], path: str, zone: str) -> str | None:
        api = self.pick_api(item, path, "backup storage", "type", item.get("type"),
                            BACKUP_STORAGE_APIS)
        name = self.define("backupStorage", item, path, zone)
        params, user_keys = self.params(item, path, "backupStorage", {})
        if api and name:
            self.add(Action(path, api, params, f"backup storage {name!r}", "backupStorage",
                            name, (("name", name),), user_keys=user_keys))
            return name
        return None

    def l2_network(self, item: dict[str, Any], path: str, zone: str) -> None:
        kind = item.get("type") or ("L2VlanNetwork" if "vlan" in item else "L2NoVlanNetwork")
        api = self.pick_api(item, path, "L2 network", "type", kind, L2_NETWORK_APIS)
        name = self.define("l2Networks", item, path, zone)
        params, user_keys = self.params(item, path, "l2Network",
                                        {"zoneUuid": Ref("zones", zone)})
        if not (api and name):
            return
        self.add(Action(path, api, params, f"L2 network {name!r}", "l2Networks", name,
                        (("name", name), ("zoneUuid", Ref("zones", zone))),
                        user_keys=user_keys))
        l2 = Ref("l2Networks", name)
        for where, entry in self.items(item, "l3Networks", path):
            l3_item = self.mapping(entry, where, "L3 network")
            if l3_item is not None:
                self.l3_network(l3_item, where, l2, zone)

    def l3_network(self, item: dict[str, Any], path: str, l2: Ref, zone: str) -> None:
        name = self.define("l3Networks", item, path, zone)
        params, user_keys = self.params(item, path, "l3Network", {"l2NetworkUuid": l2})
        if name is None:
            return
        self.add(Action(path, str(item.get("api") or "CreateL3Network"), params,
                        f"L3 network {name!r}", "l3Networks", name,
                        (("name", name), ("l2NetworkUuid", l2)), user_keys=user_keys))
        l3 = Ref("l3Networks", name)
        for i, (where, entry) in enumerate(self.items(item, "ipRanges", path)):
            ip_range = self.mapping(entry, where, "IP range")
            if ip_range is None:
                continue
            ip_range.setdefault("name", f"{name}-range-{i}")
            api = ip_range.get("api") or ("AddIpRangeByNetworkCidr" if "networkCidr" in ip_range
                                          else "AddIpRange")
            self.simple("ipRanges", ip_range, where, "ipRange", api, {"l3NetworkUuid": l3},
                        (("l3NetworkUuid", l3),), zone)
        for where, dns in self.items(item, "dns", path):
            if not isinstance(dns, str) or not dns:
                self.problem(where, f"expects a DNS server address, got {_shown(dns)}")
                continue
            self.add(Action(where, "AddDnsToL3Network", {"l3NetworkUuid": l3, "dns": dns},
                            f"add DNS {dns} to L3 network {name!r}",
                            attached=Attached(l3, "dns", dns)))

    def cluster(self, item: dict[str, Any], path: str, zone: str) -> None:
        name = self.define("clusters", item, path, zone)
        params, user_keys = self.params(item, path, "cluster", {"zoneUuid": Ref("zones", zone)})
        if name is None:
            return
        self.add(Action(path, "CreateCluster", params, f"cluster {name!r}", "clusters", name,
                        (("name", name), ("zoneUuid", Ref("zones", zone))),
                        user_keys=user_keys))
        cluster = Ref("clusters", name)
        for where, ps in self.names(item, "primaryStorage", path):
            ref = self.refer(where, "primaryStorage", ps, zone)
            self.add(Action(where, "AttachPrimaryStorageToCluster",
                            {"clusterUuid": cluster, "primaryStorageUuid": ref},
                            f"attach primary storage {ps!r} to cluster {name!r}",
                            attached=Attached(ref, "attachedClusterUuids", cluster)))
        for where, l2 in self.names(item, "l2Networks", path):
            ref = self.refer(where, "l2Networks", l2, zone)
            self.add(Action(where, "AttachL2NetworkToCluster",
                            {"l2NetworkUuid": ref, "clusterUuid": cluster},
                            f"attach L2 network {l2!r} to cluster {name!r}",
                            attached=Attached(ref, "attachedClusterUuids", cluster)))
        hosts = [(where, host) for where, entry in self.items(item, "hosts", path)
                 if (host := self.mapping(entry, where, "host")) is not None]
        hypervisor = item.get("hypervisorType")
        host_api = HOST_APIS.get(hypervisor) if isinstance(hypervisor, str) else None
        if host_api is None and any("api" not in host for _, host in hosts):
            known = ", ".join(HOST_APIS)
            if hypervisor is None:
                self.problem(path, f"a cluster with hosts needs a hypervisorType ({known}): it "
                                   "picks the API that adds them (or give each host an api)")
            else:
                self.problem(f"{path}.hypervisorType",
                             f"no API is known to add hosts of hypervisorType {hypervisor!r}"
                             f"{_did_you_mean(str(hypervisor), HOST_APIS)}; known: {known}; "
                             "or give each host an api")
        for where, host in hosts:
            api = host.get("api") or host_api
            if not isinstance(api, str) or not api:
                if "api" in host:
                    self.problem(f"{where}.api", f"expects an API name, got {_shown(api)}")
                api = None
            host_name = self.define("hosts", host, where, zone)
            params, user_keys = self.params(host, where, "host", {"clusterUuid": cluster})
            if api and host_name:
                ip = host.get("managementIp")
                find = (("managementIp", ip),) if ip else (("name", host_name),)
                self.add(Action(where, api, params, f"host {host_name!r}", "hosts", host_name,
                                find, user_keys=user_keys))

    def image(self, item: dict[str, Any], path: str) -> None:
        refs = [self.refer(where, "backupStorage", bs)
                for where, bs in self.names(item, "backupStorage", path)]
        injected: dict[str, Any] = {"backupStorageUuids": refs} if refs else {}
        if not refs and "backupStorageUuids" not in item:
            self.problem(path, "an image needs backupStorage: the names of the backup storage "
                               "to add it to")
        self.simple("images", item, path, "image", str(item.get("api") or "AddImage"), injected)

    def check_references(self) -> None:
        for path, kind, name, zone in self.references:
            found = self.defined[kind].get(name)
            what = KINDS[kind]
            if found is None:
                known = self.defined[kind]
                self.problem(path, f"no {what} named {name!r}"
                                   f"{f' in zone {zone!r}' if zone else ''}"
                                   f"{_did_you_mean(name, known)}")
            elif zone is not None and found.zone != zone:
                self.problem(path, f"{what} {name!r} is in zone {found.zone!r} ({found.path}), "
                                   f"not in zone {zone!r}")

    def check_apis(self, apis: Mapping[str, Collection[str]]) -> None:
        for action in self.actions:
            params = apis.get(action.api)
            if params is None:
                self.problem(action.path, f"the node has no API {action.api}"
                                          f"{_did_you_mean(action.api, apis)} (is the plugin "
                                          "that provides it enabled?)")
                continue
            for key in action.params:
                if key not in params:
                    where = f"{action.path}.{key}" if key in action.user_keys else action.path
                    self.problem(where, f"{action.api} has no parameter {key!r}"
                                        f"{_did_you_mean(key, params)}; it takes: "
                                        f"{', '.join(sorted(params))}")


def plan(spec: Any, *, apis: Mapping[str, Collection[str]] | None = None,
         source: str | None = None) -> Plan:
    """Check a description and return the API calls that build it, in order.

    ``apis`` (API name -> its parameter names), when given, is what the node offers: every
    call's API must be there and take every parameter. Raises :class:`SpecError` listing every
    problem found, each at its place in the description.
    """
    planner = _Planner()
    planner.top(spec)
    planner.check_references()
    if apis is not None and not planner.problems:
        planner.check_apis(apis)
    if planner.problems:
        raise SpecError(planner.problems, source)
    return Plan(tuple(planner.actions))


def load_spec(path: str | os.PathLike[str]) -> Any:
    """The description in a YAML (or JSON) file; :class:`SpecError` when it cannot be read."""
    import yaml

    where = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SpecError([f"cannot read it: {exc.strerror or exc}"], where) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{at}not valid YAML: {problem}"], where) from None


# --------------------------------------------------------------------------- deploying


class ApiCaller(Protocol):
    """What the builder talks to: calls an API by name, returns the reply body or raises."""

    async def call(self, api: str, **params: Any) -> Any: ...


class Deployment(Mapping[str, dict[str, str]]):
    """The uuids of a deployed environment: ``env["hosts"]["host1"]``, ``env.uuid("zone1")``."""

    def __init__(self) -> None:
        self.uuids: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}

    def __getitem__(self, kind: str) -> dict[str, str]:
        try:
            return self.uuids[kind]
        except KeyError:
            raise KeyError(f"no kind {kind!r}{_did_you_mean(kind, self.uuids)}; kinds: "
                           f"{', '.join(self.uuids)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.uuids)

    def __len__(self) -> int:
        return len(self.uuids)

    def uuid(self, name: str, kind: str | None = None) -> str:
        """The uuid of the resource named ``name`` (of ``kind`` when names are shared)."""
        kinds = [kind] if kind is not None else list(self.uuids)
        found = [(k, self[k][name]) for k in kinds if name in self[k]]
        if len(found) == 1:
            return found[0][1]
        if not found:
            raise KeyError(f"no {KINDS.get(kind, kind) if kind else 'resource'} named {name!r} "
                           "was deployed")
        raise KeyError(f"{name!r} names a {' and a '.join(KINDS[k] for k, _ in found)}; give "
                       "the kind: uuid(name, kind)")

    def to_dict(self) -> dict[str, dict[str, str]]:
        """Every kind that has resources, with their uuids by name."""
        return {kind: dict(names) for kind, names in self.uuids.items() if names}

    def __repr__(self) -> str:
        return f"Deployment({self.to_dict()!r})"


def _resolve(value: Any, deployment: Deployment) -> Any:
    if isinstance(value, Ref):
        return deployment[value.kind][value.name]
    if isinstance(value, list):
        return [_resolve(v, deployment) for v in value]
    return value


async def _existing(client: ApiCaller, action: Action, deployment: Deployment
                    ) -> str | None:
    assert action.kind is not None
    conditions = [f"{key}={_resolve(value, deployment)}" for key, value in action.find]
    found = (await client.call(QUERY_APIS[action.kind], q=conditions))["inventories"]
    if len(found) > 1:
        raise LookupError(f"{len(found)} {KINDS[action.kind]}s match "
                          f"{' '.join(conditions)}; the builder cannot tell which to reuse: "
                          "rename it in the description or delete the extra ones")
    return found[0]["uuid"] if found else None


async def _is_attached(client: ApiCaller, attached: Attached, deployment: Deployment) -> bool:
    uuid = _resolve(attached.resource, deployment)
    found = (await client.call(QUERY_APIS[attached.resource.kind],
                               q=[f"uuid={uuid}"]))["inventories"]
    value = _resolve(attached.value, deployment)
    return bool(found) and value in (found[0].get(attached.field) or ())


async def deploy(spec: Any, client: ApiCaller, *, skip_existing: bool = False,
                 apis: Mapping[str, Collection[str]] | None = None,
                 progress: Callable[[str], None] | None = None) -> Deployment:
    """Build the environment ``spec`` describes (a mapping or a :class:`Plan`) through
    ``client``; the uuids of what it created (or, with ``skip_existing``, found).

    ``apis``: see :func:`plan`. ``progress`` gets one line per API call made or skipped.
    Raises :class:`SpecError` before calling anything when the description is wrong, and
    :class:`DeployError` at the first call that fails.
    """
    steps = spec if isinstance(spec, Plan) else plan(spec, apis=apis)
    deployment = Deployment()
    say = progress or (lambda line: None)
    for action in steps:
        try:
            if action.kind is not None:
                uuid = await _existing(client, action, deployment) if skip_existing else None
                if uuid is not None:
                    say(f"exists   {action.subject}: {uuid}")
                else:
                    params = {k: _resolve(v, deployment) for k, v in action.params.items()}
                    reply = await client.call(action.api, **params)
                    uuid = reply["inventory"]["uuid"]
                    say(f"created  {action.subject} ({action.api}): {uuid}")
                deployment.uuids[action.kind][action.name] = uuid
            elif action.attached is not None and skip_existing and \
                    await _is_attached(client, action.attached, deployment):
                say(f"done     {action.subject}")
            else:
                params = {k: _resolve(v, deployment) for k, v in action.params.items()}
                await client.call(action.api, **params)
                say(f"ok       {action.subject} ({action.api})")
        except Exception as exc:
            raise DeployError(action, exc, deployment) from exc
    return deployment


# --------------------------------------------------------------------------- helpers


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _did_you_mean(word: str, choices: Collection[str]) -> str:
    close = [c for c in choices if c.lower() == word.lower()] or \
        difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
