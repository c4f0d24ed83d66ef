"""What every workflow test on fakes starts from: a fresh fake world (tests/support/fakes.py), the
engine's services over in-memory ports, the shipped policy and a fixed clock. A module that needs
another world defines its own ``world`` fixture, which takes precedence."""

from __future__ import annotations

import pytest

from tests.support.fakes import FakeWorld, fake_services


@pytest.fixture
def world() -> FakeWorld:
    return fake_services()
