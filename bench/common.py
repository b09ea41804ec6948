"""What the benchmarks share: a node on a fresh database, an API client, timing and output.

* :func:`fresh_database` gives a new, empty database for one run: a SQLite file, or a new
  schema (PostgreSQL) or database (MariaDB) on the server named by ``ZSTACK_TEST_POSTGRESQL_URL``
  or ``ZSTACK_TEST_MARIADB_URL``, dropped afterwards.
* :func:`node_subprocess` runs a management node as a separate process (``zstack-ctl start
  --foreground``, settings from ``ZSTACK_*`` variables), so that the numbers measure the
  server and not the clients sharing its event loop. With ``simulated_hosts=True`` it runs
  this file instead (``python bench/common.py serve``), which first gives every simulator host
  already in the database its simulated machine: hosts inserted straight into the database
  (100,000 of them take minutes through the API) then answer commands like added ones.
* :class:`Api` calls any API over HTTP as the CLI does, from the node's own description
  (``/zstack/v1/openapi.json``), and follows a ``202`` to the job's result.
* :func:`run_calls` runs calls with N concurrent clients and returns wall time and latencies;
  :func:`print_table` and :func:`print_json` print the results (the JSON object last).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
from sqlalchemy import create_engine, make_url, text

from zcore.cli import API_ROOT, TAG_PARAMS, ApiSpec, Catalog

START_TIMEOUT = 300.0
POLL_FIRST = 0.002
POLL_MAX = 0.5
#: A poll waits at most this share of the time the job has run so far.
POLL_SHARE = 0.1
LOG_LEVEL = "WARNING"  # a log line per request would be part of what is measured
#: Where ``--db postgresql`` and ``--db mariadb`` find a server (a database the user may
#: create schemas or databases in).
DB_ENV = {"postgresql": "ZSTACK_TEST_POSTGRESQL_URL", "mariadb": "ZSTACK_TEST_MARIADB_URL"}
#: MariaDB through MySQL's C client when it is installed (``pip install -e .[mysqlclient]``),
#: as a production node would use it, else through pymysql.
_MYSQL_DRIVER = "mysqldb" if importlib.util.find_spec("MySQLdb") else "pymysql"
DB_DEFAULTS = {
    "postgresql": "postgresql+psycopg://zstack:zstack@127.0.0.1:5432/zstack_test",
    "mariadb": f"mysql+{_MYSQL_DRIVER}://zstack:zstack@127.0.0.1:3306/zstack_test",
}

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_uuid() -> str:
    return uuidlib.uuid4().hex


# --------------------------------------------------------------------------- databases


@contextmanager
def fresh_database(kind: str, directory: Path) -> Iterator[str]:
    """The URL of a new empty database of ``kind`` (``sqlite``, ``postgresql``, ``mariadb``).

    SQLite: a file in ``directory``. PostgreSQL: a new schema (``search_path`` in the URL's
    options), MariaDB: a new database, on the server of :data:`DB_ENV`; dropped on exit.
    """
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'zstack.db'}"
        return
    if kind not in DB_ENV:
        raise SystemExit(f"unknown database {kind!r}: sqlite, postgresql or mariadb")
    base = make_url(os.environ.get(DB_ENV[kind]) or DB_DEFAULTS[kind])
    name = f"zbench_{new_uuid()[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    create, drop = (("CREATE SCHEMA {}", "DROP SCHEMA IF EXISTS {} CASCADE")
                    if kind == "postgresql" else
                    ("CREATE DATABASE {} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                     "DROP DATABASE IF EXISTS {}"))
    try:
        with engine.connect() as conn:
            conn.execute(text(create.format(name)))
    except Exception as exc:  # noqa: BLE001 - any failure: say which server and why
        engine.dispose()
        raise SystemExit(f"cannot create a {kind} database on {base!r} (set "
                         f"{DB_ENV[kind]}): {exc}") from None
    if kind == "postgresql":
        url = base.update_query_dict({"options": f"-csearch_path={name}"})
    else:
        url = base.set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(drop.format(name)))
            if kind == "postgresql":
                # A schema's tables leave dead rows in these catalogs when it is dropped;
                # run after run they would slow the server's every catalog lookup down.
                conn.execute(text(f"VACUUM {', '.join(_PG_CATALOGS)}"))
        engine.dispose()


#: The PostgreSQL catalogs that creating and dropping a schema of tables fills.
_PG_CATALOGS = tuple(f"pg_catalog.{t}" for t in (
    "pg_class", "pg_attribute", "pg_type", "pg_depend", "pg_index", "pg_constraint",
    "pg_attrdef", "pg_sequence", "pg_namespace"))


def dialect_of(db_url: str) -> str:
    return db_url.split(":", 1)[0].split("+", 1)[0]


# --------------------------------------------------------------------------- the node


@asynccontextmanager
async def node_subprocess(data_dir: Path, db_url: str, *, simulated_hosts: bool = False,
                          port: int | None = None,
                          profile: Path | None = None) -> AsyncIterator[str]:
    """A node serving ``db_url`` in a separate process; yields its URL, stops it on exit.

    ``profile``: run the node under cProfile and write its statistics there when it stops.
    """
    port = port or free_port()
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    if simulated_hosts:
        command += [str(Path(__file__).resolve()), "serve"]
    else:
        command += ["-m", "zcore.ctl", "start", "--foreground"]
    env = {**os.environ,
           "ZSTACK_NODE_DATA_DIR": str(data_dir), "ZSTACK_NODE_HOST": "127.0.0.1",
           "ZSTACK_NODE_PORT": str(port), "ZSTACK_DATABASE_URL": db_url,
           "ZSTACK_LOG_LEVEL": LOG_LEVEL}
    log_path = data_dir / "node.log"
    url = f"http://127.0.0.1:{port}"
    process = _spawn(command, env, log_path)
    try:
        await _wait_healthy(url, process, log_path)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_out:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_out,
                                stderr=subprocess.STDOUT)


async def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
                raise SystemExit(f"the node exited with status {process.returncode} "
                                 "before it served:\n" + "\n".join(tail))
            try:
                async with http.get(f"{url}/health") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the node did not answer on {url} within {START_TIMEOUT:.0f} s; "
                     f"see {log_path}")


def _serve() -> None:
    """``python bench/common.py serve``: ``zstack-ctl start --foreground`` whose simulator
    knows every simulator host of the database (settings from ``ZSTACK_*`` variables)."""
    import logging

    from zcore.config import load_settings
    from zcore.node import check, serve
    from zplugins.simulator.hosts import SIMULATOR

    settings = load_settings()
    logging.basicConfig(level=settings.log.level, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    plugins = check(settings)
    engine = create_engine(str(settings.database.url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                'SELECT uuid, "cpuNum", "cpuSockets", "totalMemoryCapacity" FROM "HostVO" '
                "WHERE \"hypervisorType\" = 'Simulator'"
                if engine.dialect.name != "mysql" else
                "SELECT uuid, cpuNum, cpuSockets, totalMemoryCapacity FROM HostVO "
                "WHERE hypervisorType = 'Simulator'")).all()
    except Exception:  # noqa: BLE001 - a database not migrated yet has no host
        rows = []
    finally:
        engine.dispose()
    for uuid, cpu_num, sockets, memory in rows:
        SIMULATOR.add_host(uuid, cpu_num or 1, memory, cpu_sockets=sockets or 1)
    asyncio.run(serve(settings, plugins=plugins))


# --------------------------------------------------------------------------- the client


class CallFailed(Exception):
    pass


class Api:
    """Calls APIs by name over HTTP, as ``zstack-cli`` does, with one shared session."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.base = f"{url}{API_ROOT}"
        self.catalog = Catalog()
        self.session: str | None = None
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    async def start(self, *, account: str = "admin", password: str = "password") -> None:
        """Read the node's description of its APIs and log in."""
        async with self.http.get(f"{self.base}/openapi.json") as reply:
            self.catalog = Catalog.from_openapi(_decode(await reply.read()))
        self.session = await self.login(account, password)
        self.headers = {"Authorization": f"OAuth {self.session}",
                        "Content-Type": "application/json"}

    def with_session(self, session: str) -> Api:
        """This client (connections, catalog) calling with another session."""
        other = Api(self.http, self.base.removesuffix(API_ROOT))
        other.catalog = self.catalog
        other.session = session
        other.headers = {"Authorization": f"OAuth {session}", "Content-Type": "application/json"}
        return other

    async def login(self, account: str = "admin", password: str = "password") -> str:
        """A new session's uuid (``LogInByAccount``)."""
        body = {"logInByAccount": {"accountName": account,
                                   "password": hashlib.sha512(password.encode()).hexdigest()}}
        async with self.http.put(f"{self.base}/accounts/login", data=_encode(body),
                                 headers={"Content-Type": "application/json"}) as reply:
            data = _decode(await reply.read())
            if reply.status != 200:
                raise CallFailed(f"LogInByAccount: HTTP {reply.status}: {data}")
        session: str = data["inventory"]["uuid"]
        return session

    def request(self, api: str, params: dict[str, Any]) -> tuple[str, str, bytes | None]:
        """Method, URL and body of a call of ``api`` with ``params``."""
        spec: ApiSpec = self.catalog.api(api)
        values = dict(params)
        path = spec.path
        for var in spec.path_variables:
            path = path.replace(f"{{{var}}}", quote(str(values.pop(var)), safe=""))
        url = f"{self.base}{path}"
        if spec.method in ("GET", "DELETE"):
            pairs: list[tuple[str, str]] = []
            for key, value in values.items():
                items = value if isinstance(value, list) else [value]
                pairs += [(key, _scalar(item)) for item in items]
            if pairs:
                url += "?" + "&".join(f"{quote(k)}={quote(v, safe=',')}" for k, v in pairs)
            return spec.method, url, None
        if spec.method == "POST":
            tags = {t: values.pop(t) for t in TAG_PARAMS if t in values}
            return spec.method, url, _encode({spec.envelope or "params": values, **tags})
        return spec.method, url, _encode({spec.action_key: values})

    async def call(self, api: str, **params: Any) -> Any:
        """Call ``api``; its result (after the job, for an async API); CallFailed if it
        failed."""
        method, url, body = self.request(api, params)
        async with self.http.request(method, url, data=body, headers=self.headers) as reply:
            status, raw = reply.status, await reply.read()
        if status == 200:
            return _decode(raw)
        if status != 202:
            raise CallFailed(f"{api}: HTTP {status}: {raw[:500]!r}")
        location = _decode(raw)["location"]
        started = time.perf_counter()
        delay = POLL_FIRST
        while True:
            await asyncio.sleep(delay)
            async with self.http.get(location) as reply:
                status, raw = reply.status, await reply.read()
            if status == 200:
                return _decode(raw)
            if status != 202:
                raise CallFailed(f"{api}: the job answered HTTP {status}: {raw[:500]!r}")
            # Doubling, but never more than a tenth of the time waited so far (the answer
            # comes at most about 10% late) nor more than POLL_MAX.
            waited = time.perf_counter() - started
            delay = min(delay * 2, max(POLL_FIRST, waited * POLL_SHARE), POLL_MAX)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@asynccontextmanager
async def api_client(url: str, *, connections: int = 200) -> AsyncIterator[Api]:
    """An :class:`Api` logged in as admin, with up to ``connections`` open connections."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        api = Api(http, url)
        await api.start()
        yield api


# --------------------------------------------------------------------------- the cloud


def cloud_spec(hosts: int, image_url: str) -> dict[str, Any]:
    """A :mod:`zcore.deploy` description: one zone, one simulator cluster of ``hosts`` hosts
    (64 CPUs, 256 GiB each), simulator primary and backup storage of 1 PiB, a flat L2 with one
    L3 whose IP range is a /16 (65,000 addresses), a 1 MiB image and a 1-CPU 64 MiB offering.
    """
    return {
        "zones": [{
            "name": "zone1",
            "backupStorage": [{"name": "bs1", "type": "Simulator", "url": "/sim/bs1",
                               "totalCapacity": "1024T", "availableCapacity": "1024T"}],
            "primaryStorage": [{"name": "ps1", "type": "Simulator", "url": "/sim/ps1",
                                "totalCapacity": "1024T", "availableCapacity": "1024T"}],
            "l2Networks": [{
                "name": "l2", "type": "L2NoVlanNetwork", "physicalInterface": "eth0",
                "l3Networks": [{"name": "l3", "ipRanges": [
                    {"startIp": "10.0.0.10", "endIp": "10.0.255.250",
                     "netmask": "255.255.0.0", "gateway": "10.0.0.1"}], "dns": ["8.8.8.8"]}],
            }],
            "clusters": [{
                "name": "cluster1", "hypervisorType": "Simulator",
                "primaryStorage": ["ps1"], "l2Networks": ["l2"],
                "hosts": [{"name": f"host{i}", "managementIp": host_ip(i), "cpuCapacity": 64,
                           "memoryCapacity": "256G"} for i in range(hosts)],
            }],
        }],
        "images": [{"name": "image1", "url": image_url, "format": "qcow2",
                    "mediaType": "RootVolumeTemplate", "platform": "Linux",
                    "backupStorage": ["bs1"]}],
        "instanceOfferings": [{"name": "tiny", "cpuNum": 1, "memorySize": "64M"}],
    }


def host_ip(i: int) -> str:
    """The management IP of the ``i``-th simulator host (up to 16 million of them)."""
    i += 1
    return f"172.{16 + i // 65536}.{i // 256 % 256}.{i % 256}"


def image_file(directory: Path) -> str:
    """The ``file://`` URL of a 1 MiB image the simulated backup storage downloads."""
    path = directory / "image1.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(1024 * 1024 - 4))
    return path.as_uri()


async def deploy_cloud(api: Api, spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Build ``spec`` through the API; the uuids by kind and name."""
    from zcore.deploy import deploy

    deployment = await deploy(spec, api)
    return deployment.to_dict()


# --------------------------------------------------------------------------- direct rows


class VmRows:
    """The database rows of one VM (VM, root volume, NIC, IP, their ResourceVO rows) made
    from those of a VM the node created, for inserting VMs straight with SQLAlchemy Core.

    :meth:`insert` writes VMs ``i`` in one transaction each, with the capacity updates the
    node makes (host CPU and memory, primary storage capacity): the database work of a
    creation without the node. :meth:`bulk` writes many VMs per transaction, to fill a
    database fast. IPs are ``11.x.y.z`` (outside the L3's range, so they never collide with
    the node's), MACs and names unique by ``i``.
    """

    TABLES = ("ResourceVO", "VmInstanceVO", "VolumeVO", "VmNicVO", "UsedIpVO",
              "HostVO", "PrimaryStorageVO", "UserTagVO")

    def __init__(self, engine: Any, vm_uuid: str) -> None:
        from sqlalchemy import MetaData, Table, select

        self.engine = engine
        meta = MetaData()
        self.t: dict[str, Table] = {n: Table(n, meta, autoload_with=engine) for n in self.TABLES}
        t = self.t
        with engine.connect() as conn:
            def one(table: str, column: str, value: str) -> dict[str, Any]:
                row = conn.execute(select(t[table]).where(t[table].c[column] == value)).first()
                if row is None:
                    raise SystemExit(f"no {table} row with {column}={value}")
                return dict(row._mapping)

            self.vm = one("VmInstanceVO", "uuid", vm_uuid)
            self.volume = one("VolumeVO", "uuid", self.vm["rootVolumeUuid"])
            self.nic = one("VmNicVO", "vmInstanceUuid", vm_uuid)
            self.ip = one("UsedIpVO", "vmNicUuid", self.nic["uuid"])
            self.resources = {u: one("ResourceVO", "uuid", u)
                              for u in (vm_uuid, self.volume["uuid"], self.nic["uuid"])}

    def rows(self, i: int, host_uuid: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The rows of VM number ``i`` (on ``host_uuid``, or the template's host)."""
        vm_uuid, volume_uuid, nic_uuid, ip_uuid = (new_uuid() for _ in range(4))
        ip_long = (11 << 24) + i
        ip = f"11.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        name = f"bench-vm-{i}"
        vm = {**self.vm, "uuid": vm_uuid, "name": name, "rootVolumeUuid": volume_uuid}
        if isinstance(vm["createDate"], datetime):  # distinct, for sorting by createDate
            vm["createDate"] = vm["createDate"] + timedelta(milliseconds=i)
        if host_uuid is not None:
            vm["hostUuid"] = vm["lastHostUuid"] = host_uuid
        volume = {**self.volume, "uuid": volume_uuid, "vmInstanceUuid": vm_uuid,
                  "name": f"ROOT-for-{name}",
                  "installPath": f"/sim/ps1/rootVolumes/vol-{volume_uuid}/{volume_uuid}.qcow2"}
        nic = {**self.nic, "uuid": nic_uuid, "vmInstanceUuid": vm_uuid, "ip": ip,
               "mac": f"fa:{i >> 32 & 255:02x}:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:"
                      f"{i >> 8 & 255:02x}:{i & 255:02x}",
               "internalName": f"vnic{vm_uuid[:8]}.0"}
        used = {**self.ip, "uuid": ip_uuid, "vmNicUuid": nic_uuid, "ip": ip,
                "ipInLong": ip_long}
        resources = [{**self.resources[old], "uuid": new, "resourceName": res_name}
                     if "resourceName" in self.resources[old] else
                     {**self.resources[old], "uuid": new}
                     for old, new, res_name in ((self.vm["uuid"], vm_uuid, name),
                                                (self.volume["uuid"], volume_uuid,
                                                 volume["name"]),
                                                (self.nic["uuid"], nic_uuid, None))]
        return {"ResourceVO": resources, "VmInstanceVO": [vm], "VolumeVO": [volume],
                "VmNicVO": [nic], "UsedIpVO": [used]}

    def insert(self, indexes: range, host_uuid: str | None = None) -> float:
        """Insert VMs ``indexes`` one transaction each, capacity updated; the seconds taken."""
        t = self.t
        host, ps = t["HostVO"], t["PrimaryStorageVO"]
        host_uuid = host_uuid or self.vm["hostUuid"]
        cpu, memory, size = self.vm["cpuNum"], self.vm["memorySize"], self.volume["size"]
        take_host = host.update().where(host.c.uuid == host_uuid).values(
            availableCpuCapacity=host.c.availableCpuCapacity - cpu,
            availableMemoryCapacity=host.c.availableMemoryCapacity - memory)
        take_ps = ps.update().where(ps.c.uuid == self.volume["primaryStorageUuid"]).values(
            availableCapacity=ps.c.availableCapacity - size)
        batches = [self.rows(i, host_uuid) for i in indexes]
        start = time.perf_counter()
        with self.engine.connect() as conn:
            for rows in batches:
                with conn.begin():
                    for table in ("ResourceVO", "VmInstanceVO", "VolumeVO", "VmNicVO",
                                  "UsedIpVO"):
                        conn.execute(t[table].insert(), rows[table])
                    conn.execute(take_host)
                    conn.execute(take_ps)
        return time.perf_counter() - start

    def bulk(self, indexes: range, *, hosts: Sequence[str] = (), batch: int = 2000,
             user_tag: Callable[[int], str | None] = lambda i: None) -> None:
        """Insert VMs ``indexes`` quickly, ``batch`` per transaction, spread over ``hosts``;
        ``user_tag(i)`` gives VM ``i`` a user tag (or none). No capacity is taken."""
        t = self.t
        tag_template: dict[str, Any] = {}
        with self.engine.begin() as conn:
            for start in range(indexes.start, indexes.stop, batch):
                chunk: dict[str, list[dict[str, Any]]] = {n: [] for n in self.TABLES}
                for i in range(start, min(start + batch, indexes.stop)):
                    host = hosts[i % len(hosts)] if hosts else None
                    for table, rows in self.rows(i, host).items():
                        chunk[table] += rows
                    tag = user_tag(i)
                    if tag is not None:
                        vm = chunk["VmInstanceVO"][-1]
                        tag_template = {"uuid": new_uuid(), "resourceUuid": vm["uuid"],
                                        "resourceType": "VmInstanceVO", "tag": tag,
                                        "type": "User", "createDate": vm["createDate"],
                                        "lastOpDate": vm["lastOpDate"]}
                        chunk["UserTagVO"].append({c.name: tag_template.get(c.name)
                                                   for c in t["UserTagVO"].c})
                for table in ("ResourceVO", "VmInstanceVO", "VolumeVO", "VmNicVO",
                              "UsedIpVO", "UserTagVO"):
                    if chunk[table]:
                        conn.execute(t[table].insert(), chunk[table])


# --------------------------------------------------------------------------- timing


async def run_calls(label: str, count: int, clients: int,
                    call: Callable[[int], Awaitable[Any]]) -> dict[str, Any]:
    """``count`` calls of ``call(i)`` by ``clients`` workers; wall time and latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            start = time.perf_counter()
            try:
                await call(i)
            except (TimeoutError, CallFailed, aiohttp.ClientError, KeyError,
                    msgspec.DecodeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(clients, count))))
    elapsed = time.perf_counter() - start
    return {"what": label, "count": count, "clients": clients, "seconds": round(elapsed, 3),
            "per_second": round(count / elapsed, 1), **latency_summary(latencies),
            "errors": len(errors), "first_errors": errors[:3]}


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2)}


def percentile(ordered: Sequence[float], pct: float) -> float:
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# --------------------------------------------------------------------------- output


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """``columns``: (key, heading, format spec such as ``>9.2f``); the first is left-aligned."""
    widths = [max(len(heading), 8) for _, heading, _ in columns]
    cells = [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    for line in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    head = [h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
            for i, (_, h, _) in enumerate(columns)]
    print("  ".join(head))
    for line in cells:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(line)))


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    try:
        return format(value, fmt.lstrip("<>"))
    except (TypeError, ValueError):
        return str(value)


def print_json(result: dict[str, Any]) -> None:
    """The results as one JSON object on the last line of the output."""
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit("usage: python bench/common.py serve  (settings from ZSTACK_* "
                         "variables)")
    _serve()
