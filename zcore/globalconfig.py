"""Global configuration: run-time settings declared by plugins, stored in the database.

Each option is declared by the plugin that reads it (:class:`~zcore.records.GlobalConfigOption`).
On start the node writes a row for every declared option that has none, refreshes the
default and description of the others, and keeps the value an operator set. Values are
stored as text, as ZStack stores them, and parsed by the option's type.

:meth:`GlobalConfig.update` validates a new value, writes it and publishes
:class:`GlobalConfigChanged` on the bus; every node's :class:`GlobalConfig` (this one
included) applies the event to its cache and calls the watchers of that option before
``update`` returns.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zcore.bus import Bus, Event, Subscription
from zcore.db import Database, GlobalConfigVO
from zcore.drivers import Drivers
from zcore.errors import INVALID_ARGUMENT, RESOURCE_NOT_FOUND, StartupError, ZError
from zcore.records import GlobalConfigOption
from zcore.registry import Provided

__all__ = ["GlobalConfig", "GlobalConfigChanged", "Watcher"]

log = logging.getLogger("zcore.globalconfig")

Watcher = Callable[[Any, Any], Awaitable[None] | None]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class GlobalConfigChanged(Event, frozen=True, kw_only=True):
    """A global configuration value changed; values are the stored text."""

    category: str
    name: str
    oldValue: str
    newValue: str


def to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse(option: GlobalConfigOption, value: Any, drivers: Drivers | None = None) -> Any:
    """``value`` (typed, or text as stored) as the option's type, checked; ZError SYS.1007."""

    def bad(why: str) -> ZError:
        return ZError(INVALID_ARGUMENT, "invalid global config value",
                      f"{option.key}: {value!r} {why}")

    kind = option.type
    typed: Any
    if kind is bool:
        if isinstance(value, bool):
            typed = value
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            typed = value.strip().lower() in _TRUE
        else:
            raise bad("is not a boolean (true or false)")
    elif kind is int:
        if isinstance(value, bool):
            raise bad("is not an integer")
        try:
            typed = int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise bad("is not an integer") from None
        if isinstance(value, float) and value != typed:
            raise bad("is not an integer")
    elif kind is float:
        if isinstance(value, bool):
            raise bad("is not a number")
        try:
            typed = float(value)
        except (TypeError, ValueError):
            raise bad("is not a number") from None
    else:
        if not isinstance(value, str):
            raise bad("is not a string")
        typed = value
    if option.choices is not None and typed not in option.choices:
        raise bad(f"is not one of {', '.join(map(to_text, option.choices))}")
    if option.min is not None and typed < option.min:
        raise bad(f"is below the minimum {option.min:g}")
    if option.max is not None and typed > option.max:
        raise bad(f"is above the maximum {option.max:g}")
    if option.driver_namespace is not None and drivers is not None:
        names = drivers.names(option.driver_namespace)
        if typed not in names:
            raise bad(f"names no driver in {option.driver_namespace}; available: "
                      f"{', '.join(names) or 'none'}")
    if option.validator is not None:
        try:
            option.validator(typed)
        except ValueError as exc:
            raise bad(f"is not valid: {exc}") from None
    return typed


class GlobalConfig:
    """The node's view of every declared option, kept current across nodes through the bus."""

    def __init__(
        self, options: Mapping[str, Provided], *, db: Database, bus: Bus, drivers: Drivers
    ) -> None:
        self._options: dict[str, GlobalConfigOption] = {k: p.record for k, p in options.items()}
        self._db = db
        self._bus = bus
        self._drivers = drivers
        self._values: dict[str, Any] = {}
        self._watchers: dict[str, list[Watcher]] = {}
        self._subscription: Subscription | None = None

    @staticmethod
    def check_declarations(options: Mapping[str, Provided], drivers: Drivers,
                           labels: Mapping[str, str] | None = None) -> None:
        """Every default must be valid for its own option; else name the plugin and the option."""
        labels = labels or {}
        problems = []
        for provided in options.values():
            option: GlobalConfigOption = provided.record
            who = labels.get(provided.plugin, f"plugin '{provided.plugin}'")
            try:
                parse(option, option.default, drivers)
            except ZError as exc:
                problems.append(f"{who}: default of {exc.details}")
            if option.driver_namespace is not None and option.driver_namespace not in \
                    drivers.namespaces:
                problems.append(f"{who}: {option.key} names driver "
                                f"namespace {option.driver_namespace}, which no active plugin "
                                "declares")
        if problems:
            raise StartupError("global configuration declarations are invalid:\n"
                               + "\n".join(f"  - {p}" for p in problems))

    def option(self, category: str, name: str) -> GlobalConfigOption:
        key = f"{category}.{name}"
        try:
            return self._options[key]
        except KeyError:
            raise ZError(RESOURCE_NOT_FOUND, "no such global config",
                         f"no global config {key}; categories: "
                         f"{', '.join(sorted({o.category for o in self._options.values()}))}"
                         ) from None

    def get(self, category: str, name: str) -> Any:
        """The current typed value; a cached read, no database access."""
        key = f"{category}.{name}"
        try:
            return self._values[key]
        except KeyError:
            return self.option(category, name).default

    async def start(self) -> None:
        """Write missing rows, load values, and follow changes made on any node."""
        stale = await self._db.run(self._sync_rows)
        for key, text in stale:
            log.warning("global config %s held %r, which is no longer valid; reset to its "
                        "default %r", key, text, to_text(self._options[key].default))
        self._subscription = self._bus.subscribe(GlobalConfigChanged, self._changed)

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def _sync_rows(self, session: Session) -> list[tuple[str, str | None]]:
        rows = {(r.category, r.name): r for r in session.scalars(select(GlobalConfigVO))}
        stale = []
        for key, option in self._options.items():
            default = to_text(option.default)
            row = rows.get((option.category, option.name))
            if row is None:
                row = GlobalConfigVO(category=option.category, name=option.name, value=default,
                                     defaultValue=default, description=option.description)
                session.add(row)
            elif row.defaultValue != default or row.description != option.description:
                row.defaultValue = default
                row.description = option.description
            try:
                self._values[key] = parse(option, row.value, self._drivers)
            except ZError:
                stale.append((key, row.value))
                row.value = default
                self._values[key] = option.default
        return stale

    async def update(self, category: str, name: str, value: Any) -> dict[str, Any]:
        """Validate and store a new value, then tell every node; returns the inventory."""
        option = self.option(category, name)
        new = to_text(parse(option, value, self._drivers))
        old, inventory = await self._db.run(self._store, option, new)
        await self._announce(option, old, new)
        return inventory

    async def reset(self, category: str, name: str) -> dict[str, Any]:
        """Set the option back to its declared default."""
        option = self.option(category, name)
        return await self.update(category, name, option.default)

    def _store(self, session: Session, option: GlobalConfigOption, new: str
               ) -> tuple[str | None, dict[str, Any]]:
        row = session.scalars(select(GlobalConfigVO).where(
            GlobalConfigVO.category == option.category, GlobalConfigVO.name == option.name)
        ).one()
        old = row.value
        row.value = new
        return old, self._inventory(row)

    async def _announce(self, option: GlobalConfigOption, old: str | None, new: str) -> None:
        # Apply locally first, so this node never serves the old value after update returns,
        # even when the bus delivers events to subscribers later.
        await self._apply(option.key, new)
        await self._bus.publish(GlobalConfigChanged(category=option.category, name=option.name,
                                                    oldValue=old or "", newValue=new))

    async def _changed(self, event: GlobalConfigChanged) -> None:
        await self._apply(f"{event.category}.{event.name}", event.newValue)

    async def _apply(self, key: str, text: str) -> None:
        option = self._options.get(key)
        if option is None:  # declared by a plugin this node does not run
            return
        new = parse(option, text, self._drivers)
        old = self._values.get(key, option.default)
        if old == new and key in self._values:
            return
        self._values[key] = new
        for watcher in list(self._watchers.get(key, ())):
            try:
                result = watcher(old, new)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("watcher of global config %s failed", key)

    def watch(self, category: str, name: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher(old, new)`` (typed values) whenever the option changes on any node.

        Returns a function that stops watching.
        """
        key = self.option(category, name).key
        self._watchers.setdefault(key, []).append(watcher)
        return lambda: self._watchers[key].remove(watcher)

    async def inventories(self) -> list[dict[str, Any]]:
        """Every stored option as ZStack's GlobalConfigInventory."""
        def read(session: Session) -> list[dict[str, Any]]:
            return [self._inventory(r) for r in
                    session.scalars(select(GlobalConfigVO).order_by(GlobalConfigVO.id))]
        return await self._db.run(read)

    @staticmethod
    def _inventory(row: GlobalConfigVO) -> dict[str, Any]:
        return {"id": row.id, "category": row.category, "name": row.name, "value": row.value,
                "defaultValue": row.defaultValue, "description": row.description}
