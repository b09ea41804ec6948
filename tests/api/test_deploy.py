"""The environment builder: checking descriptions, deploying them over REST and from the CLI."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from zcore import cli
from zcore.deploy import DeployError, Deployment, SpecError, deploy, load_spec, parse_size, plan
from zcore.testing import ApiClient, Environment

EXAMPLES = Path(__file__).parents[2] / "examples" / "environments"
REFERENCE = Path(__file__).parents[1] / "reference" / "zstack_api.json"
SHARED_APIS = Path(__file__).parents[2] / ".." / "shared" / "zstack-api" / "apis.json"
GiB = 1024**3

#: What exists before hosts, storage and networks: zones, clusters, offerings.
SMALL = """
zones:
  - name: zone1
    description: first
    clusters:
      - {name: c1, hypervisorType: Simulator}
      - {name: c2, hypervisorType: KVM, architecture: x86_64}
  - name: zone2
    clusters:
      - {name: c3, hypervisorType: KVM}
instanceOfferings:
  - {name: small, cpuNum: 1, memorySize: 1G}
  - {name: big, cpuNum: 16, memorySize: 64G, reservedMemorySize: 512M,
     allocatorStrategy: LeastVmPreferredHostAllocatorStrategy}
diskOfferings:
  - {name: d10, diskSize: 10G}
  - {name: d1T, diskSize: 1T}
"""


def zstack_apis() -> dict[str, set[str]]:
    """ZStack's APIs and their parameter names, from its API description."""
    apis = json.loads(REFERENCE.read_text())["apis"]
    if SHARED_APIS.exists():
        apis = {**json.loads(SHARED_APIS.read_text()), **apis}
    return {name: {p["name"] for p in api["params"]} | {"systemTags", "userTags"}
            for name, api in apis.items()}


def problems(spec: Any, **options: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        plan(spec, **options)
    return caught.value.problems


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(("text", "size"), [
    (1024, 1024), ("1024", 1024), ("64G", 64 * GiB), ("64g", 64 * GiB), ("64GB", 64 * GiB),
    ("64GiB", 64 * GiB), ("1T", 1024 * GiB), ("1.5T", 1536 * GiB), ("512M", 512 * 1024**2),
    ("8K", 8192), ("2 G", 2 * GiB), ("1P", 1024**5), (0, 0),
])
def test_sizes(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["64Q", "G", "-1G", "1.5", "0.3K", "", True, 1.5, -1, None,
                                  [1]])
def test_bad_sizes(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


# --------------------------------------------------------------------------- checking


def test_the_brief_example_plans_in_dependency_order() -> None:
    steps = plan(yaml.safe_load(EXAMPLE))
    calls = [(a.api, a.subject) for a in steps]
    assert calls == [
        ("CreateZone", "zone 'zone1'"),
        ("AddSftpBackupStorage", "backup storage 'bs1'"),
        ("AttachBackupStorageToZone", "attach backup storage 'bs1' to zone 'zone1'"),
        ("AddLocalPrimaryStorage", "primary storage 'local1'"),
        ("AddNfsPrimaryStorage", "primary storage 'nfs1'"),
        ("AddSimulatorPrimaryStorage", "primary storage 'sim1'"),
        ("CreateL2VlanNetwork", "L2 network 'l2-vlan10'"),
        ("CreateL3Network", "L3 network 'l3-1'"),
        ("AddIpRange", "IP range 'l3-1-range-0'"),
        ("AddDnsToL3Network", "add DNS 8.8.8.8 to L3 network 'l3-1'"),
        ("CreateCluster", "cluster 'cluster1'"),
        ("AttachPrimaryStorageToCluster", "attach primary storage 'local1' to cluster 'cluster1'"),
        ("AttachPrimaryStorageToCluster", "attach primary storage 'nfs1' to cluster 'cluster1'"),
        ("AttachL2NetworkToCluster", "attach L2 network 'l2-vlan10' to cluster 'cluster1'"),
        ("AddSimulatorHost", "host 'host1'"),
        ("CreateInstanceOffering", "instance offering 'small'"),
        ("CreateDiskOffering", "disk offering 'd10'"),
        ("AddImage", "image 'ttylinux'"),
    ]
    by_subject = {a.subject: a for a in steps}
    host = by_subject["host 'host1'"].params
    assert (host["memoryCapacity"], host["cpuCapacity"], host["managementIp"]) == \
        (64 * GiB, 32, "10.0.0.1")
    assert by_subject["primary storage 'sim1'"].params["totalCapacity"] == 10 * 1024**4
    assert "type" not in by_subject["primary storage 'nfs1'"].params
    assert by_subject["L2 network 'l2-vlan10'"].params["vlan"] == 10
    assert by_subject["instance offering 'small'"].params["memorySize"] == GiB
    # The plan only uses ZStack's APIs and parameters.
    plan(yaml.safe_load(EXAMPLE), apis=zstack_apis())


@pytest.mark.parametrize("name", ["simulator.yaml", "datacenter.yaml"])
def test_the_examples_are_valid_against_zstacks_apis(name: str) -> None:
    spec = load_spec(EXAMPLES / name)
    steps = plan(spec, apis=zstack_apis(), source=name)
    kinds = {a.kind for a in steps if a.kind}
    assert {"zones", "clusters", "hosts", "primaryStorage", "backupStorage", "l2Networks",
            "l3Networks", "ipRanges", "instanceOfferings", "diskOfferings"} <= kinds
    if name == "datacenter.yaml":
        apis = set(steps.apis())
        assert {"AddLocalPrimaryStorage", "AddNfsPrimaryStorage", "AddSftpBackupStorage",
                "CreateL2VlanNetwork", "AddIpRange", "AddDnsToL3Network", "AddKVMHost",
                "AddImage"} <= apis


def test_every_problem_is_reported_with_its_place() -> None:
    spec = yaml.safe_load("""
zones:
  - name: zone1
    clusters:
      - name: cluster1
        hypervisorType: Simulator
        primaryStorage: [local1]
        hosts:
          - {name: h1, managementIp: 10.0.0.1, cpuCapacity: 4, memoryCapacity: 64Q}
      - name: cluster2
        hypervisorType: Simulator
        primaryStorage: [nfs2, ps-of-zone2]
        l2Networks: [l2-x]
      - name: cluster1
        hypervisorType: KVM
    primaryStorage:
      - {name: local1, type: LocalStorage, url: /x}
      - {name: nfs1, type: Nfs, url: "h:/e"}
      - {name: ceph1, url: x}
  - name: zone2
    primaryStorage:
      - {name: ps-of-zone2, type: Simulator, url: x, zoneUuid: abc}
    clusters:
      - name: c3
        hosts: [{name: h2, managementIp: 10.0.0.2}]
  - description: no name
images:
  - {name: img, url: "http://x"}
  - {name: img2, url: "http://x", backupStorage: [bs9]}
instanceOffering:
  - {name: small}
diskOfferings: {name: d1}
""")
    found = problems(spec)
    assert found == [
        ("instanceOffering: unknown key (did you mean 'instanceOfferings'?); expected: "
         "diskOfferings, images, instanceOfferings, zones"),
        ("zones[0].primaryStorage[1].type: no API is known for primary storage type 'Nfs' "
         "(did you mean 'NFS'?); known: LocalStorage, NFS, Simulator, SharedMountPoint, Ceph; "
         "or name the API with 'api'"),
        ("zones[0].primaryStorage[2]: a primary storage needs a type (LocalStorage, NFS, "
         "Simulator, SharedMountPoint, Ceph) or an api"),
        ("zones[0].clusters[0].hosts[0].memoryCapacity: '64Q' is not a size: give a number of "
         "bytes or a number with K, M, G, T or P (binary units: 1G is 1073741824)"),
        ("zones[0].clusters[2].name: a cluster named 'cluster1' is already defined at "
         "zones[0].clusters[0]; names must be unique per kind"),
        ("zones[1].primaryStorage[0].zoneUuid: is filled in by the builder from where the item "
         "sits in the description; leave it out"),
        ("zones[1].clusters[0]: a cluster with hosts needs a hypervisorType (KVM, Simulator): it "
         "picks the API that adds them (or give each host an api)"),
        "zones[2]: every zone needs a name (a non-empty string), got none",
        "diskOfferings: expects a list, got dict {'name': 'd1'}",
        "images[0]: an image needs backupStorage: the names of the backup storage to add it to",
        ("zones[0].clusters[1].primaryStorage[0]: no primary storage named 'nfs2' in zone "
         "'zone1' (did you mean 'nfs1'?)"),
        ("zones[0].clusters[1].primaryStorage[1]: primary storage 'ps-of-zone2' is in zone "
         "'zone2' (zones[1].primaryStorage[0]), not in zone 'zone1'"),
        "zones[0].clusters[1].l2Networks[0]: no L2 network named 'l2-x' in zone 'zone1'",
        "images[1].backupStorage[0]: no backup storage named 'bs9'",
    ]
    with pytest.raises(SpecError) as caught:
        plan(spec, source="env.yaml")
    assert str(caught.value).startswith("the environment env.yaml has 14 problems:\n  - ")


def test_structure_errors() -> None:
    assert problems(["zones"]) == [
        "the description must be a mapping (zones:, images:, ...), got list ['zones']"]
    assert problems({"zones": ["zone1"]}) == [
        "zones[0]: expects a mapping describing a zone, got str 'zone1'"]
    assert problems({"zones": [{"name": "z", "clusters": [
        {"name": "c", "hypervisorType": "Xen", "hosts": [{"name": "h"}],
         "primaryStorage": "ps1"}]}]}) == [
        "zones[0].clusters[0].primaryStorage: expects a list, got str 'ps1'",
        ("zones[0].clusters[0].hypervisorType: no API is known to add hosts of hypervisorType "
         "'Xen'; known: KVM, Simulator; or give each host an api"),
    ]
    assert problems({"zones": [{"name": "z", "l2Networks": [
        {"name": "l2", "physicalInterface": "eth0", "l3Networks": [
            {"name": "l3", "dns": ["", 8]}]}]}]}) == [
        "zones[0].l2Networks[0].l3Networks[0].dns[0]: expects a DNS server address, got str ''",
        "zones[0].l2Networks[0].l3Networks[0].dns[1]: expects a DNS server address, got int 8",
    ]


def test_the_apis_of_the_node_are_checked_before_anything_is_made() -> None:
    apis = {"CreateZone": {"name", "description"},
            "CreateCluster": {"name", "zoneUuid", "hypervisorType"}}
    spec = {"zones": [{"name": "z", "descripton": "typo",
                       "clusters": [{"name": "c", "hypervisorType": "KVM", "cpu": 1}],
                       "primaryStorage": [{"name": "nfs", "type": "NFS", "url": "h:/e"}]}]}
    assert problems(spec, apis=apis) == [
        ("zones[0].descripton: CreateZone has no parameter 'descripton' (did you mean "
         "'description'?); it takes: description, name"),
        ("zones[0].primaryStorage[0]: the node has no API AddNfsPrimaryStorage (is the plugin "
         "that provides it enabled?)"),
        ("zones[0].clusters[0].cpu: CreateCluster has no parameter 'cpu'; it takes: "
         "hypervisorType, name, zoneUuid"),
    ]


def test_another_zones_backup_storage_is_attached_by_name() -> None:
    steps = plan({"zones": [
        {"name": "z1", "backupStorage": [{"name": "bs", "type": "Simulator", "url": "x"}]},
        {"name": "z2", "backupStorage": ["bs"]}]})
    assert [(a.api, a.path) for a in steps] == [
        ("CreateZone", "zones[0]"), ("AddSimulatorBackupStorage", "zones[0].backupStorage[0]"),
        ("AttachBackupStorageToZone", "zones[0].backupStorage[0]"),
        ("CreateZone", "zones[1]"), ("AttachBackupStorageToZone", "zones[1].backupStorage[0]")]
    assert problems({"zones": [{"name": "z2", "backupStorage": ["bs"]}]}) == [
        "zones[0].backupStorage[0]: no backup storage named 'bs'"]


def test_an_api_key_picks_any_api() -> None:
    steps = plan({"zones": [{"name": "z", "primaryStorage": [
        {"name": "x", "api": "AddXyzPrimaryStorage", "url": "x"}]}]})
    assert steps.actions[1].api == "AddXyzPrimaryStorage"
    assert set(steps.actions[1].params) == {"url", "name", "zoneUuid"}


def test_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "env.yaml"
    bad.write_text("zones:\n  - name: [z1\n")
    with pytest.raises(SpecError) as caught:
        load_spec(bad)
    assert f"the environment {bad} has 1 problem:" in str(caught.value)
    assert "line 3" in str(caught.value) and "not valid YAML" in str(caught.value)
    with pytest.raises(SpecError, match="cannot read it"):
        load_spec(tmp_path / "missing.yaml")


def test_a_deployment_finds_uuids_by_name() -> None:
    done = Deployment()
    done.uuids["zones"]["z1"] = "a" * 32
    done.uuids["clusters"]["z1"] = "b" * 32
    done.uuids["hosts"]["h1"] = "c" * 32
    assert done.uuid("h1") == "c" * 32 and done["hosts"] == {"h1": "c" * 32}
    assert done.uuid("z1", "clusters") == "b" * 32
    with pytest.raises(KeyError, match="names a zone and a cluster"):
        done.uuid("z1")
    with pytest.raises(KeyError, match="no resource named 'h2'"):
        done.uuid("h2")
    with pytest.raises(KeyError, match="did you mean 'hosts'"):
        done["host"]
    assert done.to_dict() == {"zones": {"z1": "a" * 32}, "clusters": {"z1": "b" * 32},
                              "hosts": {"h1": "c" * 32}}


# --------------------------------------------------------------------------- deploying




async def counts(client: ApiClient) -> dict[str, int]:
    out = {}
    for api in ("QueryZone", "QueryCluster", "QueryInstanceOffering", "QueryDiskOffering"):
        out[api] = (await client.call(api, count=True))["total"]
    return out


async def test_deploy_zones_clusters_and_offerings_over_rest(make_env: Any) -> None:
    lines: list[str] = []
    env: Environment = await make_env(SMALL)
    client = env.client
    assert env.uuid("c1") == env["clusters"]["c1"]
    c3 = (await client.call("QueryCluster", q=[f"uuid={env.uuid('c3')}"]))["inventories"][0]
    assert (c3["zoneUuid"], c3["hypervisorType"]) == (env.uuid("zone2"), "KVM")
    assert sorted(i["name"] for i in (await client.call(
        "QueryCluster", q=["zone.name=zone1"]))["inventories"]) == ["c1", "c2"]
    zone = (await client.call("QueryZone", q=["name=zone1"]))["inventories"][0]
    assert (zone["uuid"], zone["description"]) == (env.uuid("zone1"), "first")
    big = (await client.call("QueryInstanceOffering", q=["name=big"]))["inventories"][0]
    assert (big["uuid"], big["cpuNum"], big["memorySize"], big["reservedMemorySize"],
            big["allocatorStrategy"]) == (env.uuid("big"), 16, 64 * GiB, 512 * 1024**2,
                                          "LeastVmPreferredHostAllocatorStrategy")
    d1t = (await client.call("QueryDiskOffering", q=["name=d1T"]))["inventories"][0]
    assert d1t["diskSize"] == 1024**4
    assert await counts(client) == {"QueryZone": 2, "QueryCluster": 3,
                                    "QueryInstanceOffering": 2, "QueryDiskOffering": 2}

    # Progress: one line per call.
    again = await deploy({"zones": [{"name": "zone3", "clusters": [
        {"name": "c9", "hypervisorType": "KVM"}]}]}, client, progress=lines.append)
    assert lines == [f"created  zone 'zone3' (CreateZone): {again.uuid('zone3')}",
                     f"created  cluster 'c9' (CreateCluster): {again.uuid('c9')}"]


async def test_a_wrong_description_creates_nothing(make_env: Any, api_client: Any) -> None:
    client = await api_client()
    spec = yaml.safe_load(SMALL)
    spec["zones"][1]["clusters"].append({"name": "c1", "hypervisorType": "KVM"})
    spec["diskOfferings"][0]["diskSize"] = "ten gigs"
    with pytest.raises(SpecError) as caught:
        await make_env(spec, client=client)
    assert caught.value.problems == [
        ("zones[1].clusters[1].name: a cluster named 'c1' is already defined at "
         "zones[0].clusters[0]; names must be unique per kind"),
        ("diskOfferings[0].diskSize: 'ten gigs' is not a size: give a number of bytes or a "
         "number with K, M, G, T or P (binary units: 1G is 1073741824)")]
    spec = yaml.safe_load(SMALL)
    spec["instanceOfferings"][0]["cpus"] = 2
    with pytest.raises(SpecError, match=r"instanceOfferings\[0\]\.cpus: CreateInstanceOffering "
                                        r"has no parameter 'cpus'"):
        await make_env(spec, client=client)
    assert set((await counts(client)).values()) == {0}


async def test_a_failure_names_the_resource_and_a_rerun_reuses_what_exists(
        make_env: Any, api_client: Any) -> None:
    client = await api_client()
    spec = yaml.safe_load(SMALL)
    spec["zones"][0]["clusters"][1]["hypervisorType"] = "Xen"
    with pytest.raises(DeployError) as caught:
        await make_env(spec, client=client)
    error = caught.value
    message = str(error)
    assert message.startswith("zones[0].clusters[1]: cluster 'c2': CreateCluster failed: "
                              "SYS.1007")
    assert "no hypervisor 'Xen' is available" in message
    assert "left in place" in message and "skip_existing" in message
    assert (error.action.api, error.action.name) == ("CreateCluster", "c2")
    # Nothing is half-deleted: what was made before the failure stays.
    made = error.deployment.to_dict()
    assert made == {"zones": {"zone1": made["zones"]["zone1"]},
                    "clusters": {"c1": made["clusters"]["c1"]}}
    assert (await counts(client))["QueryCluster"] == 1

    spec["zones"][0]["clusters"][1]["hypervisorType"] = "KVM"
    lines: list[str] = []
    env = await deploy(spec, client, skip_existing=True, progress=lines.append)
    assert env.uuid("zone1") == made["zones"]["zone1"] and env.uuid("c1") == made["clusters"]["c1"]
    assert lines[:3] == [f"exists   zone 'zone1': {env.uuid('zone1')}",
                         f"exists   cluster 'c1': {env.uuid('c1')}",
                         f"created  cluster 'c2' (CreateCluster): {env.uuid('c2')}"]
    assert await counts(client) == {"QueryZone": 2, "QueryCluster": 3,
                                    "QueryInstanceOffering": 2, "QueryDiskOffering": 2}
    # Everything exists now: a third run creates nothing.
    lines.clear()
    again = await deploy(spec, client, skip_existing=True, progress=lines.append)
    assert again.to_dict() == env.to_dict()
    assert all(line.startswith("exists ") for line in lines) and len(lines) == 9
    assert await counts(client) == {"QueryZone": 2, "QueryCluster": 3,
                                    "QueryInstanceOffering": 2, "QueryDiskOffering": 2}


async def test_skip_existing_refuses_to_guess_between_two(api_client: Any) -> None:
    client = await api_client()
    await client.call("CreateZone", name="twin")
    await client.call("CreateZone", name="twin")
    with pytest.raises(DeployError) as caught:
        await deploy({"zones": [{"name": "twin"}]}, client, skip_existing=True)
    assert "2 zones match name=twin; the builder cannot tell which to reuse" in str(caught.value)


async def test_zstack_cli_deploy(api_client: Any, tmp_path: Path) -> None:
    client = await api_client()
    port = client.node.url.rsplit(":", 1)[1]
    env_file = tmp_path / "env.yaml"
    env_file.write_text(SMALL)

    def run(*words: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(["--port", port, *words], stdout=out, stderr=err, home=tmp_path)
        return status, out.getvalue(), err.getvalue()

    status, out, err = await asyncio.to_thread(run, "deploy", str(env_file))
    assert status == 1 and "log in first" in err
    status, _, err = await asyncio.to_thread(run, "LogInByAccount", "accountName=admin",
                                             "password=password")
    assert status == 0, err

    status, out, err = await asyncio.to_thread(run, "deploy", "--check", str(env_file))
    assert (status, out.strip()) == (0, f"{env_file}: valid; deploying it makes 9 API calls")
    assert (await counts(client))["QueryZone"] == 0

    status, out, err = await asyncio.to_thread(run, "deploy", str(env_file))
    assert status == 0, err
    made = json.loads(out)
    assert set(made) == {"zones", "clusters", "instanceOfferings", "diskOfferings"}
    zones = (await client.call("QueryZone", sort="+name"))["inventories"]
    assert {z["name"]: z["uuid"] for z in zones} == made["zones"]
    assert err.splitlines()[0] == f"created  zone 'zone1' (CreateZone): {made['zones']['zone1']}"
    assert len(err.splitlines()) == 9
    big = (await client.call("QueryInstanceOffering", q=["name=big"]))["inventories"][0]
    assert big["memorySize"] == 64 * GiB

    # Again: every name is taken now, but names need not be unique; --skip-existing reuses.
    status, out, err = await asyncio.to_thread(run, "deploy", "--skip-existing", str(env_file))
    assert status == 0, err
    assert json.loads(out) == made
    assert (await counts(client))["QueryZone"] == 2

    bad = tmp_path / "bad.yaml"
    bad.write_text("zones:\n  - name: z\n    clusters: [{name: c, hypervisorType: KVM, "
                   "colour: red}]\n")
    status, out, err = await asyncio.to_thread(run, "deploy", str(bad))
    assert status == 2
    assert "zones[0].clusters[0].colour: CreateCluster has no parameter 'colour'" in err

    failing = tmp_path / "failing.yaml"
    failing.write_text("zones:\n  - name: z9\n    clusters: [{name: c, hypervisorType: Xen}]\n")
    status, out, err = await asyncio.to_thread(run, "deploy", str(failing))
    assert status == 1
    assert "zones[0].clusters[0]: cluster 'c': CreateCluster failed: SYS.1007 invalid " \
           "argument: parameter 'hypervisorType' of CreateCluster" in err
    status, out, err = await asyncio.to_thread(run, "deploy", "--force", str(failing))
    assert status == 2 and "usage: deploy" in err


#: The example of the issue, as the brief gives it.
EXAMPLE = """
zones:
  - name: zone1
    clusters:
      - name: cluster1
        hypervisorType: Simulator
        hosts:
          - {name: host1, managementIp: 10.0.0.1, cpuCapacity: 32, memoryCapacity: 64G}
        primaryStorage: [local1, nfs1]
        l2Networks: [l2-vlan10]
    primaryStorage:
      - {name: local1, type: LocalStorage, url: /var/lib/zstack/local}
      - {name: nfs1, type: NFS, url: "127.0.0.1:/export/nfs"}
      - {name: sim1, type: Simulator, totalCapacity: 10T, url: sim}
    backupStorage:
      - {name: bs1, type: SftpBackupStorage, url: /var/lib/zstack/bs, hostname: 127.0.0.1,
         username: root, password: password}
    l2Networks:
      - {name: l2-vlan10, type: L2VlanNetwork, vlan: 10, physicalInterface: eth0,
         l3Networks: [{name: l3-1, ipRanges: [{startIp: 10.1.0.10, endIp: 10.1.0.200,
                       netmask: 255.255.255.0, gateway: 10.1.0.1}], dns: [8.8.8.8]}]}
images:
  - {name: ttylinux, url: "http://example.com/ttylinux.qcow2", format: qcow2,
     mediaType: RootVolumeTemplate, backupStorage: [bs1]}
instanceOfferings: [{name: small, cpuNum: 1, memorySize: 1G}]
diskOfferings: [{name: d10, diskSize: 10G}]
"""


# --------------------------------------------------------------------------- whole clouds


#: Until the test client sends AttachL2NetworkToCluster's body under its declared envelope.
async def test_the_simulator_example_deploys_end_to_end(make_env: Any, tmp_path: Path) -> None:
    image = tmp_path / "tiny.qcow2"
    image.write_bytes(b"\0" * 4096)
    spec = load_spec(EXAMPLES / "simulator.yaml")
    spec["images"] = [{"name": "tiny", "url": image.as_uri(), "format": "raw",
                       "mediaType": "RootVolumeTemplate", "backupStorage": ["bs1"]}]
    env: Environment = await make_env(spec)
    client = env.client

    async def one(api: str, uuid: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = (await client.call(api, q=[f"uuid={uuid}"]))["inventories"]
        assert len(found) == 1
        return found[0]

    zone, cluster = env.uuid("zone1"), env.uuid("cluster1")
    for name in ("host1", "host2"):
        host = await one("QueryHost", env["hosts"][name])
        assert (host["clusterUuid"], host["status"], host["totalMemoryCapacity"]) == \
            (cluster, "Connected", 64 * GiB)
    ps = await one("QueryPrimaryStorage", env.uuid("ps1"))
    assert (ps["zoneUuid"], ps["attachedClusterUuids"], ps["totalCapacity"]) == \
        (zone, [cluster], 10 * 1024**4)
    bs = await one("QueryBackupStorage", env.uuid("bs1"))
    assert bs["attachedZoneUuids"] == [zone]
    l2 = await one("QueryL2Network", env.uuid("l2-flat"))
    assert (l2["type"], l2["attachedClusterUuids"]) == ("L2NoVlanNetwork", [cluster])
    l3 = await one("QueryL3Network", env.uuid("l3-flat"))
    assert (l3["l2NetworkUuid"], l3["dns"]) == (env.uuid("l2-flat"), ["8.8.8.8"])
    assert [(r["uuid"], r["startIp"], r["endIp"]) for r in l3["ipRanges"]] == \
        [(env.uuid("l3-flat-range-0"), "10.0.0.10", "10.0.0.250")]
    tiny = await one("QueryImage", env.uuid("tiny"))
    assert (tiny["status"], tiny["size"]) == ("Ready", 4096)
    assert (await one("QueryInstanceOffering", env.uuid("medium")))["memorySize"] == 8 * GiB

    # Deploying it again with skip_existing changes nothing.
    lines: list[str] = []
    again = await deploy(spec, client, skip_existing=True, progress=lines.append)
    assert again.to_dict() == env.to_dict()
    assert lines and all(line.split()[0] in ("exists", "done") for line in lines), lines
    assert (await client.call("QueryHost", count=True))["total"] == 2
    assert (await client.call("QueryImage", count=True))["total"] == 1


async def test_the_cloud_fixture(cloud: Environment) -> None:
    assert set(cloud["hosts"]) == {"host1", "host2"}
    hosts = (await cloud.client.call("QueryHost", q=[f"clusterUuid={cloud.uuid('cluster1')}",
                                                     "status=Connected"]))["inventories"]
    assert sorted(h["name"] for h in hosts) == ["host1", "host2"]
    found = await cloud.client.call("QueryL3Network", q=["l2Network.cluster.name=cluster1"])
    assert [i["uuid"] for i in found["inventories"]] == [cloud.uuid("l3")]


async def test_zstack_cli_deploys_the_examples(api_client: Any, tmp_path: Path) -> None:
    client = await api_client()
    port = client.node.url.rsplit(":", 1)[1]

    def run(*words: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(["--port", port, *words], stdout=out, stderr=err, home=tmp_path)
        return status, out.getvalue(), err.getvalue()

    assert (await asyncio.to_thread(run, "LogInByAccount", "accountName=admin",
                                    "password=password"))[0] == 0
    # The fuller example needs real hosts and servers; it is valid against this node's APIs.
    status, out, err = await asyncio.to_thread(run, "deploy", "--check",
                                               str(EXAMPLES / "datacenter.yaml"))
    assert status == 0, err
    assert out.strip() == (f"{EXAMPLES / 'datacenter.yaml'}: valid; deploying it makes 27 API "
                           "calls")

    status, out, err = await asyncio.to_thread(run, "deploy", str(EXAMPLES / "simulator.yaml"))
    assert status == 0, err
    made = json.loads(out)
    assert len(err.splitlines()) == 16
    cluster = made["clusters"]["cluster1"]
    hosts = (await client.call("QueryHost", q=[f"clusterUuid={cluster}", "status=Connected"],
                               sort="+name"))["inventories"]
    assert [(h["name"], h["uuid"]) for h in hosts] == sorted(made["hosts"].items())
    ps = (await client.call("QueryPrimaryStorage", q=["name=ps1"]))["inventories"][0]
    assert (ps["uuid"], ps["attachedClusterUuids"]) == (made["primaryStorage"]["ps1"], [cluster])
    l2 = (await client.call("QueryL2Network", q=["name=l2-flat"]))["inventories"][0]
    assert l2["attachedClusterUuids"] == [cluster]
    l3 = (await client.call("QueryL3Network", q=["l2Network.name=l2-flat"]))["inventories"][0]
    assert (l3["uuid"], l3["dns"], [r["startIp"] for r in l3["ipRanges"]]) == \
        (made["l3Networks"]["l3-flat"], ["8.8.8.8"], ["10.0.0.10"])
    bs = (await client.call("QueryBackupStorage", q=["name=bs1"]))["inventories"][0]
    assert bs["attachedZoneUuids"] == [made["zones"]["zone1"]]

    # Again with --skip-existing: everything is found, nothing is made twice.
    status, out, err = await asyncio.to_thread(run, "deploy", "--skip-existing",
                                               str(EXAMPLES / "simulator.yaml"))
    assert status == 0, err
    assert json.loads(out) == made
    assert all(line.split()[0] in ("exists", "done") for line in err.splitlines())
    assert (await client.call("QueryHost", count=True))["total"] == 2
    assert (await client.call("QueryL3Network", count=True))["total"] == 1
