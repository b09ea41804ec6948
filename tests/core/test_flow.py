"""The workflow engine: chain files, start-up validation, run, rollback and the test helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcore.errors import INTERNAL, INVALID_ARGUMENT, OPERATION_ERROR, TIMEOUT, StartupError, ZError
from zcore.flow import (
    Chain,
    ChainSpec,
    FlowContext,
    FlowEngine,
    FlowError,
    SoftError,
    Step,
    load_chain_file,
    parse_chain,
)
from zcore.records import FlowChainFile, FlowInsertion
from zcore.testing import FlowRecorder, FlowRunner, recording_step

# --- helpers -----------------------------------------------------------------------------------


def engine(
    chain: list[str] | ChainSpec,
    steps: dict[str, Step],
    insertions: list[tuple[str, FlowInsertion]] | None = None,
    **kwargs: Any,
) -> FlowEngine:
    spec = chain if isinstance(chain, ChainSpec) else ChainSpec("c", tuple(chain))
    return FlowEngine(steps=steps, chains=[("core", spec)], insertions=insertions or (),
                      **kwargs)


def startup_error(**kwargs: Any) -> str:
    with pytest.raises(StartupError) as info:
        FlowEngine(**kwargs)
    return str(info.value)


class Handlers:
    """Counts done/error/finally calls; async or sync on demand."""

    def __init__(self, use_async: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.use_async = use_async

    def _record(self, event: str, value: Any) -> Any:
        self.calls.append((event, value))
        if self.use_async:
            return asyncio.sleep(0)
        return None

    def kwargs(self) -> dict[str, Any]:
        return {
            "on_done": lambda ctx: self._record("done", ctx),
            "on_error": lambda ctx, err: self._record("error", err),
            "on_finally": lambda ctx: self._record("finally", ctx),
        }

    @property
    def events(self) -> list[str]:
        return [event for event, _ in self.calls]


# --- properties of run and rollback ------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, set[int], int | None, set[int], bool, bool]:
    n = draw(st.integers(1, 15))
    skipped = draw(st.sets(st.integers(0, n - 1)))
    fail = draw(st.none() | st.integers(0, n - 1))
    failing_rollbacks = draw(st.sets(st.integers(0, n - 1)))
    return n, skipped, fail, failing_rollbacks, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_rollback_runs_exactly_the_steps_that_ran_newest_first(
    scenario: tuple[int, set[int], int | None, set[int], bool, bool],
) -> None:
    n, skipped, fail, failing_rollbacks, use_async, zerror = scenario
    names = [f"s{i}" for i in range(n)]
    failure: Any = ZError("VM.1001", "no host", "no host fits") if zerror else True
    recorder = FlowRecorder()
    steps = {
        name: recorder.step(name, fail=failure if i == fail else False,
                            fail_rollback=i in failing_rollbacks, skip=i in skipped)
        for i, name in enumerate(names)
    }
    eng = engine(names, steps)
    handlers = Handlers(use_async)

    # The model: walk the chain, skipping and stopping as the scenario says.
    expect_ran: list[str] = []
    failed_step = None
    for i, name in enumerate(names):
        if i in skipped:
            continue
        expect_ran.append(name)
        if i == fail:
            failed_step = name
            break
    expect_skipped = [n for i, n in enumerate(names) if i in skipped
                      and (failed_step is None or i < names.index(failed_step))]

    if failed_step is None:
        ctx = asyncio.run(eng.run("c", **handlers.kwargs()))
        assert ctx.ran == expect_ran
        assert ctx.skipped == expect_skipped
        assert ctx.rolled_back == []
        assert recorder.rolled_back == []
        assert handlers.events == ["done", "finally"]
        assert all(value is ctx for _, value in handlers.calls)
        assert eng.stats.chains_failed == 0
        return

    with pytest.raises(FlowError) as info:
        asyncio.run(eng.run("c", **handlers.kwargs()))
    err = info.value
    ctx = err.context
    expect_rolled_back = list(reversed(expect_ran))
    assert ctx.ran == expect_ran == recorder.ran
    assert ctx.skipped == expect_skipped
    assert ctx.rolled_back == expect_rolled_back == recorder.rolled_back
    assert recorder.log == [("run", s) for s in expect_ran] + [
        ("rollback", s) for s in expect_rolled_back]
    assert [name for name, _ in err.rollback_errors] == [
        s for s in expect_rolled_back if names.index(s) in failing_rollbacks]
    assert all(e.location == name for name, e in err.rollback_errors)
    assert handlers.events == ["error", "finally"]
    assert handlers.calls[0][1] is err
    assert ctx.error is err
    assert (err.chain, err.step, err.location) == ("c", failed_step, failed_step)
    assert err.code == ("VM.1001" if zerror else INTERNAL)
    assert err.cause is not None and err.cause.location == failed_step
    assert eng.stats.chains_failed == 1
    assert eng.stats.steps_rolled_back == len(expect_ran)


@st.composite
def insertion_scenarios(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    base = draw(st.integers(1, 6))
    inserts = draw(st.lists(st.tuples(st.sampled_from(["before", "after"]),
                                      st.integers(0, base - 1)), max_size=10))
    return base, inserts


@settings(max_examples=100, deadline=None)
@given(insertion_scenarios())
def test_insertions_sit_next_to_their_anchor_in_the_order_given(
    scenario: tuple[int, list[tuple[str, int]]],
) -> None:
    base, inserts = scenario
    runner = FlowRunner()
    names = [f"b{i}" for i in range(base)]
    insertions = []
    before: dict[str, list[str]] = {n: [] for n in names}
    after: dict[str, list[str]] = {n: [] for n in names}
    for j, (where, anchor) in enumerate(inserts):
        step = f"i{j}"
        insertions.append(FlowInsertion("test", step, **{where: names[anchor]}))
        (before if where == "before" else after)[names[anchor]].append(step)
    expected = [s for n in names for s in (*before[n], n, *after[n])]

    eng = runner.engine(names, insertions=insertions)
    assert eng.chains["test"].step_names == tuple(expected)
    result = runner.run_sync(names, insertions=insertions)
    assert result.ran == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sets(st.sampled_from("abcd"), max_size=2),
                          st.sets(st.sampled_from("abcd"), max_size=2)), min_size=1, max_size=8),
       st.sets(st.sampled_from("abcd")))
def test_a_chain_is_accepted_exactly_when_every_requirement_is_met_upstream(
    shapes: list[tuple[set[str], set[str]]], inputs: set[str],
) -> None:
    steps = {f"s{i}": recording_step(f"s{i}", requires=sorted(req), provides=sorted(prov))
             for i, (req, prov) in enumerate(shapes)}
    available = set(inputs)
    ok = True
    for req, prov in shapes:
        ok = ok and req <= available
        available |= prov
    spec = ChainSpec("c", tuple(steps), frozenset(inputs))
    if ok:
        eng = engine(spec, steps)
        ctx = asyncio.run(eng.run("c", dict.fromkeys(inputs, "in")))
        assert ctx.ran == list(steps)
    else:
        with pytest.raises(StartupError, match="neither an input of the chain"):
            engine(spec, steps)


# --- chain files -------------------------------------------------------------------------------


def test_a_plain_list_is_a_chain_named_after_its_file(tmp_path: Path) -> None:
    path = tmp_path / "vm-create.yaml"
    path.write_text("- allocate-host\n- allocate-volumes\n")
    spec = load_chain_file(path)
    assert spec == ChainSpec("vm-create", ("allocate-host", "allocate-volumes"), frozenset(),
                             "", path)


def test_a_mapping_gives_description_and_inputs(tmp_path: Path) -> None:
    path = tmp_path / "vm-start.yaml"
    path.write_text("description: Start a VM\ninputs: [vm, host_uuid]\nsteps: [a, b]\n")
    spec = load_chain_file(path)
    assert (spec.name, spec.steps, spec.inputs, spec.description) == (
        "vm-start", ("a", "b"), frozenset({"vm", "host_uuid"}), "Start a VM")


def test_a_chain_file_can_be_given_to_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("[a]\n")
    eng = FlowEngine(steps={"a": recording_step("a")}, chains=[("core", FlowChainFile(path))])
    assert eng.chains["c"].step_names == ("a",)


@pytest.mark.parametrize(("text", "problem"), [
    ("", "the file is empty"),
    ("[]\n", "the chain has no steps"),
    ("steps: []\n", "the chain has no steps"),
    ("just-a-name\n", "the top level is str 'just-a-name'"),
    ("[a, 1]\n", "steps item #2 is int 1, not a name"),
    ("[a, {b: c}]\n", "steps item #2 is dict"),
    ("[a, '']\n", "steps item #2 is str '', not a name"),
    ("[a, b, a]\n", "steps names 'a' more than once"),
    ("steps: [a]\nrollback: [b]\n", "unknown key(s) 'rollback'"),
    ("description: no steps\n", "the mapping has no 'steps' list"),
    ("steps: a\n", "steps must be a list of names, not str 'a'"),
    ("steps: [a]\ninputs: vm\n", "inputs must be a list of names, not str 'vm'"),
    ("steps: [a]\ninputs: [vm, vm]\n", "inputs names 'vm' more than once"),
    ("steps: [a]\ndescription: [x]\n", "description must be a string, not list"),
    ("[a, b\n", "is not valid YAML"),
    ("- a\n  - b: [\n", "is not valid YAML"),
])
def test_a_bad_chain_file_is_a_startup_error_naming_file_and_problem(
    tmp_path: Path, text: str, problem: str,
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(StartupError) as info:
        load_chain_file(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_every_problem_of_a_chain_file_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("steps: [a, a, 3]\nflavour: x\n")
    with pytest.raises(StartupError, match="3 problems") as info:
        load_chain_file(path)
    for problem in ("'flavour'", "'a' more than once", "item #3 is int 3"):
        assert problem in str(info.value)


def test_a_missing_chain_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot be read"):
        load_chain_file(tmp_path / "nope.yaml")


def test_a_bad_chain_file_given_to_the_engine_names_the_plugin(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    message = startup_error(steps={}, chains=[("kvm", FlowChainFile(path))])
    assert "plugin 'kvm'" in message and str(path) in message


def test_parse_chain_without_a_file_names_the_chain() -> None:
    with pytest.raises(StartupError, match="flow chain 'x'"):
        parse_chain("x", [])


# --- start-up validation -----------------------------------------------------------------------


def test_a_chain_name_given_twice_names_both_plugins() -> None:
    steps = {"a": recording_step("a")}
    message = startup_error(steps=steps, chains=[
        ("core", ChainSpec("vm-create", ("a",), path=Path("flows/vm-create.yaml"))),
        ("kvm", ChainSpec("vm-create", ("a",), path=Path("kvm/flows/vm-create.yaml"))),
    ])
    assert "chain 'vm-create' is provided twice" in message
    assert "by plugin 'core' (flows/vm-create.yaml) and by plugin 'kvm' " \
           "(kvm/flows/vm-create.yaml)" in message


def test_an_unknown_step_names_chain_step_and_plugin() -> None:
    steps = {"allocate-host": recording_step("allocate-host")}
    message = startup_error(steps=steps, chains=[
        ("core", ChainSpec("vm-create", ("allocate-hots",), path=Path("flows/vm-create.yaml")))])
    assert "chain 'vm-create' (plugin 'core', flows/vm-create.yaml)" in message
    assert "unknown step 'allocate-hots'" in message
    assert "did you mean 'allocate-host'?" in message


def test_an_insertion_into_an_unknown_chain_names_plugin_step_and_chain() -> None:
    steps = {"a": recording_step("a"), "attach-eip": recording_step("attach-eip")}
    message = startup_error(steps=steps, chains=[("core", ChainSpec("vm-create", ("a",)))],
                            insertions=[("eip", FlowInsertion("vm-creat", "attach-eip",
                                                              after="a"))])
    assert "plugin 'eip' inserts step 'attach-eip' into chain 'vm-creat'" in message
    assert "which no plugin provides" in message and "did you mean 'vm-create'?" in message


def test_an_insertion_next_to_a_missing_anchor_names_chain_plugin_step_and_anchor() -> None:
    steps = {"a": recording_step("a"), "attach-eip": recording_step("attach-eip")}
    message = startup_error(steps=steps, chains=[("core", ChainSpec("vm-create", ("a",)))],
                            insertions=[("eip", FlowInsertion("vm-create", "attach-eip",
                                                              before="instantiate"))])
    assert "chain 'vm-create' (plugin 'core'" in message
    assert "plugin 'eip' inserts step 'attach-eip' before 'instantiate', which is not in the " \
           "chain" in message


def test_an_insertion_of_an_unknown_step_names_chain_plugin_and_step() -> None:
    message = startup_error(steps={"a": recording_step("a")},
                            chains=[("core", ChainSpec("vm-create", ("a",)))],
                            insertions=[("eip", FlowInsertion("vm-create", "attach-eip",
                                                              after="a"))])
    assert "chain 'vm-create'" in message
    assert "plugin 'eip' inserts unknown step 'attach-eip'" in message


def test_a_step_cannot_be_inserted_twice_or_where_it_already_is() -> None:
    steps = {n: recording_step(n) for n in "abx"}
    message = startup_error(steps=steps, chains=[("core", ChainSpec("c", ("a", "b")))],
                            insertions=[("p1", FlowInsertion("c", "x", after="a")),
                                        ("p2", FlowInsertion("c", "x", after="b")),
                                        ("p3", FlowInsertion("c", "b", before="a"))])
    assert "step 'x' is inserted twice, by plugin 'p1' and by plugin 'p2'" in message
    assert "plugin 'p3' inserts step 'b', which the chain file already lists" in message


def test_an_insertion_may_anchor_on_another_insertion() -> None:
    steps = {n: recording_step(n) for n in ("a", "b", "x", "y")}
    eng = engine(["a", "b"], steps, [("p2", FlowInsertion("c", "y", after="x")),
                                     ("p1", FlowInsertion("c", "x", after="a"))])
    assert eng.chains["c"].step_names == ("a", "x", "y", "b")


def test_insertions_whose_anchors_only_point_at_each_other_are_not_in_the_chain() -> None:
    steps = {n: recording_step(n) for n in ("a", "x", "y")}
    message = startup_error(steps=steps, chains=[("core", ChainSpec("c", ("a",)))],
                            insertions=[("p", FlowInsertion("c", "x", after="y")),
                                        ("p", FlowInsertion("c", "y", after="x"))])
    assert "inserts step 'x' after 'y', which is not in the chain" in message
    assert "inserts step 'y' after 'x', which is not in the chain" in message


def test_an_unmet_requirement_names_chain_step_plugin_and_key() -> None:
    steps = {"allocate-host": recording_step("allocate-host", requires=["vm"])}
    message = startup_error(steps=steps, chains=[("core", ChainSpec("vm-create",
                                                                    ("allocate-host",)))],
                            step_providers={"allocate-host": "kvm"})
    assert "chain 'vm-create' (plugin 'core'" in message
    assert "step 'allocate-host' (plugin 'kvm') requires 'vm'" in message
    assert "neither an input of the chain (no inputs) nor provided by an earlier step" in message


def test_a_requirement_provided_only_by_a_later_step_is_an_error() -> None:
    steps = {"allocate-host": recording_step("allocate-host", requires=["vm"]),
             "make-vm": recording_step("make-vm", provides=["vm"])}
    message = startup_error(steps=steps,
                            chains=[("core", ChainSpec("c", ("allocate-host", "make-vm")))])
    assert "step 'allocate-host' requires 'vm'" in message
    assert "step 'make-vm' provides it but runs later" in message


def test_an_inserted_step_with_an_unmet_requirement_names_the_inserting_plugin() -> None:
    steps = {"a": recording_step("a"), "attach-eip": recording_step("attach-eip",
                                                                    requires=["nic"])}
    message = startup_error(steps=steps, chains=[("core", ChainSpec("c", ("a",)))],
                            insertions=[("eip", FlowInsertion("c", "attach-eip", after="a"))])
    assert "step 'attach-eip', inserted by plugin 'eip', requires 'nic'" in message


def test_requirements_are_met_by_inputs_by_earlier_steps_and_by_inserted_steps() -> None:
    steps = {
        "make-nic": recording_step("make-nic", requires=["vm"], provides=["nic"]),
        "make-vip": recording_step("make-vip", provides=["vip"]),
        "attach-eip": recording_step("attach-eip", requires=["nic", "vip", "vm"]),
    }
    eng = engine(ChainSpec("c", ("make-nic", "attach-eip"), frozenset({"vm"})), steps,
                 [("vip", FlowInsertion("c", "make-vip", before="attach-eip"))])
    ctx = asyncio.run(eng.run("c", {"vm": "v"}))
    assert ctx.ran == ["make-nic", "make-vip", "attach-eip"]
    assert ctx.data == {"vm": "v", "nic": "make-nic", "vip": "make-vip"}


def test_steps_that_are_not_steps_are_rejected() -> None:
    class SyncRun(Step):
        def run(self, ctx: FlowContext) -> None:  # type: ignore[override]
            pass

    class StrRequires(Step):
        requires = ("vm")  # type: ignore[assignment]  # the bug under test: not a tuple

        async def run(self, ctx: FlowContext) -> None:
            pass

    message = startup_error(
        steps={"sync": SyncRun(), "str": StrRequires(), "obj": object()},  # type: ignore[dict-item]
        chains=[("core", ChainSpec("c", ("sync", "str", "obj")))],
        step_providers={"sync": "p1", "str": "p2", "obj": "p3"})
    assert "step 'sync' (plugin 'p1'): " in message
    assert "SyncRun.run must be an 'async def'" in message
    assert "step 'str' (plugin 'p2'): requires must be a tuple of context key names, " \
           "not 'vm'" in message
    assert "step 'obj' (plugin 'p3') is a object, not a zcore.flow.Step" in message


def test_every_problem_is_listed_in_one_message() -> None:
    steps = {"a": recording_step("a", requires=["x"])}
    message = startup_error(steps=steps,
                            chains=[("core", ChainSpec("c1", ("a", "b"))),
                                    ("core", ChainSpec("c2", ("zz",)))],
                            insertions=[("p", FlowInsertion("c3", "a", after="a"))])
    assert message.startswith("flow chains are invalid: 4 problems:\n  - ")
    for part in ("unknown step 'b'", "unknown step 'zz'", "requires 'x'", "chain 'c3'"):
        assert part in message


def test_the_chains_are_resolved_and_read_only() -> None:
    a, b = recording_step("a"), recording_step("b")
    eng = engine(ChainSpec("c", ("a", "b"), frozenset({"k"}), "does c"), {"a": a, "b": b})
    assert eng.chains["c"] == Chain("c", (("a", a), ("b", b)), frozenset({"k"}), "does c")
    assert "c" in eng and list(eng) == ["c"]
    with pytest.raises(TypeError):
        eng.chains["d"] = eng.chains["c"]  # type: ignore[index]


# --- run ---------------------------------------------------------------------------------------


async def test_an_unknown_chain_is_sys_1006_naming_the_known_ones() -> None:
    eng = engine(["a"], {"a": recording_step("a")})
    with pytest.raises(ZError) as info:
        await eng.run("vm-create")
    assert info.value.code == OPERATION_ERROR
    assert "'vm-create'" in info.value.details and "known chains: c" in info.value.details


async def test_missing_inputs_are_sys_1007_naming_them_before_any_step_runs() -> None:
    recorder = FlowRecorder()
    eng = engine(ChainSpec("c", ("a",), frozenset({"vm", "host", "l3"})), recorder.steps("a"))
    with pytest.raises(ZError) as info:
        await eng.run("c", {"host": 1})
    assert info.value.code == INVALID_ARGUMENT
    assert "'l3', 'vm'" in info.value.details and "given: 'host'" in info.value.details
    assert recorder.log == []


async def test_the_context_is_the_callers_dict_and_carries_services() -> None:
    seen: list[Any] = []

    class Probe(Step):
        async def run(self, ctx: FlowContext) -> None:
            seen.append(ctx.services)
            ctx["out"] = ctx["in"] + 1
            assert "in" in ctx and ctx.get("nothing", 7) == 7

    data = {"in": 1}
    ctx = await engine(["p"], {"p": Probe()}).run("c", data, services="node")
    assert ctx.data is data and data == {"in": 1, "out": 2}
    assert seen == ["node"] and ctx.chain == "c"


async def test_a_soft_error_is_recorded_and_the_chain_goes_on(flow_runner: FlowRunner) -> None:
    soft = SoftError("HOST.1001", "could not warm the cache", "host h1")
    result = await flow_runner.run(["a", "b", "c"], {"b": recording_step("b", fail=soft)})
    assert result.ok and result.ran == ["a", "b", "c"]
    assert result.soft_errors == [soft] and soft.location == "b"


async def test_a_soft_failing_step_rolls_back_when_a_later_step_fails(
    flow_runner: FlowRunner, flow_recorder: FlowRecorder,
) -> None:
    soft = SoftError("HOST.1001", "could not warm the cache")
    steps = {"b": flow_recorder.step("b", fail=soft)}
    result = await flow_runner.run(["a", "b", "c"], steps, fail_at="c")
    assert result.soft_errors == [soft]
    assert result.rolled_back == ["c", "b", "a"]
    assert flow_recorder.log == [("run", "b"), ("rollback", "b")]


async def test_a_zerror_cause_gives_its_code_and_the_cause_chain() -> None:
    root = ZError("HOST.1002", "host disconnected", "host h1 stopped answering")
    inner = ZError("VM.1003", "cannot create the VM on the host", cause=root)
    ctx_data: dict[str, Any] = {}
    with pytest.raises(FlowError) as info:
        await engine(["a", "b"], {"a": recording_step("a"),
                                  "b": recording_step("b", fail=inner)}).run("c", ctx_data)
    err = info.value
    assert err.code == "VM.1003" and err.location == "b" and err.step == "b"
    assert err.causes() == [err, inner, root]
    assert err.__cause__ is inner and inner.location == "b"
    assert err.to_dict()["cause"]["cause"]["code"] == "HOST.1002"
    assert "VM.1003 cannot create the VM on the host" in err.details


async def test_a_plain_exception_becomes_sys_1000_and_stays_the_dunder_cause() -> None:
    boom = KeyError("host_uuid")
    with pytest.raises(FlowError) as info:
        await engine(["a"], {"a": recording_step("a", fail=boom)}).run("c")
    err = info.value
    assert err.code == INTERNAL and err.__cause__ is boom
    assert err.cause is not None and "KeyError" in err.cause.details
    assert err.cause.location == "a"


async def test_a_timeout_becomes_sys_1001() -> None:
    with pytest.raises(FlowError) as info:
        await engine(["a"], {"a": recording_step("a", fail=TimeoutError("agent"))}).run("c")
    assert info.value.code == TIMEOUT


async def test_a_failing_nested_chain_is_in_the_cause_chain() -> None:
    class RunInner(Step):
        async def run(self, ctx: FlowContext) -> None:
            await ctx.services.run("inner")

    steps = {"a": recording_step("a", fail=ZError("NET.1000", "no ip left")),
             "nest": RunInner()}
    eng = FlowEngine(steps=steps, chains=[("core", ChainSpec("inner", ("a",))),
                                          ("core", ChainSpec("outer", ("nest",)))])
    with pytest.raises(FlowError) as info:
        await eng.run("outer", services=eng)
    outer = info.value
    assert outer.code == "NET.1000"
    assert [(e.code, e.location) for e in outer.causes()] == [
        ("NET.1000", "nest"), ("NET.1000", "a"), ("NET.1000", "a")]
    assert isinstance(outer.cause, FlowError) and outer.cause.chain == "inner"


async def test_a_failing_rollback_is_reported_and_the_others_still_run() -> None:
    recorder = FlowRecorder()
    steps = {"a": recorder.step("a"), "b": recorder.step("b", fail_rollback=ValueError("x")),
             "c": recorder.step("c", fail=True)}
    with pytest.raises(FlowError) as info:
        await engine(["a", "b", "c"], steps).run("c")
    err = info.value
    assert recorder.rolled_back == ["c", "b", "a"]
    assert [(name, e.code) for name, e in err.rollback_errors] == [("b", INTERNAL)]
    assert "the rollback of 1 step(s) failed too: 'b'" in err.details


async def test_a_step_raising_cancelled_error_rolls_back_and_propagates() -> None:
    recorder, handlers = FlowRecorder(), Handlers()
    steps = {"a": recorder.step("a"), "b": recorder.step("b", fail=asyncio.CancelledError())}
    eng = engine(["a", "b", "c"], {**steps, "c": recorder.step("c")})
    with pytest.raises(asyncio.CancelledError):
        await eng.run("c", **handlers.kwargs())
    assert recorder.log == [("run", "a"), ("run", "b"), ("rollback", "b"), ("rollback", "a")]
    assert handlers.events == ["finally"]
    assert eng.stats.chains_failed == 1


async def test_cancelling_the_task_mid_step_rolls_back_and_propagates() -> None:
    recorder = FlowRecorder()
    started = asyncio.Event()

    class Hang(Step):
        async def run(self, ctx: FlowContext) -> None:
            started.set()
            await asyncio.sleep(3600)

        async def rollback(self, ctx: FlowContext) -> None:
            await asyncio.sleep(0)  # a rollback can still await after the cancellation
            recorder.log.append(("rollback", "hang"))

    eng = engine(["a", "hang", "b"], {"a": recorder.step("a"), "hang": Hang(),
                                      "b": recorder.step("b")})
    task = asyncio.create_task(eng.run("c"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.log == [("run", "a"), ("rollback", "hang"), ("rollback", "a")]


async def test_a_rollback_cancelled_finishes_the_others_then_propagates() -> None:
    recorder = FlowRecorder()
    steps = {"a": recorder.step("a"),
             "b": recorder.step("b", fail_rollback=asyncio.CancelledError()),
             "c": recorder.step("c", fail=True)}
    with pytest.raises(asyncio.CancelledError):
        await engine(["a", "b", "c"], steps).run("c")
    assert recorder.rolled_back == ["c", "b", "a"]


async def test_a_skipped_step_neither_runs_nor_rolls_back(flow_runner: FlowRunner) -> None:
    steps = {"b": recording_step("b", skip=lambda ctx: "no-b" in ctx)}
    result = await flow_runner.run(["a", "b", "c"], steps, {"no-b": True}, fail_at="c")
    assert result.skipped == ["b"]
    assert result.log == [("run", "a"), ("run", "c"), ("rollback", "c"), ("rollback", "a")]


async def test_a_skip_that_raises_fails_the_chain_at_that_step() -> None:
    def broken_skip(ctx: FlowContext) -> bool:
        raise LookupError("no such tag")

    recorder = FlowRecorder()
    steps = {"a": recorder.step("a"), "b": recorder.step("b", skip=broken_skip)}
    with pytest.raises(FlowError) as info:
        await engine(["a", "b"], steps).run("c")
    assert info.value.step == "b" and "LookupError" in info.value.details
    assert recorder.log == [("run", "a"), ("rollback", "a")]


async def test_the_base_step_must_be_overridden() -> None:
    with pytest.raises(FlowError, match="NotImplementedError: Step must override Step.run"):
        await engine(["a"], {"a": Step()}).run("c")


async def test_handlers_may_be_async_and_finally_runs_when_a_handler_raises() -> None:
    calls: list[str] = []

    async def on_done(ctx: FlowContext) -> None:
        calls.append("done")
        raise RuntimeError("handler bug")

    def on_finally(ctx: FlowContext) -> None:
        calls.append("finally")

    eng = engine(["a"], {"a": recording_step("a")})
    with pytest.raises(RuntimeError, match="handler bug"):
        await eng.run("c", on_done=on_done, on_finally=on_finally)
    assert calls == ["done", "finally"]


async def test_stats_count_runs_failures_steps_and_rollbacks() -> None:
    eng = engine(["a", "b"], {"a": recording_step("a"), "b": recording_step("b", skip=True)})
    for _ in range(3):
        await eng.run("c")
    failing = engine(["a", "b"], {"a": recording_step("a"), "b": recording_step("b", fail=True)})
    with pytest.raises(FlowError):
        await failing.run("c")
    assert (eng.stats.chains_run, eng.stats.steps_run, eng.stats.chains_failed) == (3, 3, 0)
    assert (failing.stats.chains_failed, failing.stats.steps_rolled_back) == (1, 2)


# --- the test helpers --------------------------------------------------------------------------


async def test_flow_runner_takes_yaml_text_and_reports_the_error(
    flow_runner: FlowRunner,
) -> None:
    result = await flow_runner.run("inputs: [vm]\nsteps: [a, b]\n", data={"vm": 1}, fail_at="b")
    assert not result.ok and result.error is not None and result.error.step == "b"
    assert (result.ran, result.rolled_back) == (["a", "b"], ["b", "a"])
    assert result.data == {"vm": 1}


async def test_flow_runner_fail_at_keeps_a_real_steps_rollback(flow_runner: FlowRunner) -> None:
    undone: list[str] = []

    class Reserve(Step):
        provides = ("ip",)

        async def run(self, ctx: FlowContext) -> None:
            ctx["ip"] = "10.0.0.2"

        async def rollback(self, ctx: FlowContext) -> None:
            undone.append(ctx.get("ip", "nothing"))

    result = await flow_runner.run(["reserve"], {"reserve": Reserve()}, fail_at="reserve",
                                   fail_with=ZError("NET.1001", "pool exhausted"))
    assert result.error is not None and result.error.code == "NET.1001"
    assert undone == ["nothing"]
    with pytest.raises(ValueError, match="fail_at='nope'"):
        flow_runner.engine(["reserve"], {"reserve": Reserve()}, fail_at="nope")


async def test_a_recording_step_checks_what_it_requires() -> None:
    step = recording_step("a", requires=["vm"])
    with pytest.raises(AssertionError, match="requires \\['vm'\\]"):
        await step.run(FlowContext("c", {}))
    assert step.log == [("run", "a")]  # type: ignore[attr-defined]
