"""Legal holds and the legal record in a real browser (Debian's Chromium, as
tests/support/browser.py drives it): a compliance officer places a hold (first with a field error),
lifts it from the keyboard, then opens a recalled message's legal record by its id and downloads the
file it carried.

With ``CAREMSG_SCREENSHOTS=DIR`` the test also saves the pages' screenshots there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.api import Api
from tests.support.browser import open_signed_in, requires_chromium, shoot
from tests.support.messaging import PDF, recalled_with_a_file

pytestmark = requires_chromium


async def test_an_officer_places_and_lifts_a_hold_and_downloads_a_recalled_file(page: Any, api: Api) -> None:
    team, sent = await recalled_with_a_file(api)
    [attachment] = sent["attachments"]
    await open_signed_in(page, api, team.officer)
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Legal holds").click()
    await page.wait_for_load_state()
    assert await page.get_by_role("heading", level=1).inner_text() == "Legal holds"
    assert await page.get_by_text("No legal holds yet.").is_visible()

    # A reason but no patient or conversation: the error stands next to the patient's field.
    await page.get_by_label("Reason (a matter, a request; up to 500 characters)").fill("Litigation 2026-114")
    await page.get_by_role("button", name="Place the hold").click()
    await page.wait_for_load_state()
    patient = page.get_by_label("Patient (id)")
    assert await patient.get_attribute("aria-invalid") == "true"
    error = page.locator(f"#{await patient.get_attribute('aria-describedby')}")
    assert "a patient id or a conversation id" in await error.inner_text()
    assert await page.get_by_label("Reason (a matter, a request; up to 500 characters)").input_value() == (
        "Litigation 2026-114"
    )
    await shoot(page, "console-legal-holds-error", full_page=True)
    await patient.fill(str(team.patient_id))
    await page.get_by_role("button", name="Place the hold").click()
    await page.wait_for_load_state()
    assert await page.get_by_role("status").inner_text() == "The hold was placed."
    row = page.get_by_role("row").filter(has_text="Litigation 2026-114")
    assert f"patient {team.patient_id}" in await row.inner_text()
    assert "active" in await row.inner_text()
    await shoot(page, "console-legal-holds", full_page=True)

    # Lift it from the keyboard: the reason, then Enter.
    [hold_id] = [h["id"] for h in (await api.call("GET", "/api/legal-holds", team.officer))[1]["holds"]]
    reason = page.get_by_label(f"Reason for lifting hold {hold_id}")
    await reason.focus()
    await page.keyboard.type("Case settled")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert await page.get_by_role("status").inner_text() == "The hold was lifted."
    row = page.get_by_role("row").filter(has_text="Litigation 2026-114")
    assert f"lifted by user {team.officer.id}" in await row.inner_text()
    assert "Case settled" in await row.inner_text()
    assert await page.get_by_role("button", name=f"Lift hold {hold_id}").count() == 0

    # The recalled message's legal record, opened by its id, and its file downloaded.
    await page.get_by_label("Message (id)").fill(str(sent["id"]))
    await page.get_by_role("button", name="Open the legal record").click()
    await page.wait_for_load_state()
    heading = f"Legal record of message {sent['id']}"
    assert await page.get_by_role("heading", level=1).inner_text() == heading
    said = page.get_by_role("region", name="What it said")
    assert "see the discharge letter" in await said.inner_text()
    recall = page.get_by_role("region", name="The recall")
    assert "wrong patient" in await recall.inner_text()
    await shoot(page, "console-legal-record", full_page=True)
    async with page.expect_download() as downloading:
        await page.get_by_role("link", name=f"Download file {attachment['id']}").click()
    download = await downloading.value
    assert download.suggested_filename == f"attachment-{attachment['id']}.pdf"
    assert await asyncio.to_thread(Path(await download.path()).read_bytes) == PDF
