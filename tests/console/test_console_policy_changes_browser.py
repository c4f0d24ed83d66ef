"""Four eyes in a real browser (Chromium through Playwright, as tests/support/browser.py drives it):
compliance officer A proposes an edit, B approves it and the policy changes; then the previous
version is restored the same way. Each officer takes over the browser with a session cookie of
their own (signing in and out have their tests in tests/console/test_console_browser.py). The app
serves a temporary copy of policies/, never the repository's own files."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from yarl import URL

from handlers.keys import policy_key
from handlers.settings import Settings
from tests.support.api import Api
from tests.support.browser import append_line, open_signed_in, requires_chromium
from tests.support.console import console_app, copy_of_policies

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_of_policies(tmp_path_factory.mktemp("four-eyes"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(settings: Settings, policy_dir: Path) -> AsyncIterator[Api]:
    async with console_app(settings, policy_dir=policy_dir) as api:
        yield api


async def test_officer_a_proposes_b_approves_and_the_previous_version_is_restored_with_four_eyes(
    page: Any,
    api: Api,
    policy_dir: Path,
) -> None:
    org = await api.governing_organization()  # only its officers change the policy
    alice = await api.person("compliance_officer", org)
    bob = await api.person("compliance_officer", org)
    rules = policy_dir / "roles.csv"
    original = rules.read_text()
    line = f"# reviewed by the compliance team {secrets.token_hex(3)}"

    # A proposes: the textarea holds the file in force; A adds a line and gives a reason.
    await open_signed_in(page, api, alice)
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Policy changes").click()
    await page.wait_for_load_state()
    content = page.get_by_label("New content of roles.csv (prefilled with the file in force)")
    assert await content.input_value() == original
    await append_line(page, content, line + "\n")
    await page.get_by_label("Reason for the change").fill("Note the yearly review in the rules file")
    await page.get_by_role("button", name="Propose this change").click()
    await page.wait_for_load_state()
    assert "A second compliance officer must approve it" in await page.get_by_role("status").inner_text()
    assert await page.locator("pre.diff .diff-add").filter(has_text=line).count() == 1
    assert await page.get_by_role("button", name="Approve and apply").count() == 0
    proposal_url = page.url.split("?")[0]
    assert rules.read_text() == original

    # B approves: the file is written and the policy in force changes.
    version = api.app[policy_key].current.version
    await open_signed_in(page, api, bob, URL(proposal_url).path)
    await page.get_by_label("Approval note (optional)").fill("Read the diff: comment only")
    await page.get_by_role("button", name="Approve and apply").click()
    await page.wait_for_load_state()
    assert "approved and applied" in await page.get_by_role("status").inner_text()
    assert rules.read_text() == original + line + "\n"
    assert api.app[policy_key].current.version != version

    # B proposes restoring the version before the change, from the file's history ...
    await page.get_by_role("link", name="Back to the policy changes").click()
    await page.wait_for_load_state()
    change_id = proposal_url.rsplit("/", 1)[1]
    history = page.get_by_role("table", name="Applied changes of roles.csv")
    assert await history.get_by_role("link", name=f"Change {change_id}").count() == 1
    await page.get_by_label(f"Reason to restore the version before change {change_id}").fill(
        "Undo for the test"
    )
    await page.get_by_role("button", name=f"Propose restoring the version before change {change_id}").click()
    await page.wait_for_load_state()
    restore_url = page.url.split("?")[0]
    assert "restores" in (await page.get_by_role("main").inner_text()).lower()

    # ... and A, the second pair of eyes this time, approves it: the file is as it was.
    await open_signed_in(page, api, alice, URL(restore_url).path)
    await page.get_by_role("button", name="Approve and apply").click()
    await page.wait_for_load_state()
    assert "approved and applied" in await page.get_by_role("status").inner_text()
    assert rules.read_text() == original
    assert api.app[policy_key].current.version == version
