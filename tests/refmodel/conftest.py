"""Prints the reference model's figures at the end of the run (actions checked, known defects met)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.app import create_app
from handlers.settings import Settings
from tests.refmodel.driver import TALLIES


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    """The whole app, once per test (each scenario makes fresh data in it)."""
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for name, tally in TALLIES.items():
        known = ", ".join(f"defect {d}: {n}" for d, n in sorted(tally.known.items())) or "none"
        terminalreporter.write_line(
            f"reference model, {name}: {tally.scenarios} scenarios, {tally.actions} actions checked"
            f" ({tally.allowed} allowed), disagreements explained by a known defect: {known}"
        )
        per = ", ".join(f"{wf} {a}/{a + r}" for wf, (a, r) in sorted(tally.by_workflow.items()))
        terminalreporter.write_line(f"  allowed/checked per workflow: {per}")
