"""The message bus: typed messages addressed to service ids.

A service registers a handler under a service id (``compute``, ``host.<node uuid>``); anyone
holding the :class:`Bus` sends it a :class:`Message` and awaits the reply. Events
(:class:`Event`) are published to every subscriber of their type, on every management node.

Every message carries the remaining deadline of the API call that caused it: the API layer
opens a :func:`deadline_scope` per call, :meth:`Bus.send` never waits past it, and a handler
runs with :func:`current_deadline` set to it, so the work it sends onward inherits it. Nested
work cannot outlive the API call.

Messages are JSON-only by contract (their fields hold str, int, float, bool, None, lists,
dicts and nested ``msgspec.Struct`` values), because the production bus carries them between
management nodes through RabbitMQ. The in-process bus, one :class:`InProcessBroker` with a
:class:`InProcessBus` per node connected to it, delivers by a direct call: no serialization,
no extra task. A strict broker (``InProcessBroker(strict=True)``, used by the tests) sends
every message, reply, error and event across as JSON bytes, proving that nothing else would
have to cross.

Example::

    class Ping(Message, frozen=True, kw_only=True):
        text: str

    class Pong(Reply, frozen=True, kw_only=True):
        text: str

    async def handle(msg: Message) -> Message | None:
        assert isinstance(msg, Ping)
        return Pong(text=msg.text)

    bus = create_bus("inproc://", node_id="node-1")
    bus.register("echo", handle)
    with deadline_scope(30):
        reply = await bus.send("echo", Ping(text="hi"))
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec
import msgspec.inspect as msgspec_inspect

from zcore.errors import (
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_READY,
    TIMEOUT,
    UNKNOWN_MESSAGE,
    ConfigError,
    ZError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "Bus",
    "BusStats",
    "Envelope",
    "Event",
    "EventHandler",
    "Handler",
    "InProcessBroker",
    "InProcessBus",
    "Message",
    "MessageRegistry",
    "Reply",
    "Subscription",
    "create_bus",
    "current_deadline",
    "deadline_scope",
    "remaining_time",
]

logger = logging.getLogger("zcore.bus")

DEFAULT_TIMEOUT = 1800.0
"""Seconds a :meth:`Bus.send` waits when neither the caller nor the API call set a deadline."""

# The ``loop.time()`` by which the work being done now must end (None = unbounded), and the
# task whose running ``send`` already enforces it with a timer (None = not enforced). A send
# nested in a handler, in the same task and under the same deadline, needs no timer of its
# own: the enclosing one cancels the whole task at the deadline. That keeps the common case,
# dozens of nested messages per API call, to a couple of microseconds each.
_deadline: ContextVar[tuple[float, asyncio.Task[Any] | None] | None] = ContextVar(
    "zcore.bus.deadline", default=None)


# --------------------------------------------------------------------------------------------
# Messages


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="_type"):
    """The base of every bus message: requests, replies and events.

    Subclass it and declare typed fields; values must be JSON types (str, int, float, bool,
    None, ``list``, ``dict`` with str keys) or nested ``msgspec.Struct`` values, because a
    message may cross to another management node::

        class StartVm(Message, frozen=True, kw_only=True):
            vmUuid: str
            hostUuid: str | None = None

    Messages are frozen and keyword-only; msgspec gives subclasses both anyway, but type
    checkers do not infer them (PEP 681), so repeat ``frozen=True, kw_only=True``.

    On the wire a message is tagged with its class name under ``"_type"`` (not ``"type"``,
    which ZStack messages use as a field). Two classes with one name on a bus are an error,
    resolved by giving one an explicit tag (``class StartVm(Message, tag="kvm.StartVm")``).
    """


class Event(Message, frozen=True, kw_only=True):
    """The base of published events (:meth:`Bus.publish`).

    A subscription to an event class also receives its subclasses; subscribing to
    :class:`Event` itself receives every event.
    """


class Reply(Message, frozen=True, kw_only=True):
    """The base of replies. A handler returning None replies with an empty ``Reply()``.

    Failures are not replies: a handler raises :class:`~zcore.errors.ZError` and the caller
    of :meth:`Bus.send` gets it raised.
    """


_EMPTY_REPLY = Reply()

Handler = Callable[[Message], Awaitable[Message | None]]
"""A service: takes a request, returns the reply (or None for an empty :class:`Reply`)."""

EventHandler = Callable[[Event], Awaitable[None] | None]
"""An event subscriber, sync or async; what it raises is logged, never seen by the publisher."""

E = TypeVar("E", bound=Event)


# --------------------------------------------------------------------------------------------
# Deadlines


def current_deadline() -> float | None:
    """The ``loop.time()`` by which the work being done now must end; None when unbounded.

    Inside a bus handler or event subscriber this is the deadline of the message being
    handled, which is the deadline of the API call that caused it.
    """
    scope = _deadline.get()
    return None if scope is None else scope[0]


def remaining_time() -> float | None:
    """Seconds left before :func:`current_deadline` (never below 0), or None when unbounded.

    Meant for timeouts of work outside the bus (an agent HTTP call, a database retry).
    """
    scope = _deadline.get()
    if scope is None:
        return None
    return max(0.0, scope[0] - asyncio.get_running_loop().time())


@contextmanager
def deadline_scope(timeout_s: float | None) -> Iterator[float | None]:
    """Run the enclosed work under a deadline ``timeout_s`` seconds from now.

    The API layer opens one per API call. A scope can only shorten the deadline it is
    opened under, never lengthen it; ``None`` keeps the current one. Yields the effective
    deadline (``loop.time()`` based). The scope does not cancel anything by itself: the bus
    enforces it on every send, and other code can read it through :func:`current_deadline`
    or :func:`remaining_time`.
    """
    current = _deadline.get()
    scope = current
    if timeout_s is not None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        if current is None or deadline < current[0]:
            scope = (deadline, None)
    token = _deadline.set(scope)
    try:
        yield None if scope is None else scope[0]
    finally:
        _deadline.reset(token)


# --------------------------------------------------------------------------------------------
# Wire format


class Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What crosses between nodes: a message, or a reply, or an error.

    ``type`` is the message's tag and ``body`` the message itself as JSON; ``timeout`` is the
    remaining time of the deadline in seconds (remaining, so the nodes' clocks need not
    agree), None when unbounded; ``error`` is :meth:`ZError.to_dict` of a failed request.
    """

    type: str = ""
    body: msgspec.Raw = msgspec.Raw(b"null")
    timeout: float | None = None
    error: dict[str, Any] | None = None


class MessageRegistry:
    """The message classes a bus can decode, by tag.

    Messages cross as ``{"type": tag, "body": {...}, "timeout": remaining}``
    (:class:`Envelope`); the receiver picks the class by tag and decodes the body into it,
    so its fields are type-checked on the way in. There is no registry at import time: each
    broker (or, later, each RabbitMQ bus) holds one. Classes are registered explicitly
    (:meth:`register`), when subscribed to, and when a message of theirs is first encoded.
    """

    def __init__(self) -> None:
        self._by_tag: dict[str, type[Message]] = {}
        self._decoders: dict[type[Message], msgspec.json.Decoder[Any]] = {}
        self._encoder = msgspec.json.Encoder()
        self._envelope_decoder = msgspec.json.Decoder(Envelope)
        self.register(Message, Event, Reply)

    @property
    def types(self) -> tuple[type[Message], ...]:
        """The registered classes, in registration order."""
        return tuple(self._by_tag.values())

    def tag_of(self, cls: type[Message]) -> str:
        """The wire tag of ``cls``."""
        return str(cls.__struct_config__.tag)

    def register(self, *types: type[Message]) -> None:
        """Make ``types`` decodable. Registering a class twice is harmless.

        Raises TypeError for a class that is not a :class:`Message` subclass or whose fields
        are not JSON types, and ValueError when two classes claim one tag (naming both).
        """
        for cls in types:
            if cls in self._decoders:
                continue
            if not (isinstance(cls, type) and issubclass(cls, Message)):
                raise TypeError(f"{cls!r} is not a zcore.bus.Message subclass; bus messages "
                                "must subclass Message, Event or Reply")
            tag = self.tag_of(cls)
            other = self._by_tag.get(tag)
            if other is not None and other is not cls:
                raise ValueError(
                    f"message tag {tag!r} is claimed by both {_qualname(other)} and "
                    f"{_qualname(cls)}; give one an explicit tag, e.g. "
                    f"class {cls.__name__}(Message, tag='<plugin>.{cls.__name__}')")
            bad = _non_json_types(msgspec_inspect.type_info(cls))
            if bad:
                names = ", ".join(sorted({_qualname(t) for t in bad}))
                raise TypeError(f"message class {_qualname(cls)} has fields of non-JSON types "
                                f"({names}); use str, int, float, bool, None, list, dict or "
                                "nested msgspec.Struct")
            self._decoders[cls] = msgspec.json.Decoder(cls)
            self._by_tag[tag] = cls

    def encode(self, msg: Message, *, timeout: float | None = None,
               location: str | None = None) -> bytes:
        """``msg`` in an :class:`Envelope` as JSON bytes; ``timeout`` is the remaining time.

        Registers the message's class. Raises ZError ``SYS.1000`` naming the class when a
        field holds a value JSON cannot carry.
        """
        cls = type(msg)
        if cls not in self._decoders:
            self.register(cls)
        try:
            body = self._encoder.encode(msg)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ZError(
                INTERNAL, "message is not JSON-serialisable",
                f"{_qualname(cls)} cannot be encoded: {exc}; message fields must hold only "
                "str, int, float, bool, None, list, dict or nested msgspec.Struct values",
                location=location) from exc
        return self._encoder.encode(
            Envelope(type=self.tag_of(cls), body=msgspec.Raw(body), timeout=timeout))

    def encode_error(self, error: ZError) -> bytes:
        """``error`` as a failed-reply envelope; never raises."""
        try:
            return self._encoder.encode(Envelope(error=error.to_dict()))
        except (TypeError, ValueError, OverflowError) as exc:
            fallback = ZError(error.code, error.description,
                              f"{error.details} (the error itself could not be encoded: {exc})",
                              location=error.location)
            return self._encoder.encode(Envelope(error=fallback.to_dict()))

    def decode(self, data: bytes, *, location: str | None = None
               ) -> tuple[Message, float | None]:
        """The message and remaining timeout in an envelope made by :meth:`encode`.

        Raises ZError: ``SYS.1008`` for an unregistered tag (listing the registered ones),
        ``SYS.1007`` for a malformed envelope or body, and the error itself for a failed-reply
        envelope.
        """
        try:
            envelope = self._envelope_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ZError(INVALID_ARGUMENT, "malformed bus envelope", str(exc),
                         location=location) from exc
        if envelope.error is not None:
            raise ZError.from_dict(envelope.error)
        cls = self._by_tag.get(envelope.type)
        if cls is None:
            raise ZError(UNKNOWN_MESSAGE, "unknown message type",
                         f"message type {envelope.type!r} is not registered on this bus; "
                         f"registered: {_listing(self._by_tag)}; register the class with "
                         "register_types()", location=location)
        try:
            msg = self._decoders[cls].decode(envelope.body)
        except msgspec.DecodeError as exc:
            raise ZError(INVALID_ARGUMENT, "malformed message",
                         f"{_qualname(cls)}: {exc}", location=location) from exc
        return msg, envelope.timeout

    def decode_reply(self, data: bytes, *, location: str | None = None) -> Message:
        """The reply in ``data``; a failed-reply envelope is raised as its ZError."""
        return self.decode(data, location=location)[0]


def _non_json_types(info: msgspec_inspect.Type) -> list[type]:
    """Classes in a message's type tree that JSON cannot carry (msgspec ``CustomType``)."""
    found: list[type] = []
    seen: set[int] = set()

    def walk(node: object) -> None:
        if isinstance(node, tuple):
            for item in node:
                walk(item)
            return
        if isinstance(node, msgspec_inspect.Field):
            walk(node.type)
            return
        if not isinstance(node, msgspec_inspect.Type) or id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, msgspec_inspect.CustomType):
            found.append(node.cls)
            return
        for name in node.__struct_fields__:
            walk(getattr(node, name))

    walk(info)
    return found


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _listing(names: Iterable[str], limit: int = 20) -> str:
    ordered = sorted(names)
    if not ordered:
        return "(none)"
    shown = ", ".join(ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


# --------------------------------------------------------------------------------------------
# The interface


@dataclass(slots=True)
class BusStats:
    """Counters of one bus endpoint (one management node); plain ints, read them freely.

    ``sent``/``published``: send and publish calls made through this bus. ``handled``:
    requests its services received. ``delivered_events``: subscriber calls on this bus.
    ``timeouts``: sends through this bus that passed their deadline, and subscribers on this
    bus cancelled at theirs. ``errors``: other failed sends through this bus, and subscribers
    on this bus that raised.
    """

    sent: int = 0
    handled: int = 0
    published: int = 0
    delivered_events: int = 0
    timeouts: int = 0
    errors: int = 0


class Subscription:
    """A subscription made by :meth:`Bus.subscribe`; :meth:`cancel` ends it."""

    __slots__ = ("_active", "_on_cancel", "event_type", "handler", "node_id")

    def __init__(self, event_type: type[Event], handler: Callable[[Any], Awaitable[None] | None],
                 node_id: str, on_cancel: Callable[[Subscription], None]) -> None:
        self.event_type = event_type
        self.handler = handler
        self.node_id = node_id
        self._on_cancel = on_cancel
        self._active = True

    @property
    def active(self) -> bool:
        """False once cancelled or once its bus is closed."""
        return self._active

    def cancel(self) -> None:
        """Stop delivering events to the handler. Cancelling twice is harmless."""
        if self._active:
            self._active = False
            self._on_cancel(self)

    def __repr__(self) -> str:
        state = "active" if self._active else "cancelled"
        return (f"<Subscription {self.event_type.__name__} -> "
                f"{getattr(self.handler, '__qualname__', self.handler)!r} on {self.node_id!r}"
                f" {state}>")


class Bus(ABC):
    """One management node's endpoint on the message bus.

    Implementations: :class:`InProcessBus` (nodes in one process) and, later, a RabbitMQ bus
    (nodes on many machines). Build one with :func:`create_bus`; nothing about a bus is
    global, so a test can run several nodes in one process. Only JSON crosses between nodes:
    messages, replies, errors (as :meth:`ZError.to_dict`) and the remaining deadline.
    """

    node_id: str
    """The management node this endpoint belongs to."""

    stats: BusStats
    """This endpoint's counters."""

    @abstractmethod
    def register(self, service_id: str, handler: Handler) -> None:
        """Serve ``service_id`` with ``handler`` on this node.

        The same id registered on several nodes is served by them in turn (competing
        consumers on one queue); an id naming one node (``host.<node uuid>``) reaches that node
        only. Registering an id twice on one bus raises ValueError.
        """

    @abstractmethod
    def unregister(self, service_id: str) -> None:
        """Stop serving ``service_id`` on this node; ValueError if it is not served here."""

    @abstractmethod
    async def send(self, service_id: str, msg: Message, *,
                   timeout: float | None = None) -> Message:
        """Send ``msg`` to the service and return its reply.

        The deadline is the earlier of ``timeout`` seconds from now and the caller's
        :func:`current_deadline`, or the bus's default timeout when neither is set; the
        handler runs with that deadline as its :func:`current_deadline`. Raises ZError:
        ``SYS.1001`` past the deadline (the handler is cancelled), ``SYS.1008`` when no node
        serves ``service_id``, the handler's own ZError, or ``SYS.1000`` naming any other
        exception the handler raised (``location`` is the service id).
        """

    @abstractmethod
    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber of its class or a base class, on every node.

        Returns when every subscriber has finished (async ones run concurrently) or the
        deadline has passed (the late ones are cancelled); what subscribers raise is logged on
        ``zcore.bus`` and never reaches the publisher.
        """

    @abstractmethod
    def subscribe(self, event_type: type[E],
                  handler: Callable[[E], Awaitable[None] | None]) -> Subscription:
        """Call ``handler`` (sync or async) with every published event of ``event_type``.

        Subclasses of ``event_type`` are delivered too. Returns the :class:`Subscription`
        to cancel.
        """

    @abstractmethod
    def register_types(self, *types: type[Message]) -> None:
        """Make message classes decodable by this bus (see :class:`MessageRegistry`).

        A node registers every message class its plugins declare at start-up, so that a
        message from another node can be decoded before any local code has sent one.
        """

    @abstractmethod
    async def close(self) -> None:
        """Leave the bus: unregister every service and cancel every subscription.

        Afterwards, sending or publishing through this bus raises ZError ``SYS.1010``.
        Closing twice is harmless.
        """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


# --------------------------------------------------------------------------------------------
# The in-process implementation


class _Route:
    """The nodes serving one service id, taken in turn."""

    __slots__ = ("endpoints", "turn")

    def __init__(self) -> None:
        self.endpoints: list[tuple[InProcessBus, Handler]] = []
        self.turn = 0

    def pick(self) -> tuple[InProcessBus, Handler]:
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        turn = self.turn % len(endpoints)
        self.turn = turn + 1
        return endpoints[turn]


class InProcessBroker:
    """The medium that in-process buses share, as management nodes share RabbitMQ.

    ``connect(node_id)`` gives each node its :class:`InProcessBus`. With ``strict=True`` every
    message, reply, error and event crosses as JSON bytes through the broker's
    :class:`MessageRegistry`, and handlers run in a task of their own with a fresh context,
    exactly as if they were on another machine; tests use it. Without, delivery is a direct
    call in the caller's task: the production default, for speed.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.registry = MessageRegistry()
        self._buses: dict[str, InProcessBus] = {}
        self._routes: dict[str, _Route] = {}
        self._subscriptions: list[tuple[Subscription, InProcessBus]] = []
        self._targets: dict[type[Event], tuple[tuple[Subscription, InProcessBus], ...]] = {}

    @property
    def nodes(self) -> tuple[str, ...]:
        """Ids of the connected nodes."""
        return tuple(self._buses)

    @property
    def services(self) -> tuple[str, ...]:
        """Service ids served by at least one connected node, sorted."""
        return tuple(sorted(self._routes))

    def connect(self, node_id: str, *, default_timeout: float = DEFAULT_TIMEOUT
                ) -> InProcessBus:
        """A new bus endpoint for node ``node_id``; ValueError if that node is connected."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(f"node id must be a non-empty string, got {node_id!r}")
        if node_id in self._buses:
            raise ValueError(f"node {node_id!r} is already connected to this broker; "
                             f"connected: {_listing(self._buses)}")
        if default_timeout <= 0:
            raise ValueError(f"default_timeout must be positive, got {default_timeout!r}")
        bus = InProcessBus(self, node_id, default_timeout=default_timeout)
        self._buses[node_id] = bus
        return bus

    def register_types(self, *types: type[Message]) -> None:
        """Make message classes decodable on every bus of this broker."""
        self.registry.register(*types)

    # The buses call these.

    def _add_route(self, bus: InProcessBus, service_id: str, handler: Handler) -> None:
        route = self._routes.get(service_id)
        if route is None:
            route = self._routes[service_id] = _Route()
        route.endpoints.append((bus, handler))

    def _remove_route(self, bus: InProcessBus, service_id: str) -> None:
        route = self._routes.get(service_id)
        if route is None:
            return
        route.endpoints[:] = [ep for ep in route.endpoints if ep[0] is not bus]
        if not route.endpoints:
            del self._routes[service_id]

    def _add_subscription(self, sub: Subscription, bus: InProcessBus) -> None:
        self._subscriptions.append((sub, bus))
        self._targets.clear()

    def _remove_subscription(self, sub: Subscription) -> None:
        self._subscriptions[:] = [pair for pair in self._subscriptions if pair[0] is not sub]
        self._targets.clear()

    def _subscribers(self, event_type: type[Event]
                     ) -> tuple[tuple[Subscription, InProcessBus], ...]:
        targets = self._targets.get(event_type)
        if targets is None:
            targets = tuple(pair for pair in self._subscriptions
                            if issubclass(event_type, pair[0].event_type))
            self._targets[event_type] = targets
        return targets

    def _disconnect(self, bus: InProcessBus) -> None:
        if self._buses.get(bus.node_id) is bus:
            del self._buses[bus.node_id]


class InProcessBus(Bus):
    """A node's endpoint on an :class:`InProcessBroker`; made by :meth:`InProcessBroker.connect`.

    In direct mode a send awaits the handler in the caller's task under
    ``asyncio.timeout_at(deadline)``; a handler should therefore not leave context variables
    set for its caller to see (a RabbitMQ bus would not carry them). Closing stops new
    deliveries; calls already running finish.
    """

    def __init__(self, broker: InProcessBroker, node_id: str, *,
                 default_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.node_id = node_id
        self.stats = BusStats()
        self._broker = broker
        self._routes = broker._routes
        self._strict = broker.strict
        self._default_timeout = default_timeout
        self._services: dict[str, Handler] = {}
        self._subscriptions: list[Subscription] = []
        self._closed = False

    @property
    def broker(self) -> InProcessBroker:
        """The broker this bus is connected to."""
        return self._broker

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        mode = "strict" if self._strict else "direct"
        state = " closed" if self._closed else ""
        return f"<InProcessBus node={self.node_id!r} {mode}{state}>"

    # -- services

    def register(self, service_id: str, handler: Handler) -> None:
        self._check_open()
        if not isinstance(service_id, str) or not service_id:
            raise ValueError(f"service id must be a non-empty string, got {service_id!r}")
        if not callable(handler):
            raise TypeError(f"handler for service {service_id!r} must be an async callable, "
                            f"got {handler!r}")
        existing = self._services.get(service_id)
        if existing is not None:
            raise ValueError(f"service {service_id!r} is already registered on node "
                             f"{self.node_id!r} by {_qualname(existing)}; unregister it first")
        self._services[service_id] = handler
        self._broker._add_route(self, service_id, handler)

    def unregister(self, service_id: str) -> None:
        if self._services.pop(service_id, None) is None:
            raise ValueError(f"service {service_id!r} is not registered on node "
                             f"{self.node_id!r}; registered here: {_listing(self._services)}")
        self._broker._remove_route(self, service_id)

    def register_types(self, *types: type[Message]) -> None:
        self._broker.register_types(*types)

    async def send(self, service_id: str, msg: Message, *,
                   timeout: float | None = None) -> Message:
        if not isinstance(msg, Message):
            raise TypeError(f"bus messages must be zcore.bus.Message instances, got "
                            f"{type(msg).__name__} for service {service_id!r}")
        if self._closed:
            raise self._closed_error()
        stats = self.stats
        stats.sent += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        current = _deadline.get()
        task = asyncio.current_task(loop)
        if current is None:
            deadline = now + (self._default_timeout if timeout is None else timeout)
            enforced = False
        else:
            deadline, enforcer = current
            enforced = enforcer is task
            if timeout is not None and now + timeout < deadline:
                deadline = now + timeout
                enforced = False
        route = self._routes.get(service_id)
        if route is None:
            stats.errors += 1
            raise self._no_service(service_id, msg)
        if deadline <= now:
            stats.timeouts += 1
            raise _timeout_error(service_id, msg, deadline - now)
        target, handler = route.pick()
        target.stats.handled += 1
        if self._strict:
            return await self._send_strict(target, service_id, handler, msg, deadline, now)

        scope = None
        try:
            if enforced:
                # An enclosing send in this task cancels it at this very deadline.
                reply = await handler(msg)
            else:
                token = _deadline.set((deadline, task))
                scope = asyncio.timeout_at(deadline)
                try:
                    async with scope:
                        reply = await handler(msg)
                finally:
                    _deadline.reset(token)
        except ZError as exc:
            if exc.code == TIMEOUT:
                stats.timeouts += 1
            else:
                stats.errors += 1
            raise
        except TimeoutError as exc:
            if scope is not None and scope.expired():
                stats.timeouts += 1
                raise _timeout_error(service_id, msg, deadline - now) from None
            stats.errors += 1
            raise ZError.wrap(exc, location=service_id) from exc
        except Exception as exc:
            stats.errors += 1
            raise ZError.wrap(exc, location=service_id) from exc
        if reply is None:
            return _EMPTY_REPLY
        if not isinstance(reply, Message):
            stats.errors += 1
            raise _bad_reply(service_id, handler, reply)
        return reply

    async def _send_strict(self, target: InProcessBus, service_id: str, handler: Handler,
                           msg: Message, deadline: float, now: float) -> Message:
        registry = self._broker.registry
        try:
            data = registry.encode(msg, timeout=deadline - now, location=service_id)
        except ZError:
            self.stats.errors += 1
            raise
        # A fresh context: nothing of the caller's crosses but the bytes.
        task = asyncio.get_running_loop().create_task(
            target._serve(service_id, handler, data), context=contextvars.Context())
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                reply_data = await task
        except TimeoutError:
            if scope.expired():
                self.stats.timeouts += 1
                raise _timeout_error(service_id, msg, deadline - now) from None
            raise
        try:
            return registry.decode_reply(reply_data, location=service_id)
        except ZError as exc:
            if exc.code == TIMEOUT:
                self.stats.timeouts += 1
            else:
                self.stats.errors += 1
            raise

    async def _serve(self, service_id: str, handler: Handler, data: bytes) -> bytes:
        """The receiving side of a strict send: bytes in, bytes out, never raises."""
        registry = self._broker.registry
        try:
            msg, remaining = registry.decode(data, location=service_id)
        except ZError as exc:
            return registry.encode_error(exc)
        deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
        _deadline.set(None if deadline is None else (deadline, asyncio.current_task()))
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                reply = await handler(msg)
            if reply is None:
                reply = _EMPTY_REPLY
            elif not isinstance(reply, Message):
                raise _bad_reply(service_id, handler, reply)
            return registry.encode(reply, location=service_id)
        except ZError as exc:
            return registry.encode_error(exc)
        except TimeoutError as exc:
            if scope.expired():
                return registry.encode_error(_timeout_error(service_id, msg, remaining))
            return registry.encode_error(ZError.wrap(exc, location=service_id))
        except Exception as exc:  # noqa: BLE001 - any failure becomes the caller's ZError
            return registry.encode_error(ZError.wrap(exc, location=service_id))

    # -- events

    def subscribe(self, event_type: type[E],
                  handler: Callable[[E], Awaitable[None] | None]) -> Subscription:
        self._check_open()
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"can only subscribe to zcore.bus.Event subclasses, got "
                            f"{event_type!r}")
        if not callable(handler):
            raise TypeError(f"subscriber for {event_type.__name__} must be callable, "
                            f"got {handler!r}")
        self._broker.registry.register(event_type)
        sub = Subscription(event_type, handler, self.node_id, self._unsubscribe)
        self._subscriptions.append(sub)
        self._broker._add_subscription(sub, self)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
        self._broker._remove_subscription(sub)

    async def publish(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise TypeError(f"only zcore.bus.Event instances can be published, got "
                            f"{type(event).__name__}")
        if self._closed:
            raise self._closed_error()
        self.stats.published += 1
        targets = self._broker._subscribers(type(event))
        if not targets:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        current = _deadline.get()
        deadline = now + self._default_timeout if current is None else current[0]
        data: bytes | None = None
        decoded: dict[InProcessBus, Event] = {}
        if self._strict:
            data = self._broker.registry.encode(event, timeout=deadline - now)

        token = _deadline.set((deadline, None))
        try:
            pending: list[tuple[Subscription, InProcessBus, Awaitable[None]]] = []
            for sub, bus in targets:
                if not sub.active:
                    continue
                delivered = event
                if data is not None:
                    if bus not in decoded:
                        decoded[bus] = self._decode_event(data)
                    delivered = decoded[bus]
                bus.stats.delivered_events += 1
                try:
                    result = sub.handler(delivered)
                except Exception as exc:  # noqa: BLE001 - a subscriber never fails the publisher
                    bus._subscriber_failed(sub, event, exc)
                    continue
                if result is not None and inspect.isawaitable(result):
                    pending.append((sub, bus, result))
            if pending:
                await _await_subscribers(pending, event, deadline)
        finally:
            _deadline.reset(token)

    def _decode_event(self, data: bytes) -> Event:
        msg, _ = self._broker.registry.decode(data)
        assert isinstance(msg, Event)
        return msg

    def _subscriber_failed(self, sub: Subscription, event: Event, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self.stats.timeouts += 1
            logger.error("subscriber %s on node %r did not finish with %s before the deadline; "
                         "cancelled", _qualname(sub.handler), self.node_id, type(event).__name__)
            return
        self.stats.errors += 1
        logger.error("subscriber %s on node %r failed on %s", _qualname(sub.handler),
                     self.node_id, type(event).__name__, exc_info=exc)

    # -- lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for service_id in list(self._services):
            self.unregister(service_id)
        for sub in list(self._subscriptions):
            sub.cancel()
        self._broker._disconnect(self)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> ZError:
        return ZError(NOT_READY, "bus is closed",
                      f"the bus of node {self.node_id!r} was closed; it sends and serves "
                      "nothing any more", location=self.node_id)

    def _no_service(self, service_id: str, msg: Message) -> ZError:
        return ZError(UNKNOWN_MESSAGE, "no service for the message",
                      f"no node serves {service_id!r} (sending {type(msg).__name__} from node "
                      f"{self.node_id!r}); served: {_listing(self._routes)}",
                      location=service_id)


async def _await_subscribers(pending: list[tuple[Subscription, InProcessBus, Awaitable[None]]],
                             event: Event, deadline: float) -> None:
    """Await async subscribers concurrently until ``deadline``; log what fails."""
    if len(pending) == 1:
        sub, bus, awaitable = pending[0]
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                await awaitable
        except Exception as exc:  # noqa: BLE001 - a subscriber never fails the publisher
            bus._subscriber_failed(sub, event, exc)
        return
    tasks = {asyncio.ensure_future(aw): (sub, bus) for sub, bus, aw in pending}
    try:
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        done, late = await asyncio.wait(tasks, timeout=remaining)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    for task in late:
        task.cancel()
        task.add_done_callback(_discard_result)
        sub, bus = tasks[task]
        bus._subscriber_failed(sub, event, TimeoutError())
    for task in done:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            sub, bus = tasks[task]
            bus._subscriber_failed(sub, event, failure)


def _discard_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _timeout_error(service_id: str, msg: Message, waited: float | None) -> ZError:
    within = f" within {waited:.3g} s" if waited is not None and waited > 0 else ""
    return ZError(TIMEOUT, "message timed out",
                  f"service {service_id!r} did not reply to {type(msg).__name__}{within}: the "
                  "deadline of the API call that caused it passed", location=service_id)


def _bad_reply(service_id: str, handler: Handler, reply: object) -> ZError:
    return ZError(INTERNAL, "handler returned a non-message",
                  f"{_qualname(handler)} serving {service_id!r} returned "
                  f"{type(reply).__name__}; a handler returns a zcore.bus.Message or None",
                  location=service_id)


# --------------------------------------------------------------------------------------------
# Construction


def create_bus(url: str = "inproc://", *, node_id: str, broker: InProcessBroker | None = None,
               default_timeout: float = DEFAULT_TIMEOUT) -> Bus:
    """The bus endpoint of node ``node_id`` for ``url``.

    ``inproc://`` joins ``broker`` when given, else makes a new broker (pass the same broker
    to run several nodes in one process); ``inproc://?strict=1`` makes a strict one (every
    message crosses as JSON). ``amqp://`` (RabbitMQ) is not available yet. Raises
    :class:`~zcore.errors.ConfigError` for a URL it cannot serve.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # Shown in errors without the credentials an amqp:// url carries.
    shown = f"{scheme}://{parts.hostname or ''}"
    if scheme == "inproc":
        query = parse_qs(parts.query)
        strict_values = query.pop("strict", None)
        if query or parts.netloc or parts.path:
            raise ConfigError(f"bus url {url!r}: inproc:// takes only the option ?strict=1")
        strict: bool | None = None
        if strict_values:
            value = strict_values[-1].lower()
            if value not in ("1", "true", "yes", "0", "false", "no"):
                raise ConfigError(f"bus url {url!r}: strict must be 1 or 0, got {value!r}")
            strict = value in ("1", "true", "yes")
        if broker is None:
            broker = InProcessBroker(strict=bool(strict))
        elif strict is not None and strict != broker.strict:
            raise ConfigError(f"bus url {url!r} asks for strict={strict} but the broker given "
                              f"has strict={broker.strict}")
        return broker.connect(node_id, default_timeout=default_timeout)
    if scheme in ("amqp", "amqps"):
        raise ConfigError(f"bus url {shown!r}: the RabbitMQ bus is not available yet; use "
                          "inproc:// (the default) for a single management node")
    raise ConfigError(f"bus url {shown!r}: unknown scheme {scheme!r}; "
                      "valid: inproc:// (in-process), amqp:// (RabbitMQ, not available yet)")
