"""The auditor's pages in a real browser (Debian's Chromium, as tests/support/browser.py drives it):
an audit search with a filter down to one record's page, a verification run followed until its page
stops refreshing, and a signed anchor created and downloaded.

With ``CAREMSG_SCREENSHOTS=DIR`` the tests also save the pages' screenshots there (the README's come
from ``CAREMSG_SCREENSHOTS=docs/screenshots``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from handlers.console import chain_page
from handlers.keys import audit_sealer_key, settings_key
from integrations.audit_anchor import private_key, verify_anchor
from tests.support.api import Api
from tests.support.browser import open_signed_in, requires_chromium, shoot

pytestmark = requires_chromium


async def test_an_auditor_filters_by_reason_and_opens_the_records_own_page(page: Any, api: Api) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    nurse = await api.person("care_team_member", org)
    peer = await api.person("peer_support", org)
    patient = await api.patient(nurse)
    assert (await api.call("GET", f"/api/patients/{patient}", peer))[0] == 403
    await api.app[audit_sealer_key].seal_pending()

    await open_signed_in(page, api, auditor, "/console/audit")
    await page.get_by_label("Reason (e.g. no_active_consent)").fill("not_on_care_team")
    await page.get_by_label("Patient (id)").fill(str(patient))
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    rows = page.locator("table tbody tr")
    assert await rows.count() == 1
    assert "not_on_care_team" in await rows.first.inner_text()
    await shoot(page, "console-audit", full_page=True)

    await rows.first.get_by_role("link").click()
    await page.wait_for_load_state()
    assert (await page.get_by_role("heading", level=1).inner_text()).startswith("Audit record ")
    chain = page.get_by_role("region", name="Its place in the hash chain")
    assert "Sealed at position" in await chain.inner_text()
    assert "Previous hash" in await chain.inner_text()
    await shoot(page, "console-audit-record", full_page=True)


async def test_an_auditor_runs_a_verification_and_downloads_a_signed_anchor(
    page: Any, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run's page reloads itself until the run is done: every second here, not every two.
    monkeypatch.setattr(chain_page, "REFRESH_SECONDS", 1)
    auditor = await api.person("auditor", await api.organization())
    await open_signed_in(page, api, auditor, "/console/audit/chain")
    await page.get_by_role("button", name="Seal and sign an anchor now").click()
    await page.wait_for_load_state()
    assert "was created and stored" in await page.get_by_role("status").first.inner_text()
    await shoot(page, "console-audit-chain", full_page=True)

    async with page.expect_download() as downloading:
        await page.get_by_role("link", name="(JSON)").first.click()
    download = await downloading.value
    document = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
    key = private_key(api.app[settings_key].audit.signing_key).public_key()
    assert verify_anchor(document, key).seq >= 1

    await page.get_by_role("button", name="Verify the chain now").click()
    await page.wait_for_url("**/console/audit/chain/runs/*")
    # The page reloads itself (<meta http-equiv="refresh">) until the run is done; no script.
    # The whole session's chain is walked: give a loaded machine time.
    await page.get_by_text("The chain is intact").wait_for(timeout=120_000)
    assert await page.locator('meta[http-equiv="refresh"]').count() == 0
    assert await page.locator("progress").get_attribute("value") == "100"
    await shoot(page, "console-audit-verification", full_page=True)
