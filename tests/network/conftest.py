"""The simulated machines of one test are forgotten after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zplugins.simulator.hosts import SIMULATOR


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()
