"""The message bus: request/reply, deadlines, errors, events, routing across nodes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest

from zcore.bus import (
    Bus,
    Event,
    InProcessBroker,
    InProcessBus,
    Message,
    MessageRegistry,
    Reply,
    create_bus,
    current_deadline,
    deadline_scope,
    remaining_time,
)
from zcore.errors import (
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_READY,
    TIMEOUT,
    UNKNOWN_MESSAGE,
    ConfigError,
    ZError,
)

# -- messages used below ----------------------------------------------------------------------


class VmSpec(msgspec.Struct, frozen=True):
    cpuNum: int
    memorySize: int


class CreateVm(Message, frozen=True, kw_only=True):
    name: str
    spec: VmSpec
    l3NetworkUuids: list[str]
    systemTags: dict[str, str] = msgspec.field(default_factory=dict)
    ratio: float = 1.0
    start: bool = True
    description: str | None = None
    type: str = "UserVm"


class CreateVmReply(Reply, frozen=True, kw_only=True):
    uuid: str
    spec: VmSpec
    hostUuid: str | None = None


class Ping(Message, frozen=True, kw_only=True):
    text: str = ""


class Pong(Reply, frozen=True, kw_only=True):
    text: str = ""
    node: str = ""
    deadline: float | None = None


class Opaque(Message, frozen=True, kw_only=True):
    payload: Any = None


class VmStateChanged(Event, frozen=True, kw_only=True):
    vmUuid: str
    newState: str


class HostDisconnected(Event, frozen=True, kw_only=True):
    hostUuid: str


class NotJson:
    pass


MODES = [pytest.param(False, id="direct"), pytest.param(True, id="strict")]


@pytest.fixture(params=MODES)
def broker(request: pytest.FixtureRequest) -> InProcessBroker:
    return InProcessBroker(strict=request.param)


@pytest.fixture
def strict_broker() -> InProcessBroker:
    return InProcessBroker(strict=True)


@pytest.fixture
async def bus(broker: InProcessBroker) -> Any:
    bus = broker.connect("node-1")
    yield bus
    await bus.close()


def pong_service(node: str) -> Any:
    async def handle(msg: Message) -> Message | None:
        assert isinstance(msg, Ping)
        return Pong(text=msg.text, node=node, deadline=current_deadline())
    return handle


# -- request / reply --------------------------------------------------------------------------


async def test_request_reply_with_typed_fields(broker: InProcessBroker, bus: InProcessBus) -> None:
    received: list[Message] = []

    async def create(msg: Message) -> Message | None:
        received.append(msg)
        assert isinstance(msg, CreateVm)
        return CreateVmReply(uuid="a" * 32, spec=msg.spec)

    bus.register("compute", create)
    request = CreateVm(name="vm1", spec=VmSpec(cpuNum=2, memorySize=2 << 30),
                       l3NetworkUuids=["l3-a", "l3-b"], systemTags={"hostname": "web"},
                       ratio=1.5, description=None)
    reply = await bus.send("compute", request)

    assert reply == CreateVmReply(uuid="a" * 32, spec=VmSpec(cpuNum=2, memorySize=2 << 30))
    assert isinstance(reply, CreateVmReply) and isinstance(reply.spec, VmSpec)
    assert received == [request]
    # Direct delivery hands over the very object; strict mode only ever a decoded copy.
    assert (received[0] is request) is (not broker.strict)
    assert bus.stats.sent == 1 and bus.stats.handled == 1 and bus.stats.errors == 0


async def test_handler_returning_none_replies_empty_reply(bus: InProcessBus) -> None:
    async def fire_and_forget(msg: Message) -> None:
        return None

    bus.register("gc", fire_and_forget)
    reply = await bus.send("gc", Ping())
    assert type(reply) is Reply


async def test_handler_returning_a_non_message_is_an_error(bus: InProcessBus) -> None:
    async def wrong(msg: Message) -> Any:
        return {"uuid": "x"}

    bus.register("wrong", wrong)
    with pytest.raises(ZError) as info:
        await bus.send("wrong", Ping())
    assert info.value.code == INTERNAL
    assert "'wrong'" in info.value.details and "dict" in info.value.details


async def test_direct_delivery_runs_in_the_callers_task(bus: InProcessBus) -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def where(msg: Message) -> None:
        tasks.append(asyncio.current_task())

    bus.register("where", where)
    await bus.send("where", Ping())
    if bus.broker.strict:
        assert tasks[0] is not asyncio.current_task()
    else:
        assert tasks[0] is asyncio.current_task()


async def test_send_rejects_a_non_message(bus: InProcessBus) -> None:
    bus.register("svc", pong_service("node-1"))
    with pytest.raises(TypeError, match="Message instances.*dict.*'svc'"):
        await bus.send("svc", {"text": "hi"})  # type: ignore[arg-type]


async def test_duplicate_registration_on_one_bus_is_refused(bus: InProcessBus) -> None:
    bus.register("svc", pong_service("node-1"))
    with pytest.raises(ValueError, match="'svc' is already registered on node 'node-1'"):
        bus.register("svc", pong_service("node-1"))
    bus.unregister("svc")
    bus.register("svc", pong_service("node-1"))
    with pytest.raises(ValueError, match="'nope' is not registered"):
        bus.unregister("nope")


# -- deadlines --------------------------------------------------------------------------------


async def test_timeout_raises_sys_1001_and_cancels_the_handler(bus: InProcessBus) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(msg: Message) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bus.register("slow", slow)
    with pytest.raises(ZError) as info:
        await bus.send("slow", Ping(), timeout=0.05)
    err = info.value
    assert err.code == TIMEOUT
    assert "'slow'" in err.details and "Ping" in err.details
    assert err.location == "slow"
    assert started.is_set()
    await asyncio.wait_for(cancelled.wait(), 1)
    assert bus.stats.timeouts == 1


async def test_timeout_of_the_handlers_own_io_is_not_the_bus_timeout(bus: InProcessBus) -> None:
    async def agent_call(msg: Message) -> None:
        raise TimeoutError("agent did not answer")

    bus.register("agent", agent_call)
    with pytest.raises(ZError) as info:
        await bus.send("agent", Ping(), timeout=30)
    assert info.value.code == TIMEOUT
    assert "agent did not answer" in info.value.details


async def test_send_after_the_deadline_does_not_call_the_handler(bus: InProcessBus) -> None:
    calls: list[Message] = []

    async def handle(msg: Message) -> None:
        calls.append(msg)

    bus.register("svc", handle)
    with deadline_scope(0), pytest.raises(ZError) as info:
        await bus.send("svc", Ping())
    assert info.value.code == TIMEOUT
    assert calls == []


async def test_handler_runs_under_the_callers_deadline(bus: InProcessBus) -> None:
    bus.register("echo", pong_service("node-1"))
    # Transit time may make the receiver's deadline later by a hair in strict mode: only the
    # remaining time crosses, so the two nodes' clocks need not agree.
    slack = 0.05 if bus.broker.strict else 0.0
    with deadline_scope(10) as api_deadline:
        assert api_deadline is not None
        reply = await bus.send("echo", Ping(), timeout=1000)
    assert isinstance(reply, Pong) and reply.deadline is not None
    assert reply.deadline <= api_deadline + slack

    now = asyncio.get_running_loop().time()
    reply = await bus.send("echo", Ping(), timeout=5)
    assert isinstance(reply, Pong) and reply.deadline is not None
    assert now < reply.deadline <= now + 5 + slack + 0.05

    # Neither timeout nor scope: the bus's default timeout bounds the handler.
    short = bus.broker.connect("node-short", default_timeout=3)
    try:
        now = asyncio.get_running_loop().time()
        reply = await short.send("echo", Ping())
        assert isinstance(reply, Pong) and reply.deadline is not None
        assert now < reply.deadline <= now + 3 + slack + 0.05
    finally:
        await short.close()


async def test_nested_send_inherits_the_shorter_deadline(bus: InProcessBus) -> None:
    seen: dict[str, float | None] = {}

    async def front(msg: Message) -> Message | None:
        seen["front"] = current_deadline()
        # Asks for far longer than it has: it must not get it.
        return await bus.send("back", msg, timeout=1000)

    async def back(msg: Message) -> Message | None:
        seen["back"] = current_deadline()
        return Pong(text="back")

    bus.register("front", front)
    bus.register("back", back)
    slack = 0.05 if bus.broker.strict else 0.0
    reply = await bus.send("front", Ping(), timeout=2)
    assert reply == Pong(text="back")
    front_deadline, back_deadline = seen["front"], seen["back"]
    assert front_deadline is not None and back_deadline is not None
    assert back_deadline <= front_deadline + slack


async def test_nested_send_times_out_with_the_api_call(bus: InProcessBus) -> None:
    back_cancelled = asyncio.Event()

    async def front(msg: Message) -> Message | None:
        return await bus.send("back", msg, timeout=1000)

    async def back(msg: Message) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            back_cancelled.set()
            raise

    bus.register("front", front)
    bus.register("back", back)
    with deadline_scope(0.05), pytest.raises(ZError) as info:
        await bus.send("front", Ping())
    assert info.value.code == TIMEOUT
    await asyncio.wait_for(back_cancelled.wait(), 1)


async def test_send_from_a_task_spawned_by_a_handler_keeps_the_deadline(
        bus: InProcessBus) -> None:
    children: list[asyncio.Task[Message]] = []

    async def front(msg: Message) -> Message | None:
        # The child task outlives the handler's cancellation: its send needs a timer of its
        # own, not the one that guards the handler's task.
        child = asyncio.create_task(bus.send("back", msg))
        children.append(child)
        return await asyncio.shield(child)

    async def back(msg: Message) -> None:
        await asyncio.sleep(60)

    bus.register("front", front)
    bus.register("back", back)
    with pytest.raises(ZError) as info:
        await bus.send("front", Ping(), timeout=0.05)
    assert info.value.code == TIMEOUT and info.value.location == "front"
    with pytest.raises(ZError) as info:
        await asyncio.wait_for(children[0], 1)
    assert info.value.code == TIMEOUT and info.value.location == "back"


async def test_deadline_scope_shortens_and_cannot_lengthen() -> None:
    loop = asyncio.get_running_loop()
    assert current_deadline() is None and remaining_time() is None
    with deadline_scope(10) as outer:
        assert outer is not None and current_deadline() == outer
        assert 9 < outer - loop.time() <= 10
        with deadline_scope(1) as inner:
            assert inner is not None and inner < outer and current_deadline() == inner
        assert current_deadline() == outer
        with deadline_scope(100) as longer:
            assert longer == outer
        with deadline_scope(None) as same:
            assert same == outer
        remaining = remaining_time()
        assert remaining is not None and 9 < remaining <= 10
    assert current_deadline() is None


# -- errors -----------------------------------------------------------------------------------


async def test_handler_zerror_reaches_the_caller(bus: InProcessBus) -> None:
    cause = ZError("HOST.1001", "host disconnected", "host h1 does not answer pings")

    async def refuse(msg: Message) -> None:
        raise ZError("VM.1002", "cannot start the vm", "no host has 4 free cpus",
                     cause=cause, location="allocate-host", opaque={"wanted": 4})

    bus.register("compute", refuse)
    with pytest.raises(ZError) as info:
        await bus.send("compute", Ping())
    err = info.value
    assert (err.code, err.description, err.details) == (
        "VM.1002", "cannot start the vm", "no host has 4 free cpus")
    assert err.location == "allocate-host" and err.opaque == {"wanted": 4}
    assert err.cause is not None and err.cause.to_dict() == cause.to_dict()
    assert bus.stats.errors == 1


async def test_plain_exception_becomes_sys_1000(bus: InProcessBus) -> None:
    async def broken(msg: Message) -> None:
        raise ValueError("bad cpu count -1")

    bus.register("compute", broken)
    with pytest.raises(ZError) as info:
        await bus.send("compute", Ping())
    err = info.value
    assert err.code == INTERNAL
    assert "ValueError" in err.details and "bad cpu count -1" in err.details
    assert err.location == "compute"


async def test_unknown_service_names_it_and_lists_the_served_ones(bus: InProcessBus) -> None:
    bus.register("compute", pong_service("node-1"))
    bus.register("storage", pong_service("node-1"))
    with pytest.raises(ZError) as info:
        await bus.send("network", Ping())
    err = info.value
    assert err.code == UNKNOWN_MESSAGE
    assert "'network'" in err.details and "Ping" in err.details
    assert "compute, storage" in err.details


async def test_strict_mode_rejects_a_non_json_value(strict_broker: InProcessBroker) -> None:
    bus = strict_broker.connect("node-1")
    calls: list[Message] = []

    async def handle(msg: Message) -> None:
        calls.append(msg)

    bus.register("svc", handle)
    with pytest.raises(ZError) as info:
        await bus.send("svc", Opaque(payload=NotJson()))
    err = info.value
    assert err.code == INTERNAL
    assert "Opaque" in err.details and "NotJson" in err.details
    assert "JSON" in err.description
    assert calls == []
    # JSON values in an Any field are fine.
    await bus.send("svc", Opaque(payload={"a": [1, 2.5, None, True]}))
    assert calls == [Opaque(payload={"a": [1, 2.5, None, True]})]


async def test_strict_mode_rejects_a_non_json_reply(strict_broker: InProcessBroker) -> None:
    bus = strict_broker.connect("node-1")

    async def handle(msg: Message) -> Message:
        return Opaque(payload=NotJson())

    bus.register("svc", handle)
    with pytest.raises(ZError) as info:
        await bus.send("svc", Ping())
    assert info.value.code == INTERNAL
    assert "NotJson" in info.value.details and info.value.location == "svc"


# -- routing across nodes ---------------------------------------------------------------------


async def test_round_robin_across_two_nodes(broker: InProcessBroker) -> None:
    node1, node2 = broker.connect("node-1"), broker.connect("node-2")
    node1.register("compute", pong_service("node-1"))
    node2.register("compute", pong_service("node-2"))
    node1.register("host.node-1", pong_service("node-1"))
    node2.register("host.node-2", pong_service("node-2"))

    served = []
    for _ in range(4):
        reply = await node1.send("compute", Ping())
        assert isinstance(reply, Pong)
        served.append(reply.node)
    assert sorted(served) == ["node-1", "node-1", "node-2", "node-2"]
    assert served[0] != served[1] and served[1] != served[2]

    for _ in range(2):
        reply = await node1.send("host.node-2", Ping())
        assert isinstance(reply, Pong) and reply.node == "node-2"
    assert node1.stats.sent == 6 and node2.stats.sent == 0
    assert node1.stats.handled == 2 and node2.stats.handled == 4

    await node2.close()
    for _ in range(2):
        reply = await node1.send("compute", Ping())
        assert isinstance(reply, Pong) and reply.node == "node-1"
    await node1.close()


async def test_two_nodes_cannot_share_a_node_id(broker: InProcessBroker) -> None:
    broker.connect("node-1")
    with pytest.raises(ValueError, match="'node-1' is already connected"):
        broker.connect("node-1")


# -- events -----------------------------------------------------------------------------------


async def test_publish_reaches_subscribers_on_two_nodes(broker: InProcessBroker) -> None:
    node1, node2 = broker.connect("node-1"), broker.connect("node-2")
    got: list[tuple[str, Event]] = []

    async def on_node1(event: VmStateChanged) -> None:
        got.append(("node-1", event))

    def on_node2(event: VmStateChanged) -> None:
        got.append(("node-2", event))

    async def any_event(event: Event) -> None:
        got.append(("node-2 any", event))

    node1.subscribe(VmStateChanged, on_node1)
    node2.subscribe(VmStateChanged, on_node2)
    node2.subscribe(Event, any_event)
    event = VmStateChanged(vmUuid="v" * 32, newState="Running")
    await node1.publish(event)

    assert sorted(name for name, _ in got) == ["node-1", "node-2", "node-2 any"]
    assert all(e == event for _, e in got)
    await node1.publish(HostDisconnected(hostUuid="h" * 32))
    assert got[-1] == ("node-2 any", HostDisconnected(hostUuid="h" * 32))
    assert node1.stats.published == 2
    assert node1.stats.delivered_events == 1 and node2.stats.delivered_events == 3


async def test_subscriber_failures_are_logged_and_isolated(
        broker: InProcessBroker, caplog: pytest.LogCaptureFixture) -> None:
    node1, node2 = broker.connect("node-1"), broker.connect("node-2")
    got: list[str] = []

    def sync_fails(event: VmStateChanged) -> None:
        raise RuntimeError("sync subscriber broke")

    async def async_fails(event: VmStateChanged) -> None:
        raise ZError("VM.1000", "cannot record state", "database is locked")

    async def works(event: VmStateChanged) -> None:
        got.append(event.newState)

    node1.subscribe(VmStateChanged, sync_fails)
    node2.subscribe(VmStateChanged, async_fails)
    node2.subscribe(VmStateChanged, works)
    with caplog.at_level(logging.ERROR, logger="zcore.bus"):
        await node1.publish(VmStateChanged(vmUuid="v", newState="Stopped"))

    assert got == ["Stopped"]
    messages = [r.getMessage() for r in caplog.records if r.name == "zcore.bus"]
    assert len(messages) == 2
    assert any("sync_fails" in m and "'node-1'" in m and "VmStateChanged" in m
               for m in messages)
    assert any("async_fails" in m and "'node-2'" in m for m in messages)
    assert node1.stats.errors == 1 and node2.stats.errors == 1


async def test_publish_awaits_async_subscribers_concurrently(broker: InProcessBroker) -> None:
    bus = broker.connect("node-1")
    first, second = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    # Each waits for the other: only concurrent delivery lets both finish.
    async def a(event: VmStateChanged) -> None:
        first.set()
        await second.wait()
        done.append("a")

    async def b(event: VmStateChanged) -> None:
        second.set()
        await first.wait()
        done.append("b")

    bus.subscribe(VmStateChanged, a)
    bus.subscribe(VmStateChanged, b)
    await asyncio.wait_for(bus.publish(VmStateChanged(vmUuid="v", newState="Running")), 5)
    assert sorted(done) == ["a", "b"]


async def test_late_subscribers_are_cancelled_at_the_deadline(
        broker: InProcessBroker, caplog: pytest.LogCaptureFixture) -> None:
    bus = broker.connect("node-1")
    cancelled: list[str] = []
    done: list[str] = []

    def stuck(name: str) -> Any:
        async def handler(event: VmStateChanged) -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(name)
                raise
        return handler

    async def quick(event: VmStateChanged) -> None:
        done.append("quick")

    bus.subscribe(VmStateChanged, stuck("one"))
    with caplog.at_level(logging.ERROR, logger="zcore.bus"), deadline_scope(0.05):
        await bus.publish(VmStateChanged(vmUuid="v", newState="Running"))
    assert cancelled == ["one"]

    bus.subscribe(VmStateChanged, stuck("two"))
    bus.subscribe(VmStateChanged, quick)
    with caplog.at_level(logging.ERROR, logger="zcore.bus"), deadline_scope(0.05):
        await bus.publish(VmStateChanged(vmUuid="v", newState="Running"))
    await asyncio.sleep(0)
    assert sorted(cancelled) == ["one", "one", "two"] and done == ["quick"]
    assert bus.stats.timeouts == 3
    assert sum("before the deadline" in r.getMessage() for r in caplog.records) == 3


async def test_subscribers_run_under_the_publishers_deadline(broker: InProcessBroker) -> None:
    bus = broker.connect("node-1")
    seen: list[float | None] = []

    async def record(event: VmStateChanged) -> None:
        seen.append(current_deadline())

    bus.subscribe(VmStateChanged, record)
    slack = 0.05 if broker.strict else 0.0
    with deadline_scope(7) as deadline:
        assert deadline is not None
        await bus.publish(VmStateChanged(vmUuid="v", newState="Running"))
    assert seen[0] is not None and deadline - 0.05 <= seen[0] <= deadline + slack


async def test_unsubscribe_stops_delivery(broker: InProcessBroker) -> None:
    node1, node2 = broker.connect("node-1"), broker.connect("node-2")
    got: list[str] = []

    async def on_event(event: VmStateChanged) -> None:
        got.append(event.newState)

    sub = node2.subscribe(VmStateChanged, on_event)
    await node1.publish(VmStateChanged(vmUuid="v", newState="Starting"))
    sub.cancel()
    sub.cancel()
    assert not sub.active
    await node1.publish(VmStateChanged(vmUuid="v", newState="Running"))
    assert got == ["Starting"]


async def test_subscribe_and_publish_refuse_non_events(bus: InProcessBus) -> None:
    with pytest.raises(TypeError, match="Event subclasses"):
        bus.subscribe(Ping, lambda msg: None)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="Event instances"):
        await bus.publish(Ping())  # type: ignore[arg-type]


# -- lifecycle --------------------------------------------------------------------------------


async def test_close_stops_delivery(broker: InProcessBroker) -> None:
    node1, node2 = broker.connect("node-1"), broker.connect("node-2")
    got: list[str] = []

    async def on_event(event: VmStateChanged) -> None:
        got.append(event.newState)

    node2.register("host.node-2", pong_service("node-2"))
    sub = node2.subscribe(VmStateChanged, on_event)
    await node2.close()
    await node2.close()
    assert node2.closed and not sub.active and broker.nodes == ("node-1",)

    with pytest.raises(ZError) as info:
        await node1.send("host.node-2", Ping())
    assert info.value.code == UNKNOWN_MESSAGE
    await node1.publish(VmStateChanged(vmUuid="v", newState="Running"))
    assert got == []

    for call in (node2.send("svc", Ping()),
                 node2.publish(VmStateChanged(vmUuid="v", newState="Running"))):
        with pytest.raises(ZError) as info:
            await call
        assert info.value.code == NOT_READY and "'node-2'" in info.value.details
    with pytest.raises(ZError):
        node2.register("svc", pong_service("node-2"))

    # The node id is free again: a restarted node reconnects.
    node2 = broker.connect("node-2")
    node2.register("host.node-2", pong_service("node-2"))
    reply = await node1.send("host.node-2", Ping())
    assert isinstance(reply, Pong) and reply.node == "node-2"


async def test_bus_is_an_async_context_manager(broker: InProcessBroker) -> None:
    async with broker.connect("node-1") as bus:
        bus.register("svc", pong_service("node-1"))
    assert isinstance(bus, InProcessBus) and bus.closed
    assert broker.services == ()


# -- construction -----------------------------------------------------------------------------


async def test_create_bus_inproc() -> None:
    bus = create_bus("inproc://", node_id="node-1")
    assert isinstance(bus, Bus) and isinstance(bus, InProcessBus)
    assert not bus.broker.strict
    other = create_bus("inproc://", node_id="node-2", broker=bus.broker)
    bus.register("svc", pong_service("node-1"))
    reply = await other.send("svc", Ping(text="hi"))
    assert isinstance(reply, Pong) and reply.text == "hi"

    alone = create_bus("inproc://", node_id="node-1")
    assert isinstance(alone, InProcessBus) and alone.broker is not bus.broker
    strict = create_bus("inproc://?strict=1", node_id="node-1")
    assert isinstance(strict, InProcessBus) and strict.broker.strict


def test_create_bus_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(ConfigError, match="RabbitMQ bus is not available yet") as info:
        create_bus("amqp://zstack:secret@mq.example:5672/", node_id="node-1")
    assert "secret" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown scheme 'redis'.*inproc://"):
        create_bus("redis://localhost", node_id="node-1")
    with pytest.raises(ConfigError, match="strict"):
        create_bus("inproc://?strict=1", node_id="n", broker=InProcessBroker())


# -- the wire format --------------------------------------------------------------------------


def test_registry_round_trips_an_envelope() -> None:
    registry = MessageRegistry()
    msg = CreateVm(name="vm1", spec=VmSpec(cpuNum=1, memorySize=1024), l3NetworkUuids=[])
    data = registry.encode(msg, timeout=12.5)
    envelope = msgspec.json.decode(data)
    assert envelope["type"] == "CreateVm" and envelope["timeout"] == 12.5
    assert envelope["body"]["name"] == "vm1" and envelope["body"]["type"] == "UserVm"

    decoded, timeout = registry.decode(data)
    assert decoded == msg and timeout == 12.5

    # A receiver that knows the class by an explicit registration decodes it too.
    receiver = MessageRegistry()
    receiver.register(CreateVm)
    assert receiver.decode(data) == (msg, 12.5)


def test_registry_errors_are_clear() -> None:
    registry = MessageRegistry()
    data = MessageRegistry().encode(Ping(text="x"))
    with pytest.raises(ZError) as info:
        registry.decode(data)
    assert info.value.code == UNKNOWN_MESSAGE and "'Ping'" in info.value.details

    registry.register(Ping)
    bad = b'{"type": "Ping", "body": {"_type": "Ping", "text": 5}}'
    with pytest.raises(ZError) as info:
        registry.decode(bad)
    assert info.value.code == INVALID_ARGUMENT and "text" in info.value.details
    with pytest.raises(ZError) as info:
        registry.decode(b"not json")
    assert info.value.code == INVALID_ARGUMENT

    with pytest.raises(TypeError, match="not a zcore.bus.Message subclass"):
        registry.register(VmSpec)  # type: ignore[arg-type]

    class WithObject(Message, frozen=True, kw_only=True):
        thing: NotJson | None = None

    with pytest.raises(TypeError, match="non-JSON types.*NotJson"):
        registry.register(WithObject)


def test_registry_refuses_two_classes_with_one_tag() -> None:
    registry = MessageRegistry()
    registry.register(Ping)
    clash = type("Ping", (Message,), {"__module__": "plugin_b.messages"})
    with pytest.raises(ValueError, match="tag 'Ping' is claimed by both.*plugin_b.messages"):
        registry.register(clash)

    class Renamed(Message, frozen=True, kw_only=True, tag="plugin_b.Ping"):
        pass

    registry.register(Renamed)
    assert registry.decode(registry.encode(Renamed()))[0] == Renamed()
