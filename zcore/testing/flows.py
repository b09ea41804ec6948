"""Test helpers for workflow steps and chains: recording steps and a flow runner.

A plugin author tests a step in a chain without a node::

    async def test_allocate_host_rolls_back(flow_runner, flow_recorder):
        steps = {"allocate-host": AllocateHost(), **flow_recorder.steps("boom", fail=True)}
        result = await flow_runner.run(["allocate-host", "boom"], steps, data={"vm": vm})
        assert result.rolled_back == ["boom", "allocate-host"]

or with steps that only record what happened::

    async def test_order(flow_runner):
        result = await flow_runner.run(["a", "b", "c"], fail_at="c")
        assert result.log == [("run", "a"), ("run", "b"), ("run", "c"),
                              ("rollback", "c"), ("rollback", "b"), ("rollback", "a")]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from zcore.errors import ZError
from zcore.flow import ChainSpec, FlowContext, FlowEngine, FlowError, Step, parse_chain
from zcore.records import FlowInsertion

__all__ = [
    "FlowRecorder",
    "FlowResult",
    "FlowRunner",
    "flow_recorder",
    "flow_runner",
    "recording_step",
]

#: What a recording step does instead of succeeding: True raises ``RuntimeError``; an
#: exception instance or class is raised as it is.
Failure = bool | BaseException | type[BaseException]

#: One entry of a recording log: ``("run" | "rollback", step name)``.
LogEntry = tuple[str, str]


def _raise(failure: Failure, name: str, what: str) -> None:
    if failure is False:
        return
    if failure is True:
        raise RuntimeError(f"step {name!r} {what} failed (injected by the test)")
    raise failure


class _RecordingStep(Step):
    def __init__(
        self,
        name: str,
        log: list[LogEntry],
        requires: Sequence[str],
        provides: Sequence[str],
        fail: Failure,
        fail_rollback: Failure,
        skip: bool | Callable[[FlowContext], bool],
    ) -> None:
        self.name = name
        self.log = log
        # Instance attributes shadow the ClassVars: each recording step declares its own.
        self.requires = tuple(requires)  # type: ignore[misc]
        self.provides = tuple(provides)  # type: ignore[misc]
        self.fail = fail
        self.fail_rollback = fail_rollback
        self._skip = skip

    async def run(self, ctx: FlowContext) -> None:
        self.log.append(("run", self.name))
        missing = [key for key in self.requires if key not in ctx]
        if missing:
            raise AssertionError(f"step {self.name!r} requires {missing} but the context "
                                 f"holds only {sorted(ctx.data)}")
        for key in self.provides:
            ctx[key] = self.name
        _raise(self.fail, self.name, "run")

    async def rollback(self, ctx: FlowContext) -> None:
        self.log.append(("rollback", self.name))
        _raise(self.fail_rollback, self.name, "rollback")

    def skip(self, ctx: FlowContext) -> bool:
        return self._skip(ctx) if callable(self._skip) else self._skip

    def __repr__(self) -> str:
        return f"<recording step {self.name!r}>"


def recording_step(
    name: str,
    requires: Sequence[str] = (),
    provides: Sequence[str] = (),
    fail: Failure = False,
    fail_rollback: Failure = False,
    skip: bool | Callable[[FlowContext], bool] = False,
    *,
    log: list[LogEntry] | None = None,
) -> Step:
    """A :class:`~zcore.flow.Step` that appends ``("run", name)`` and ``("rollback", name)``
    to ``log`` (its own list, ``step.log``, when not given).

    ``run`` checks that every key in ``requires`` is in the context, sets each key in
    ``provides`` to the step name, then raises ``fail`` if it is set (True: a
    ``RuntimeError``; or the exception given, such as a :class:`~zcore.flow.SoftError` or
    ``asyncio.CancelledError``). ``rollback`` raises ``fail_rollback`` the same way. ``skip``
    is a bool or a function of the context.
    """
    return _RecordingStep(name, [] if log is None else log, requires, provides, fail,
                          fail_rollback, skip)


class FlowRecorder:
    """Makes recording steps that share one log, to check the order of runs and rollbacks."""

    def __init__(self) -> None:
        self.log: list[LogEntry] = []

    def step(self, name: str, **kwargs: Any) -> Step:
        """A :func:`recording_step` that writes to this recorder's log."""
        return recording_step(name, log=self.log, **kwargs)

    def steps(self, *names: str, **kwargs: Any) -> dict[str, Step]:
        """``{name: recording step}`` for each name, all made with the same options."""
        return {name: self.step(name, **kwargs) for name in names}

    @property
    def ran(self) -> list[str]:
        return [name for event, name in self.log if event == "run"]

    @property
    def rolled_back(self) -> list[str]:
        return [name for event, name in self.log if event == "rollback"]

    def clear(self) -> None:
        self.log.clear()


@dataclass
class FlowResult:
    """What a :meth:`FlowRunner.run` did: the context's records, the error and the log."""

    context: FlowContext
    error: FlowError | None
    log: list[LogEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def data(self) -> dict[str, Any]:
        return self.context.data

    @property
    def ran(self) -> list[str]:
        return self.context.ran

    @property
    def rolled_back(self) -> list[str]:
        return self.context.rolled_back

    @property
    def skipped(self) -> list[str]:
        return self.context.skipped

    @property
    def soft_errors(self) -> list[ZError]:
        return self.context.soft_errors


class _FailingStep(Step):
    """Wraps a step so that its run raises instead of doing the work; the rest delegates."""

    def __init__(self, inner: Step, name: str, failure: Failure) -> None:
        self.inner = inner
        self.name = name
        self.failure = failure
        self.requires = inner.requires  # type: ignore[misc]
        self.provides = inner.provides  # type: ignore[misc]

    async def run(self, ctx: FlowContext) -> None:
        _raise(self.failure, self.name, "run")

    async def rollback(self, ctx: FlowContext) -> None:
        await self.inner.rollback(ctx)

    def skip(self, ctx: FlowContext) -> bool:
        return self.inner.skip(ctx)


class FlowRunner:
    """Builds a :class:`~zcore.flow.FlowEngine` from a chain and steps, and runs it.

    The ``flow_runner`` fixture gives one. Chains and insertions are credited to the plugin
    ``"test"``.
    """

    plugin = "test"

    def __init__(self) -> None:
        self.recorder = FlowRecorder()

    def chain_spec(self, chain: str | Sequence[str] | ChainSpec, name: str = "test") -> ChainSpec:
        """A spec from YAML text, a list of step names, or a spec as it is."""
        if isinstance(chain, ChainSpec):
            return chain
        raw = yaml.safe_load(chain) if isinstance(chain, str) else list(chain)
        return parse_chain(name, raw)

    def engine(
        self,
        chain: str | Sequence[str] | ChainSpec,
        steps: Mapping[str, Step] | None = None,
        *,
        insertions: Iterable[FlowInsertion] = (),
        fail_at: str | None = None,
        fail_with: Failure = True,
    ) -> FlowEngine:
        """An engine holding the one chain; see :meth:`run` for the arguments."""
        spec = self.chain_spec(chain)
        insertions = tuple(insertions)
        all_steps: dict[str, Step] = dict(steps or {})
        for name in (*spec.steps, *(ins.step for ins in insertions)):
            if name not in all_steps:
                all_steps[name] = self.recorder.step(name)
        if fail_at is not None:
            if fail_at not in all_steps:
                raise ValueError(f"fail_at={fail_at!r} is not a step here; steps: "
                                 f"{', '.join(all_steps)}")
            inner = all_steps[fail_at]
            if isinstance(inner, _RecordingStep):
                all_steps[fail_at] = recording_step(
                    fail_at, inner.requires, inner.provides, fail_with, inner.fail_rollback,
                    inner._skip, log=inner.log)
            else:
                all_steps[fail_at] = _FailingStep(inner, fail_at, fail_with)
        return FlowEngine(steps=all_steps, chains=[(self.plugin, spec)],
                          insertions=[(self.plugin, ins) for ins in insertions])

    async def run(
        self,
        chain: str | Sequence[str] | ChainSpec,
        steps: Mapping[str, Step] | None = None,
        data: dict[str, Any] | None = None,
        *,
        fail_at: str | None = None,
        fail_with: Failure = True,
        insertions: Iterable[FlowInsertion] = (),
        services: Any = None,
    ) -> FlowResult:
        """Run ``chain`` once and return what happened; a :class:`FlowError` is caught into
        the result, anything else (``CancelledError``, a bad chain) propagates.

        ``chain`` is YAML text, a list of step names or a :class:`~zcore.flow.ChainSpec`.
        Every step name that ``steps`` does not cover (all of them without ``steps``) gets a
        recording step writing to ``self.recorder``; the result's ``log`` is that log.
        ``fail_at`` makes the named step's run raise ``fail_with`` instead of working (its
        rollback is still the step's own).
        """
        spec = self.chain_spec(chain)
        engine = self.engine(spec, steps, insertions=insertions, fail_at=fail_at,
                             fail_with=fail_with)
        self.recorder.clear()
        try:
            ctx = await engine.run(spec.name, data, services=services)
        except FlowError as exc:
            return FlowResult(exc.context, exc, list(self.recorder.log))
        return FlowResult(ctx, None, list(self.recorder.log))

    def run_sync(self, *args: Any, **kwargs: Any) -> FlowResult:
        """:meth:`run` in a fresh event loop, for code outside an async test (hypothesis)."""
        return asyncio.run(self.run(*args, **kwargs))


@pytest.fixture
def flow_recorder() -> FlowRecorder:
    """A fresh :class:`FlowRecorder`."""
    return FlowRecorder()


@pytest.fixture
def flow_runner() -> FlowRunner:
    """A :class:`FlowRunner` that builds a one-chain engine per run."""
    return FlowRunner()
