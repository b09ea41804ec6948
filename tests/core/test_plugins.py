"""The plugin manager: discovery through entry points, selection, validation, freezing."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zcore import (
    CascadeEdge,
    DriverNamespace,
    GlobalConfigOption,
    ResourceType,
    SystemTagPattern,
    WebRoute,
    hookimpl,
)
from zcore.config import Settings
from zcore.errors import ConfigError, StartupError, ZError
from zcore.node import check
from zcore.plugins import build_plugin_manager, inspect_plugins

ROOT = Path(__file__).resolve().parents[2]


class Zones:
    @hookimpl
    def zcore_resource_types(self) -> Any:
        yield ResourceType("ParkVO")
        yield ResourceType("GardenVO")

    @hookimpl
    def zcore_cascade_edges(self) -> Any:
        return [CascadeEdge("GardenVO", "ParkVO")]


class AlsoZones:
    @hookimpl
    def zcore_resource_types(self) -> Any:
        return [ResourceType("ParkVO")]


def test_entry_points_and_zplugins_packages_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"]["zcore.plugins"]
    packages = {p.name for p in (ROOT / "zplugins").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert set(declared) == packages
    assert all(declared[name] == f"zplugins.{name}" for name in packages)


def test_installed_plugins_are_found_through_entry_points(make_settings: Callable[..., Settings]
                                                          ) -> None:
    plugins = build_plugin_manager(make_settings())
    names = [i.name for i in plugins.infos]
    assert names[0] == "zcore"
    assert {"mgmtnode", "metrics"} <= set(plugins.active)
    info = plugins.info("metrics")
    assert info.distribution == "zstack-py"
    assert info.version == "0.1.0"
    assert info.module == "zplugins.metrics"


def test_a_disabled_plugin_contributes_nothing(make_settings: Callable[..., Settings]) -> None:
    plugins = build_plugin_manager(make_settings(plugins={"disable": ["metrics"]}))
    assert plugins.info("metrics").status == "disabled"
    assert "metrics" not in plugins.active
    assert ("GET", "/metrics") not in plugins.registry.web_routes
    enabled = build_plugin_manager(make_settings())
    assert ("GET", "/metrics") in enabled.registry.web_routes


def test_enable_list_leaves_the_rest_out(make_settings: Callable[..., Settings]) -> None:
    plugins = build_plugin_manager(make_settings(plugins={"enable": ["mgmtnode"]}))
    assert plugins.info("metrics").status == "disabled"
    assert plugins.info("metrics").reason == "not in plugins.enable"


@pytest.mark.parametrize("key", ["enable", "disable"])
def test_unknown_plugin_name_in_configuration_is_refused(
        make_settings: Callable[..., Settings], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"plugins.{key}: unknown plugin 'metrix'; did you "
                                          r"mean 'metrics'\?"):
        build_plugin_manager(make_settings(plugins={key: ["metrix"]}))


def broken_distribution(fake_distribution: Callable[..., Path]) -> None:
    fake_distribution(
        "acme-broken", "2.3.4", {"zcore.plugins": {"acme": "acme_broken"}},
        {"acme_broken/__init__.py": "import a_module_that_does_not_exist\n"})


def test_a_broken_plugin_stops_start_up_naming_it(
        make_settings: Callable[..., Settings], fake_distribution: Callable[..., Path]) -> None:
    broken_distribution(fake_distribution)
    with pytest.raises(StartupError) as caught:
        build_plugin_manager(make_settings())
    message = str(caught.value)
    assert "plugin 'acme' (2.3.4, acme-broken)" in message
    assert "ModuleNotFoundError" in message and "a_module_that_does_not_exist" in message
    assert "ZSTACK_DISABLE_PLUGINS=<name>" in message


def test_inspect_reports_the_broken_plugin_and_why(
        make_settings: Callable[..., Settings], fake_distribution: Callable[..., Path]) -> None:
    broken_distribution(fake_distribution)
    infos = {i.name: i for i in inspect_plugins(make_settings())}
    assert infos["acme"].status == "failed"
    assert "cannot be imported" in infos["acme"].reason
    assert infos["metrics"].status == "active"


def test_disabling_the_broken_plugin_lets_the_node_build(
        make_settings: Callable[..., Settings], fake_distribution: Callable[..., Path]) -> None:
    broken_distribution(fake_distribution)
    plugins = build_plugin_manager(make_settings(plugins={"disable": ["acme"]}))
    assert plugins.info("acme").status == "disabled"


def test_a_third_party_distribution_registers_like_a_builtin(
        make_settings: Callable[..., Settings], fake_distribution: Callable[..., Path]) -> None:
    fake_distribution("acme-zones", "1.0", {"zcore.plugins": {"acmezones": "acme_zones"}}, {
        "acme_zones/__init__.py":
            "from zcore import hookimpl, ResourceType\n"
            "@hookimpl\n"
            "def zcore_resource_types():\n"
            "    yield ResourceType('AcmeVO')\n"})
    plugins = build_plugin_manager(make_settings())
    assert plugins.registry.resource_types["AcmeVO"].plugin == "acmezones"
    assert plugins.info("acmezones").version == "1.0"


def test_unknown_hook_is_named_with_a_suggestion(make_settings: Callable[..., Settings]) -> None:
    class Typo:
        @hookimpl
        def zcore_resource_type(self) -> Any:
            return []

    with pytest.raises(StartupError) as caught:
        build_plugin_manager(make_settings(), extra_plugins=[("typo", Typo())])
    assert "plugin 'typo'" in str(caught.value)
    assert "unknown hook zcore_resource_type (did you mean zcore_resource_types?)" in \
        str(caught.value)


def test_unmarked_hook_function_is_an_error(make_settings: Callable[..., Settings]) -> None:
    class Unmarked:
        def zcore_resource_types(self) -> Any:
            return [ResourceType("LostVO")]

    with pytest.raises(StartupError, match="not marked with @zcore.hookimpl"):
        build_plugin_manager(make_settings(), extra_plugins=[("unmarked", Unmarked())])


def test_hook_with_an_unknown_argument_is_an_error(make_settings: Callable[..., Settings]
                                                   ) -> None:
    class BadArgs:
        @hookimpl
        def zcore_node_starting(self, nodee: Any) -> None:
            pass

    with pytest.raises(StartupError) as caught:
        build_plugin_manager(make_settings(), extra_plugins=[("badargs", BadArgs())])
    assert "plugin 'badargs'" in str(caught.value)
    assert "nodee" in str(caught.value)


def test_duplicate_names_name_both_providers(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(StartupError) as caught:
        build_plugin_manager(make_settings(), extra_plugins=[("zones", Zones()),
                                                             ("zones2", AlsoZones())])
    assert "duplicate resource type 'ParkVO': registered by plugin 'zones'" in str(caught.value)
    assert "and by plugin 'zones2'" in str(caught.value)


def test_a_record_of_the_wrong_type_is_refused(make_settings: Callable[..., Settings]) -> None:
    class Wrong:
        @hookimpl
        def zcore_resource_types(self) -> Any:
            return ["ParkVO"]

    with pytest.raises(StartupError, match=r"plugin 'wrong'.*zcore_resource_types yielded "
                                           r"'ParkVO'; expected zcore.ResourceType"):
        build_plugin_manager(make_settings(), extra_plugins=[("wrong", Wrong())])


def test_a_failing_registration_hook_is_named(make_settings: Callable[..., Settings]) -> None:
    class Raises:
        @hookimpl
        def zcore_global_configs(self) -> Any:
            raise RuntimeError("cannot read my defaults")

    with pytest.raises(StartupError, match="plugin 'raises'.*zcore_global_configs failed: "
                                           "RuntimeError: cannot read my defaults"):
        build_plugin_manager(make_settings(), extra_plugins=[("raises", Raises())])


def test_a_plugin_requiring_a_disabled_plugin_fails(make_settings: Callable[..., Settings]
                                                    ) -> None:
    class NeedsMetrics:
        ZCORE_REQUIRES = ("metrics",)

    settings = make_settings(plugins={"disable": ["metrics"]})
    with pytest.raises(StartupError) as caught:
        build_plugin_manager(settings, extra_plugins=[("needy", NeedsMetrics())])
    assert "requires plugin 'metrics', which is disabled" in str(caught.value)
    assert "enable 'metrics' or disable 'needy'" in str(caught.value)
    build_plugin_manager(make_settings(), extra_plugins=[("needy", NeedsMetrics())])


def test_registration_is_frozen_after_build(make_settings: Callable[..., Settings]) -> None:
    plugins = build_plugin_manager(make_settings())
    with pytest.raises(RuntimeError, match="frozen"):
        plugins.pm.register(Zones(), name="late")
    with pytest.raises(TypeError):
        plugins.registry.resource_types["X"] = None  # type: ignore[index]


def test_registry_records_keep_their_providers(make_settings: Callable[..., Settings]) -> None:
    plugins = build_plugin_manager(make_settings(), extra_plugins=[("zones", Zones())])
    assert plugins.registry.resource_types["GardenVO"].plugin == "zones"
    assert [p.record for p in plugins.registry.cascade_edges.values() if p.plugin == "zones"] \
        == [CascadeEdge("GardenVO", "ParkVO")]


# -- drivers -------------------------------------------------------------------------------


class Hypervisor:
    """The base class of a test driver namespace."""


class Hypervisors:
    @hookimpl
    def zcore_driver_namespaces(self) -> Any:
        yield DriverNamespace("acme.hypervisors", Hypervisor)


def hypervisor_distribution(fake_distribution: Callable[..., Path], *, bad: bool = False
                            ) -> None:
    fake_distribution(
        "acme-hv", "0.9",
        {"zcore.plugins": {"acmehv": "acme_hv"},
         "acme.hypervisors": {"Fast": "acme_hv.drivers:Fast",
                              **({"Wrong": "acme_hv.drivers:NotADriver"} if bad else {})}},
        {"acme_hv/__init__.py": "",
         "acme_hv/drivers.py":
            "from tests.core.test_plugins import Hypervisor\n"
            "class Fast(Hypervisor):\n    pass\n"
            "class NotADriver:\n    pass\n"})


def test_drivers_of_active_plugins_are_fetched_by_name(
        make_settings: Callable[..., Settings], fake_distribution: Callable[..., Path]) -> None:
    hypervisor_distribution(fake_distribution)
    from zcore.drivers import load_drivers

    plugins = build_plugin_manager(make_settings(), extra_plugins=[("hv", Hypervisors())])
    drivers = load_drivers(plugins.registry)
    assert drivers.names("acme.hypervisors") == ["Fast"]
    assert issubclass(drivers.get("acme.hypervisors", "Fast"), Hypervisor)
    with pytest.raises(ZError) as caught:
        drivers.get("acme.hypervisors", "Slow")
    assert caught.value.code == "SYS.1007"
    assert "no driver 'Slow' in acme.hypervisors; available: Fast" in str(caught.value)

    without = build_plugin_manager(make_settings(plugins={"disable": ["acmehv"]}),
                                   extra_plugins=[("hv", Hypervisors())])
    assert load_drivers(without.registry).names("acme.hypervisors") == []


def test_a_driver_of_the_wrong_class_stops_start_up(
        make_settings: Callable[..., Settings], fake_distribution: Callable[..., Path]) -> None:
    hypervisor_distribution(fake_distribution, bad=True)
    settings = make_settings()
    with pytest.raises(StartupError) as caught:
        check(settings, plugins=build_plugin_manager(settings,
                                                     extra_plugins=[("hv", Hypervisors())]))
    assert "driver 'Wrong' in acme.hypervisors (acme_hv.drivers:NotADriver) of plugin 'acmehv' " \
           "is not a subclass of tests.core.test_plugins.Hypervisor" in str(caught.value)


def test_a_config_naming_a_missing_driver_stops_start_up(
        make_settings: Callable[..., Settings], fake_distribution: Callable[..., Path]) -> None:
    hypervisor_distribution(fake_distribution)

    class Chooser:
        @hookimpl
        def zcore_global_configs(self) -> Any:
            yield GlobalConfigOption("host", "defaultHypervisor", str, "Slow",
                                     driver_namespace="acme.hypervisors")

    settings = make_settings()
    plugins = build_plugin_manager(settings, extra_plugins=[("hv", Hypervisors()),
                                                            ("chooser", Chooser())])
    with pytest.raises(StartupError) as caught:
        check(settings, plugins=plugins)
    assert "plugin 'chooser' (unknown version): default of host.defaultHypervisor: 'Slow' names no driver in " \
           "acme.hypervisors; available: Fast" in str(caught.value)


# -- other start-up validation ----------------------------------------------------------------


def test_cascade_edges_to_unknown_types_stop_start_up(make_settings: Callable[..., Settings]
                                                      ) -> None:
    class Dangling:
        @hookimpl
        def zcore_cascade_edges(self) -> Any:
            yield CascadeEdge("EipVO", "FloppyVO")

    settings = make_settings()
    with pytest.raises(StartupError, match=r"plugin 'dangling' \(unknown version\) declares "
                                           "EipVO -> FloppyVO, but "
                                           "EipVO and FloppyVO is not a declared resource type"):
        check(settings, plugins=build_plugin_manager(
            settings, extra_plugins=[("dangling", Dangling())]))


def test_tag_patterns_for_unknown_types_stop_start_up(make_settings: Callable[..., Settings]
                                                      ) -> None:
    class Tagger:
        @hookimpl
        def zcore_system_tag_patterns(self) -> Any:
            yield SystemTagPattern("floppy::{label}", "FloppyVO")

    settings = make_settings()
    with pytest.raises(StartupError, match=r"plugin 'tagger' \(unknown version\): "
                                           "floppy::{label} names resource type "
                                           "FloppyVO, which no active plugin declares"):
        check(settings, plugins=build_plugin_manager(settings,
                                                     extra_plugins=[("tagger", Tagger())]))


def test_duplicate_web_routes_are_refused(make_settings: Callable[..., Settings]) -> None:
    async def handler(request: Any) -> Any:
        return None

    class Metrics2:
        @hookimpl
        def zcore_web_routes(self) -> Any:
            yield WebRoute("get", "/metrics", handler)

    with pytest.raises(StartupError, match="duplicate web route 'GET /metrics': registered by "
                                           "plugin 'metrics'"):
        build_plugin_manager(make_settings(), extra_plugins=[("metrics2", Metrics2())])
