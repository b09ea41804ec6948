"""System tag patterns: matching, token extraction, the most specific pattern first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zcore.errors import ZError
from zcore.records import SystemTagPattern
from zcore.tags import TagPatterns

PATTERNS = TagPatterns([
    SystemTagPattern("hostname::{hostname}", "VmInstanceVO"),
    SystemTagPattern("staticIp::{l3NetworkUuid}::{ip}", "VmInstanceVO"),
    SystemTagPattern("{key}::{value}", "VmInstanceVO"),
    SystemTagPattern("capability::liveSnapshot", "HostVO"),
])


def test_tokens_are_extracted_by_name() -> None:
    pattern, tokens = PATTERNS.check("hostname::web-1", "VmInstanceVO")
    assert pattern.pattern == "hostname::{hostname}"
    assert tokens == {"hostname": "web-1"}


def test_the_most_specific_pattern_wins() -> None:
    pattern, tokens = PATTERNS.check("staticIp::" + "a" * 32 + "::10.0.0.5", "VmInstanceVO")
    assert pattern.pattern == "staticIp::{l3NetworkUuid}::{ip}"
    assert tokens == {"l3NetworkUuid": "a" * 32, "ip": "10.0.0.5"}
    assert PATTERNS.check("color::blue", "VmInstanceVO")[1] == {"key": "color",
                                                                 "value": "blue"}


def test_a_pattern_without_tokens_matches_exactly() -> None:
    assert PATTERNS.check("capability::liveSnapshot", "HostVO")[1] == {}
    assert PATTERNS.match("capability::liveSnapshotX", "HostVO") is None


def test_a_tag_matching_nothing_is_refused_listing_the_patterns() -> None:
    with pytest.raises(ZError) as caught:
        PATTERNS.check("hostname::web-1", "HostVO")
    assert caught.value.code == "SYS.1007"
    assert "matches no pattern for HostVO; patterns: capability::liveSnapshot" in \
        caught.value.details


def test_patterns_are_per_resource_type() -> None:
    assert PATTERNS.match("hostname::a", "ZoneVO") is None


def test_a_repeated_token_is_refused() -> None:
    with pytest.raises(ValueError, match="repeats a token"):
        SystemTagPattern("{a}::{a}", "VmInstanceVO")


@given(st.text(min_size=1).filter(lambda s: "::" not in s and s == s.strip() and "\n" not in s),
       st.text(min_size=1))
def test_any_value_round_trips_through_a_pattern(hostname: str, anything: str) -> None:
    pattern = SystemTagPattern("hostname::{hostname}", "VmInstanceVO")
    found = pattern.regex.match(f"hostname::{hostname}")
    assert found is not None and found.group("hostname") == hostname
    assert TagPatterns([pattern]).match(anything, "VmInstanceVO") is None or \
        anything.startswith("hostname::")
