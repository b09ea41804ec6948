"""The workflow engine: YAML chains of named steps that roll back on failure.

A chain is a YAML file under ``flows/`` listing step names; plugins provide the steps
(:class:`zcore.records.FlowStep`) and may insert theirs before or after a named anchor
(:class:`zcore.records.FlowInsertion`). :class:`FlowEngine` resolves and validates every
chain once, at start-up; :meth:`FlowEngine.run` then runs one against a shared
:class:`FlowContext`. When a step fails, that step and every step that ran before it roll
back, newest first, and the caller gets a :class:`FlowError` that carries the step name, the
code of the cause and the cause chain.

A chain file is either a plain list of step names::

    - select-backup-storage
    - allocate-host

or a mapping that also documents the chain and names the context keys a caller must give::

    description: Create a VM and everything it needs
    inputs: [vm, image_uuid]
    plugins: [compute, storage, network]
    steps:
      - select-backup-storage
      - allocate-host

``plugins`` names plugins the chain's steps come from: the chain exists only on a node where
all of them are enabled (a distribution's ``flows/`` may then hold chains for plugins that
a node leaves out), and insertions into a chain that does not exist are ignored.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, NoReturn

import yaml

from zcore.errors import INVALID_ARGUMENT, OPERATION_ERROR, StartupError, ZError
from zcore.records import FlowChainFile, FlowInsertion

__all__ = [
    "Chain",
    "ChainSpec",
    "FlowContext",
    "FlowEngine",
    "FlowError",
    "FlowStats",
    "SoftError",
    "Step",
    "load_chain_file",
    "parse_chain",
]

logger = logging.getLogger(__name__)

#: A done/error/finally handler; it may be a plain function or return an awaitable.
Handler = Callable[..., Awaitable[Any] | None]


class FlowContext:
    """The state of one run of a chain, handed to every step.

    ``data`` is the shared context: a step reads what it ``requires`` from it and writes what
    it ``provides`` to it; ``ctx["key"]``, ``ctx.get("key")`` and ``"key" in ctx`` go to it.
    The dict the caller passed to :meth:`FlowEngine.run` is used as it is, not copied, so the
    caller sees what the steps wrote even when the chain fails.

    ``services`` is whatever the caller passed (the node), for steps that need the database,
    the bus or a driver. The lists record what happened, in order: ``ran`` every step whose
    ``run`` was entered (a step that failed included), ``skipped`` every step whose ``skip``
    said so, ``rolled_back`` every step whose ``rollback`` was called (one that failed
    included), ``soft_errors`` the :class:`SoftError` steps raised. ``error`` is the
    :class:`FlowError` once the chain has failed, so an ``on_finally`` handler can tell.
    """

    __slots__ = ("chain", "data", "error", "ran", "rolled_back", "services", "skipped",
                 "soft_errors")

    def __init__(self, chain: str, data: dict[str, Any], services: Any = None) -> None:
        self.chain = chain
        self.data = data
        self.services = services
        self.ran: list[str] = []
        self.rolled_back: list[str] = []
        self.skipped: list[str] = []
        self.soft_errors: list[ZError] = []
        self.error: FlowError | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __repr__(self) -> str:
        return (f"<FlowContext chain={self.chain!r} ran={self.ran} skipped={self.skipped} "
                f"rolled_back={self.rolled_back} keys={sorted(self.data)}>")


class Step:
    """Base class for a workflow step. Subclass and override :meth:`run` (and :meth:`rollback`).

    One instance serves every run of every chain that names it, possibly concurrently, so
    keep per-run state in the context, never on ``self``. Declare the context keys the step
    reads in ``requires`` and those it sets in ``provides``: at start-up each chain is checked
    so that everything a step requires is an input of the chain or provided by an earlier step.

    Example::

        class AllocateHost(Step):
            requires = ("vm",)
            provides = ("host_uuid",)

            async def run(self, ctx):
                ctx["host_uuid"] = await ctx.services.allocator.allocate(ctx["vm"])

            async def rollback(self, ctx):
                if "host_uuid" in ctx:
                    await ctx.services.allocator.release(ctx["host_uuid"])
    """

    #: Context keys that must exist before ``run`` is called.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Context keys that ``run`` sets.
    provides: ClassVar[tuple[str, ...]] = ()

    async def run(self, ctx: FlowContext) -> None:
        """Do the work. Raise to fail the chain; raise :class:`SoftError` to note a failure
        that should not stop it."""
        raise NotImplementedError(f"{type(self).__qualname__} must override Step.run")

    async def rollback(self, ctx: FlowContext) -> None:
        """Undo what :meth:`run` did. Called for the failing step too, so ``run`` may have
        stopped half-way: undo only what the context shows was done. Default: nothing."""

    def skip(self, ctx: FlowContext) -> bool:
        """Return True to leave the step out of this run: it neither runs nor rolls back."""
        return False


class SoftError(ZError):
    """Raised by a step to record a non-fatal failure.

    The chain goes on, the error lands in :attr:`FlowContext.soft_errors` (its ``location``
    set to the step name if it had none) and the step counts as done: it is rolled back if a
    later step fails.
    """


class FlowError(ZError):
    """A chain failed.

    ``code`` is the code of the failing cause (``SYS.1000`` for a plain exception),
    ``location`` and ``step`` the name of the failing step, ``cause`` the step's error as a
    :class:`ZError` (see :meth:`ZError.wrap`; the original exception is also ``__cause__``).
    ``chain`` is the chain name, ``context`` the :class:`FlowContext` of the run, and
    ``rollback_errors`` lists ``(step name, error)`` for every rollback that failed in turn.
    """

    def __init__(
        self,
        chain: str,
        step: str,
        cause: ZError,
        context: FlowContext,
        rollback_errors: Iterable[tuple[str, ZError]] = (),
    ) -> None:
        self.chain = chain
        self.step = step
        self.context = context
        self.rollback_errors: list[tuple[str, ZError]] = list(rollback_errors)
        details = str(cause)
        if self.rollback_errors:
            failed = ", ".join(f"{name!r} ({err})" for name, err in self.rollback_errors)
            details += f"; the rollback of {len(self.rollback_errors)} step(s) failed too: {failed}"
        super().__init__(cause.code, f"flow chain {chain!r} failed at step {step!r}", details,
                         cause=cause, location=step)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZError:
        """A FlowError crosses the wire as a plain :class:`ZError`."""
        return ZError.from_dict(data)


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """A chain as written: its name, its step names in order, and what the caller must give.

    ``path`` is the file it came from, if any. :class:`FlowEngine` turns specs into
    :class:`Chain` objects, applying insertions and resolving step names.
    """

    name: str
    steps: tuple[str, ...]
    inputs: frozenset[str] = frozenset()
    description: str = ""
    path: Path | None = None
    plugins: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Chain:
    """A resolved chain: insertions applied, every step name bound to its :class:`Step`."""

    name: str
    steps: tuple[tuple[str, Step], ...]
    inputs: frozenset[str]
    description: str

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)


@dataclass(slots=True)
class FlowStats:
    """Plain counters since the engine was built (a metrics plugin reads them)."""

    chains_run: int = 0
    chains_failed: int = 0
    steps_run: int = 0
    steps_rolled_back: int = 0


# --- chain files -------------------------------------------------------------------------------

_CHAIN_KEYS = ("description", "inputs", "plugins", "steps")


def _names_list(what: str, raw: Any, problems: list[str]) -> list[str]:
    """Check that ``raw`` is a list of unique non-empty strings; note every problem."""
    if not isinstance(raw, list):
        problems.append(f"{what} must be a list of names, not {type(raw).__name__} {raw!r}")
        return []
    names: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(raw, 1):
        if not isinstance(item, str) or not item.strip():
            problems.append(f"{what} item #{i} is {type(item).__name__} {item!r}, "
                            "not a name")
        elif item in seen:
            problems.append(f"{what} names {item!r} more than once")
        else:
            seen.add(item)
            names.append(item)
    return names


def parse_chain(name: str, raw: Any, *, path: Path | None = None) -> ChainSpec:
    """Validate the loaded YAML of a chain and return its :class:`ChainSpec`.

    ``raw`` is a list of step names, or a mapping with ``steps`` and optionally
    ``description`` and ``inputs``. Raise :class:`StartupError` naming the file (or the
    chain) and every problem.
    """
    problems: list[str] = []
    description = ""
    inputs: list[str] = []
    plugins: list[str] = []
    if isinstance(raw, list):
        steps = _names_list("steps", raw, problems)
    elif isinstance(raw, dict):
        unknown = [k for k in raw if k not in _CHAIN_KEYS]
        if unknown:
            problems.append(f"unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                            f"a chain mapping may hold only {', '.join(_CHAIN_KEYS)}")
        if "steps" not in raw:
            problems.append("the mapping has no 'steps' list")
        steps = _names_list("steps", raw.get("steps", []), problems)
        inputs = _names_list("inputs", raw.get("inputs", []), problems)
        plugins = _names_list("plugins", raw.get("plugins", []), problems)
        description = raw.get("description", "")
        if not isinstance(description, str):
            problems.append(f"description must be a string, not {type(description).__name__}")
            description = ""
    elif raw is None:
        problems.append("the file is empty")
        steps = []
    else:
        problems.append(f"the top level is {type(raw).__name__} {raw!r}")
        steps = []
    if not steps and not problems:
        problems.append("the chain has no steps")
    if problems:
        where = f"flow chain file {path}" if path is not None else f"flow chain {name!r}"
        raise StartupError(_problems(where, problems)
                           + "\n  expected a YAML list of step names, or a mapping "
                           "{description: str, inputs: [keys], steps: [step names]}")
    return ChainSpec(name, tuple(steps), frozenset(inputs), description.strip(), path,
                     frozenset(plugins))


def load_chain_file(path: Path | str) -> ChainSpec:
    """Read and validate a chain file; the chain is named after the file (``vm-create``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StartupError(f"flow chain file {path} cannot be read: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StartupError(f"flow chain file {path} is not valid YAML: {exc}") from exc
    return parse_chain(path.stem, raw, path=path)


def _problems(header: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{header}: {problems[0]}"
    return f"{header}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _origin(plugin: str, spec: ChainSpec) -> str:
    return f"plugin {plugin!r}" + (f" ({spec.path})" if spec.path is not None else "")


def _choices(name: str, known: Iterable[str], kind: str) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if not known:
        return f"there are no {kind}"
    return f"known {kind}: " + ", ".join(known)


# --- the engine --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What :meth:`FlowEngine.run` needs, with bound methods looked up once."""

    chain: Chain
    inputs: tuple[str, ...]
    calls: tuple[tuple[str, Callable[[FlowContext], Awaitable[None]],
                       Callable[[FlowContext], bool] | None], ...]
    rollbacks: Mapping[str, Callable[[FlowContext], Awaitable[None]]]


async def _call_handler(handler: Handler, *args: Any) -> None:
    result = handler(*args)
    if inspect.isawaitable(result):
        await result


class FlowEngine:
    """Resolves chains once at start-up and runs them.

    ``steps`` maps step names to :class:`Step` objects. ``chains`` and ``insertions`` are
    ``(providing plugin name, record)`` pairs in plugin registration order; a chain record is
    a :class:`ChainSpec` or a :class:`~zcore.records.FlowChainFile` (read here).
    ``step_providers`` maps step names to the plugin that provided each, for the messages.
    ``enabled_plugins`` are the names of the node's plugins: a chain whose ``plugins`` are not
    all among them is left out (``None``: keep every chain).

    Every chain is built and validated in the constructor; it raises :class:`StartupError`
    listing every problem, each naming the chain, the step and the plugin: a chain name
    given twice, a step name no plugin provides, an insertion into an unknown chain, next to
    an anchor that is not in the chain, of an unknown step or of a step already in the chain,
    and a step that requires a context key that is neither an input of the chain nor provided
    by an earlier step.

    Insertions next to the same anchor keep the order they were given in: after ``X``,
    ``A`` then ``B`` gives ``X, A, B``; before ``X`` it gives ``A, B, X``. An insertion may
    anchor on a step another insertion put in.
    """

    def __init__(
        self,
        *,
        steps: Mapping[str, Step],
        chains: Iterable[tuple[str, ChainSpec | FlowChainFile]],
        insertions: Iterable[tuple[str, FlowInsertion]] = (),
        step_providers: Mapping[str, str] | None = None,
        enabled_plugins: Iterable[str] | None = None,
    ) -> None:
        self.stats = FlowStats()
        self._step_providers = dict(step_providers or {})
        problems: list[str] = []
        self._malformed: set[str] = set()
        self._check_steps(steps, problems)

        specs: dict[str, tuple[str, ChainSpec]] = {}
        enabled = frozenset(enabled_plugins) if enabled_plugins is not None else None
        absent: set[str] = set()  # chains left out: a plugin they need is not enabled
        for plugin, record in chains:
            if isinstance(record, FlowChainFile):
                try:
                    spec = load_chain_file(record.path)
                except StartupError as exc:
                    problems.append(f"plugin {plugin!r}: {exc}")
                    continue
            else:
                spec = record
            if enabled is not None and not spec.plugins <= enabled:
                absent.add(spec.name)
                continue
            if spec.name in specs:
                other_plugin, other = specs[spec.name]
                problems.append(
                    f"chain {spec.name!r} is provided twice: by {_origin(other_plugin, other)} "
                    f"and by {_origin(plugin, spec)}; chain names are unique, rename one")
                continue
            specs[spec.name] = (plugin, spec)

        by_chain: dict[str, list[tuple[str, FlowInsertion]]] = {}
        for plugin, ins in insertions:
            if ins.chain in absent and ins.chain not in specs:
                continue
            if ins.chain not in specs:
                problems.append(
                    f"plugin {plugin!r} inserts step {ins.step!r} into chain {ins.chain!r}, "
                    f"which no plugin provides; {_choices(ins.chain, specs, 'chains')}")
                continue
            by_chain.setdefault(ins.chain, []).append((plugin, ins))

        plans: dict[str, _Plan] = {}
        for name, (plugin, spec) in specs.items():
            plan = self._build(plugin, spec, steps, by_chain.get(name, []), problems)
            if plan is not None:
                plans[name] = plan
        if problems:
            raise StartupError(_problems("flow chains are invalid", problems))
        self._plans = plans
        self._chains = MappingProxyType({name: plan.chain for name, plan in plans.items()})

    def _who(self, step: str) -> str:
        plugin = self._step_providers.get(step)
        return f"step {step!r} (plugin {plugin!r})" if plugin else f"step {step!r}"

    def _check_steps(self, steps: Mapping[str, Step], problems: list[str]) -> None:
        for name, step in steps.items():
            if not isinstance(step, Step):
                self._malformed.add(name)
                problems.append(f"{self._who(name)} is a {type(step).__name__}, "
                                "not a zcore.flow.Step")
                continue
            for attr in ("requires", "provides"):
                keys = getattr(step, attr)
                if not isinstance(keys, (tuple, list, frozenset)) or not all(
                        isinstance(k, str) for k in keys):
                    self._malformed.add(name)
                    problems.append(f"{self._who(name)}: {attr} must be a tuple of context "
                                    f"key names, not {keys!r} (a 1-tuple needs a comma)")
            for method in ("run", "rollback"):
                if not inspect.iscoroutinefunction(getattr(type(step), method)):
                    self._malformed.add(name)
                    problems.append(f"{self._who(name)}: {type(step).__qualname__}.{method} "
                                    "must be an 'async def'")

    def _build(
        self,
        plugin: str,
        spec: ChainSpec,
        steps: Mapping[str, Step],
        insertions: list[tuple[str, FlowInsertion]],
        problems: list[str],
    ) -> _Plan | None:
        where = f"chain {spec.name!r} (plugin {plugin!r}" + (
            f", {spec.path})" if spec.path is not None else ")")
        before_count = len(problems)
        for step_name in spec.steps:
            if step_name not in steps:
                problems.append(f"{where}: unknown step {step_name!r}; no plugin provides it; "
                                f"{_choices(step_name, steps, 'steps')}")

        # Insertions hang off their anchor; expanding the base steps depth-first then puts
        # each one next to its anchor, in the order given.
        before: dict[str, list[str]] = {}
        after: dict[str, list[str]] = {}
        inserted: dict[str, tuple[str, FlowInsertion]] = {}
        base = set(spec.steps)
        for ins_plugin, ins in insertions:
            if ins.step not in steps:
                problems.append(f"{where}: plugin {ins_plugin!r} inserts unknown step "
                                f"{ins.step!r}; {_choices(ins.step, steps, 'steps')}")
            if ins.step in base:
                problems.append(f"{where}: plugin {ins_plugin!r} inserts step {ins.step!r}, "
                                "which the chain file already lists")
                continue
            if ins.step in inserted:
                problems.append(f"{where}: step {ins.step!r} is inserted twice, by plugin "
                                f"{inserted[ins.step][0]!r} and by plugin {ins_plugin!r}")
                continue
            inserted[ins.step] = (ins_plugin, ins)
            (before if ins.before is not None else after).setdefault(ins.anchor, []).append(
                ins.step)

        order: list[str] = []

        def place(name: str) -> None:
            for other in before.get(name, ()):
                place(other)
            order.append(name)
            for other in after.get(name, ()):
                place(other)

        for name in spec.steps:
            place(name)
        placed = set(order)
        for step_name, (ins_plugin, ins) in inserted.items():
            if step_name not in placed:
                where_ = "before" if ins.before is not None else "after"
                problems.append(
                    f"{where}: plugin {ins_plugin!r} inserts step {step_name!r} {where_} "
                    f"{ins.anchor!r}, which is not in the chain; "
                    f"{_choices(ins.anchor, order, 'steps of the chain')}")

        # Every key a step requires must be an input or provided by an earlier step.
        available = set(spec.inputs)
        for name in order:
            step = steps.get(name)
            if step is None or name in self._malformed:
                continue
            for key in step.requires:
                if key in available:
                    continue
                later = [n for n in order[order.index(name) + 1:]
                         if isinstance(steps.get(n), Step) and key in steps[n].provides]
                hint = (f"; step {later[0]!r} provides it but runs later: it must come "
                        f"before {name!r}" if later else
                        f"; add it to the chain's inputs or a step that provides it before "
                        f"{name!r}")
                who = self._who(name)
                if name in inserted:
                    who += f", inserted by plugin {inserted[name][0]!r},"
                problems.append(
                    f"{where}: {who} requires {key!r}, which is "
                    "neither an input of the chain "
                    f"({', '.join(sorted(spec.inputs)) or 'no inputs'}) nor provided by an "
                    f"earlier step{hint}")
            available.update(step.provides)

        if len(problems) > before_count or not self._malformed.isdisjoint(order):
            return None
        resolved = tuple((name, steps[name]) for name in order)
        chain = Chain(spec.name, resolved, spec.inputs, spec.description)
        calls = tuple(
            (name, step.run, step.skip if type(step).skip is not Step.skip else None)
            for name, step in resolved
        )
        rollbacks = MappingProxyType({name: step.rollback for name, step in resolved})
        return _Plan(chain, tuple(sorted(spec.inputs)), calls, rollbacks)

    @property
    def chains(self) -> Mapping[str, Chain]:
        """Every resolved chain by name (read-only)."""
        return self._chains

    def __contains__(self, chain: object) -> bool:
        return chain in self._plans

    def __iter__(self) -> Iterator[str]:
        return iter(self._plans)

    async def run(
        self,
        chain: str,
        data: dict[str, Any] | None = None,
        *,
        services: Any = None,
        on_done: Handler | None = None,
        on_error: Handler | None = None,
        on_finally: Handler | None = None,
    ) -> FlowContext:
        """Run ``chain`` with ``data`` as its context and return the context.

        Steps run in order; a step whose ``skip`` returns True is recorded and passed over.
        On success ``on_done(ctx)`` then ``on_finally(ctx)`` are called. When a step raises
        (other than :class:`SoftError`), that step and then every earlier step that ran roll
        back, newest first; a rollback that raises is recorded in
        :attr:`FlowError.rollback_errors` and the others still run; then
        ``on_error(ctx, error)`` and ``on_finally(ctx)`` are called and :class:`FlowError` is
        raised. If the run is cancelled, the steps roll back the same way, ``on_finally`` is
        called and ``CancelledError`` propagates. Handlers may be plain functions or return an
        awaitable; one that raises propagates its exception (``on_finally`` still runs).

        Raise :class:`ZError` ``SYS.1006`` for an unknown chain and ``SYS.1007`` when ``data``
        lacks one of the chain's inputs; no step has run then.
        """
        plan = self._plans.get(chain)
        if plan is None:
            raise ZError(OPERATION_ERROR, "unknown flow chain",
                         f"no chain is named {chain!r}; {_choices(chain, self._plans, 'chains')}")
        if data is None:
            data = {}
        if plan.inputs:
            missing = [key for key in plan.inputs if key not in data]
            if missing:
                raise ZError(INVALID_ARGUMENT, "missing flow chain inputs",
                             f"chain {chain!r} needs {', '.join(map(repr, missing))} in its "
                             f"context; given: {', '.join(map(repr, data)) or 'nothing'}")
        ctx = FlowContext(chain, data, services)
        self.stats.chains_run += 1
        ran = ctx.ran
        failure: BaseException | None = None
        name = ""
        for name, run, skip in plan.calls:
            if skip is not None:
                try:
                    skipped = skip(ctx)
                except Exception as exc:  # noqa: BLE001 - the step fails without having run
                    failure = exc
                    break
                if skipped:
                    ctx.skipped.append(name)
                    continue
            ran.append(name)
            try:
                await run(ctx)
            except SoftError as exc:
                if exc.location is None:
                    exc.location = name
                ctx.soft_errors.append(exc)
            except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - re-raised
                failure = exc  # as FlowError, or as it is if cancelled, after the rollback
                break
        self.stats.steps_run += len(ran)
        if failure is None:
            if on_done is not None or on_finally is not None:
                try:
                    if on_done is not None:
                        await _call_handler(on_done, ctx)
                finally:
                    if on_finally is not None:
                        await _call_handler(on_finally, ctx)
            return ctx
        await self._fail(plan, ctx, name, failure, on_error, on_finally)

    async def _fail(
        self,
        plan: _Plan,
        ctx: FlowContext,
        failed_step: str,
        failure: BaseException,
        on_error: Handler | None,
        on_finally: Handler | None,
    ) -> NoReturn:
        self.stats.chains_failed += 1
        cancelled = failure if isinstance(failure, asyncio.CancelledError) else None
        rollback_errors: list[tuple[str, ZError]] = []
        for name in reversed(ctx.ran):
            ctx.rolled_back.append(name)
            try:
                await plan.rollbacks[name](ctx)
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and cancelled is None:
                    cancelled = exc  # finish rolling back, then let the cancellation through
                logger.error("flow chain %r: rollback of step %r failed", ctx.chain, name,
                             exc_info=exc)
                rollback_errors.append((name, ZError.wrap(exc, location=name)))
        self.stats.steps_rolled_back += len(ctx.rolled_back)

        cause = ZError.wrap(failure, location=failed_step)
        if cause.location is None:
            cause.location = failed_step
        error = FlowError(ctx.chain, failed_step, cause, ctx, rollback_errors)
        ctx.error = error
        logger.debug("flow chain %r failed at step %r: %s", ctx.chain, failed_step, cause)
        try:
            if on_error is not None and cancelled is None:
                await _call_handler(on_error, ctx, error)
        finally:
            if on_finally is not None:
                await _call_handler(on_finally, ctx)
        if cancelled is not None:
            raise cancelled
        raise error from failure
