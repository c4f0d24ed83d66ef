"""The console in a real browser: Playwright drives Debian's Chromium (tests/support/browser.py);
without it, or without Playwright, these tests skip and say why. The tests about signing in go
through the form; the others start with the session cookie it would have set."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.api import PASSWORD, Api
from tests.support.browser import append_line, open_signed_in, requires_chromium, shoot, sign_in, url
from tests.support.console import IDLE_SECONDS
from tests.support.fakes import ShiftedClock

pytestmark = requires_chromium


async def test_a_compliance_officer_sees_the_policy_in_words_and_the_audit_search(
    page: Any, api: Api
) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    await sign_in(page, api, officer)
    assert await page.get_by_role("heading", name="Console").is_visible()
    await page.get_by_role("main").get_by_role("link", name="The policy in words").click()
    await page.wait_for_load_state()
    assert await page.get_by_role("heading", level=1).inner_text() == "The policy in words"
    sentence = page.get_by_text("A peer support specialist may read a patient's record when they are on")
    assert await sentence.count() >= 1
    assert await page.get_by_role("heading", name="The facts, explained").is_visible()
    await page.goto(url(api, "/console/audit"))
    assert await page.get_by_label("Workflow (e.g. patient.read)").is_visible()


async def test_an_auditor_has_the_audit_search_and_not_the_policy_page(page: Any, api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    await open_signed_in(page, api, auditor)
    main = page.get_by_role("main")
    assert await main.get_by_role("link", name="Audit search").count() == 1
    assert await main.get_by_role("link", name="The policy in words").count() == 0
    response = await page.goto(url(api, "/console/policy"))
    assert response.status == 403
    assert "role_not_permitted" in await page.get_by_role("alert").inner_text()


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "admin"])
async def test_staff_roles_cannot_enter_the_console(page: Any, api: Api, role: str) -> None:
    person = await api.person(role, await api.organization())
    await sign_in(page, api, person)
    assert "compliance officers and auditors" in await page.get_by_role("alert").inner_text()
    response = await page.goto(url(api, "/console/audit"))
    assert response.url.endswith("/console/login")


async def test_the_console_can_be_used_with_the_keyboard_alone(page: Any, api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    await page.goto(url(api, "/console/login"))
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.get_by_label("Email").focus()
    await page.keyboard.type(auditor.email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/console/")
    assert await page.get_by_role("button", name="Sign out").is_visible()


async def test_a_form_posted_from_another_page_without_the_token_is_refused(page: Any, api: Api) -> None:
    """Another origin on the same host (another port) is the same site, so SameSite lets the cookie
    through: the CSRF token is what refuses the forged sign-out."""
    target = url(api, "/console/logout")

    async def forged(request: web.Request) -> web.Response:
        html = f'<form method="post" action="{target}"><button type="submit">Win a prize</button></form>'
        return web.Response(text=html, content_type="text/html")

    other = web.Application()
    other.router.add_get("/", forged)
    server = TestServer(other)
    await server.start_server()
    try:
        auditor = await api.person("auditor", await api.organization())
        await sign_in(page, api, auditor)
        await page.goto(str(server.make_url("/")))
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Win a prize").click()
        response = await navigation.value
        assert response.status == 403
        assert "security token" in await page.get_by_role("alert").inner_text()
    finally:
        await server.close()
    # Still signed in: the forged post did nothing.
    await page.goto(url(api, "/console/"))
    assert await page.get_by_role("button", name="Sign out").is_visible()


async def test_the_session_expires_after_the_idle_timeout(page: Any, api: Api, clock: ShiftedClock) -> None:
    auditor = await api.person("auditor", await api.organization())
    await open_signed_in(page, api, auditor)
    assert await page.get_by_role("button", name="Sign out").is_visible()
    clock.advance(seconds=IDLE_SECONDS + 1.5)  # idle past the timeout, on the app's clock
    await page.goto(url(api, "/console/audit"))
    assert page.url.endswith("/console/login")
    assert await page.get_by_role("button", name="Sign in").is_visible()


async def test_sign_out_returns_to_the_sign_in_page(page: Any, api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    await open_signed_in(page, api, auditor)
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/login")
    await page.goto(url(api, "/console/"))
    assert page.url.endswith("/console/login")


async def test_an_auditor_searches_the_audit_trail_and_opens_a_record(page: Any, api: Api) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    peer = await api.person("peer_support", org)
    await api.patient(peer)
    await open_signed_in(page, api, auditor, "/console/audit")
    await page.get_by_label("Actor (user id)").fill(str(peer.id))
    await page.get_by_label("Workflow (e.g. patient.read)").fill("patient.create")
    await page.get_by_label("Decision").select_option("allow")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    rows = page.locator("table tbody tr")
    assert await rows.count() == 1
    await rows.first.locator("summary").click()
    detail = await rows.first.locator("dl").inner_text()
    assert "roles.csv" in detail  # the rule that allowed it
    assert "Chain" in detail
    # A bad filter is named next to its field.
    await page.get_by_label("Actor (user id)").fill("not-a-number")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    assert await page.get_by_label("Actor (user id)").get_attribute("aria-invalid") == "true"


async def test_every_field_has_a_label_and_the_audit_page_prints_without_its_form(
    page: Any, api: Api
) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    await open_signed_in(page, api, officer, "/console/audit?search=1")
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select')]
               .filter(field => field.labels.length === 0).map(field => field.name)"""
    )
    assert unlabelled == []
    assert await page.get_by_role("main").count() == 1
    assert await page.get_by_role("navigation", name="Console").count() == 1
    await page.emulate_media(media="print")
    assert not await page.get_by_role("button", name="Search").is_visible()
    assert not await page.get_by_role("button", name="Sign out").is_visible()
    assert await page.get_by_role("heading", name="Results").is_visible()


async def test_an_officer_reviews_a_break_glass_session_from_the_list(page: Any, api: Api) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    clinician = await api.person("care_team_member", org)
    patient_id = await api.patient(peer)
    reason = "Unresponsive patient in the ED, care team unreachable"
    status, opened = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": reason}
    )
    assert status == 201, opened
    assert (await api.call("GET", f"/api/patients/{patient_id}", clinician))[0] == 200
    await open_signed_in(page, api, officer)
    nav = page.get_by_role("navigation", name="Console")
    await nav.get_by_role("link", name="Break-glass review").click()
    await page.wait_for_load_state()
    await page.get_by_role("link", name=f"Session {opened['id']}").click()
    await page.wait_for_load_state()
    assert reason in await page.get_by_role("main").inner_text()
    assert await page.get_by_role("table").get_by_text("patient.read").count() == 1
    # The note, typed and submitted with the keyboard alone.
    await page.get_by_label("Review note").focus()
    await page.keyboard.type("Justified: ED lead confirmed.")
    await page.keyboard.press("Tab")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert (
        f"Reviewed for your organization by user {officer.id}"
        in await page.get_by_role("status").inner_text()
    )
    assert await page.get_by_label("Review note").count() == 0
    await page.get_by_role("link", name="Back to the review list").click()
    await page.wait_for_load_state()
    assert "reviewed" in await page.get_by_role("table").inner_text()


async def test_a_patients_accounting_of_disclosures_prints_as_a_table(page: Any, api: Api) -> None:
    org, partner = await api.organization(), await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    outsider = await api.person("care_team_member", partner)
    patient = await api.patient(nurse)
    await api.consent(officer, patient, organizationId=partner, purpose="care_coordination")
    _, team = await api.call("GET", f"/api/patients/{patient}/care-team", nurse)
    status, _ = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", nurse, json={"userId": outsider.id}
    )
    assert status == 201
    assert (await api.call("GET", f"/api/patients/{patient}", outsider))[0] == 200
    await open_signed_in(page, api, officer)
    await page.get_by_role("main").get_by_role("link", name="A patient's accounting of disclosures").click()
    await page.wait_for_load_state()
    await page.get_by_label("Patient (id)").fill(str(patient))
    await page.get_by_role("button", name="Show the accounting").click()
    await page.wait_for_load_state()
    table = page.get_by_role("table")
    assert await table.get_by_text("patient.read").count() == 1
    await page.emulate_media(media="print")
    assert not await page.get_by_role("button", name="Show the accounting").is_visible()
    assert not await page.get_by_role("navigation", name="Console").is_visible()
    assert await page.get_by_role(
        "heading", name=f"Accounting of disclosures for patient {patient}"
    ).is_visible()
    # The header row repeats on every printed sheet.
    header = await page.evaluate("getComputedStyle(document.querySelector('table thead')).display")
    assert header == "table-header-group"


async def test_an_officer_records_a_consent_with_a_field_error_then_revokes_it(page: Any, api: Api) -> None:
    org, partner = await api.organization(), await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    patient = await api.patient(nurse)
    await open_signed_in(page, api, officer)
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Consents").click()
    await page.wait_for_load_state()
    await page.get_by_label("Patient (id)").fill(str(patient))
    await page.get_by_role("button", name="Find consents").click()
    await page.wait_for_load_state()
    assert await page.get_by_text("No consents recorded.").is_visible()
    # Submitted without a purpose: the error is next to the field, what was typed stays.
    await page.get_by_label("Organization (id)").fill(str(partner))
    await page.get_by_role("button", name="Record the consent").click()
    await page.wait_for_load_state()
    assert await page.get_by_label("Purpose").get_attribute("aria-invalid") == "true"
    assert await page.get_by_label("Organization (id)").input_value() == str(partner)
    await page.get_by_label("Purpose").select_option("treatment")
    await page.get_by_label("write").check()
    await page.get_by_role("button", name="Record the consent").click()
    await page.wait_for_load_state()
    assert "recorded" in await page.get_by_role("status").inner_text()
    row = page.get_by_role("table").locator("tbody tr")
    assert await row.count() == 1
    scope = await row.locator("td").nth(3).inner_text()
    assert set(scope.split(", ")) == {"read", "message", "sms", "write"}
    consent_id = (await row.locator("td").first.inner_text()).strip()
    await page.get_by_label(f"Reason for revoking consent {consent_id}").fill("Patient withdrew it")
    await page.get_by_role("button", name=f"Revoke consent {consent_id}").click()
    await page.wait_for_load_state()
    assert "revoked" in await page.get_by_role("status").inner_text()
    assert "Patient withdrew it" in await page.get_by_role("table").inner_text()


async def test_a_what_if_with_a_breaking_edit_shows_the_error_at_its_file_and_line(
    page: Any, api: Api
) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    await page.set_viewport_size({"width": 1280, "height": 900})
    await open_signed_in(page, api, officer)
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="What if").click()
    await page.wait_for_load_state()
    assert "A dry run: nothing you send here is applied." in await page.get_by_role("note").inner_text()
    # Start from the current roles.csv, keyboard only: choose it, load it, edit, try it.
    await page.get_by_label("Start from the current text of").select_option("roles.csv")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Load it into the text area").press("Enter")
    area = page.get_by_label("Edited text (paste a whole file)")
    current = await area.input_value()
    assert current.startswith("#")
    edited = current + "p, peer_suport, patient.read, care_team & covered\n"
    await append_line(page, area, "p, peer_suport, patient.read, care_team & covered\n")
    assert await page.get_by_label("The pasted text replaces").input_value() == "roles.csv"
    async with page.expect_navigation():
        await page.get_by_role("button", name="Try the edit").press("Enter")
    problems = await page.locator("ul.problems").inner_text()
    assert f"roles.csv:{edited.count(chr(10))}: error: unknown role 'peer_suport'" in problems
    assert "NOT OK" in await page.get_by_role("alert").first.inner_text()
    # What was pasted stays in the form, to be fixed and tried again.
    assert (await area.input_value()).endswith("p, peer_suport, patient.read, care_team & covered\n")
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(field => field.labels.length === 0).map(field => field.name)"""
    )
    assert unlabelled == []
    await page.get_by_role("heading", name="The edit (not applied)").scroll_into_view_if_needed()
    await shoot(page, "console-what-if")
    await page.emulate_media(media="print")
    assert not await page.get_by_role("button", name="Try the edit").is_visible()
    assert await page.get_by_role("heading", name="Policy check").is_visible()


async def test_an_officer_reads_the_test_tables_and_the_rules_no_case_exercises(page: Any, api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    await page.set_viewport_size({"width": 1280, "height": 900})
    await open_signed_in(page, api, officer)
    await page.get_by_role("main").get_by_role("link", name="The policy's test tables").click()
    await page.wait_for_load_state()
    assert await page.get_by_role("heading", name="What no case exercises").is_visible()
    assert "0 failed" in await page.get_by_role("heading", name="Summary").locator("xpath=..").inner_text()
    rows = page.locator("table tbody tr")
    assert await rows.count() > 100
    assert await page.locator("ul.rules li").count() >= 1
    await shoot(page, "console-policy-tests")


async def test_a_what_if_of_a_rule_change_counts_the_decisions_it_would_change_per_workflow(
    page: Any, api: Api
) -> None:
    org = await api.organization()
    officer = await api.person("compliance_officer", org)
    peer = await api.person("peer_support", org)
    nurse = await api.person("care_team_member", org)
    patient = await api.patient(peer)  # whoever registers a patient joins its care team
    _, team = await api.call("GET", f"/api/patients/{patient}/care-team", peer)
    for _ in range(2):
        status, _ = await api.call(
            "POST", f"/api/care-teams/{team['id']}/members", peer, json={"userId": nurse.id}
        )
        assert status == 403
    await page.set_viewport_size({"width": 1280, "height": 900})
    await open_signed_in(page, api, officer, "/console/policy/what-if?file=roles.csv")
    area = page.get_by_label("Edited text (paste a whole file)")
    await append_line(page, area, "p, peer_support, care_team.add_member, care_team & covered\n")
    await page.get_by_role("button", name="Try the edit").click()
    await page.wait_for_load_state()
    per_workflow = page.get_by_role("table", name="Decisions that would change, per workflow")
    row = per_workflow.get_by_role("row").filter(has_text="care_team.add_member")
    assert (await row.get_by_role("cell").nth(1).inner_text()) == "2"
    await page.get_by_role(
        "heading", name="Audited decisions the edit would change"
    ).scroll_into_view_if_needed()
    await shoot(page, "console-what-if-diff")


async def test_an_auditor_reads_the_charts_and_their_tables_which_print(page: Any, api: Api) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    nurse = await api.person("care_team_member", org)
    patient = await api.patient(nurse)
    stranger = await api.person("care_team_member", await api.organization())
    assert (await api.call("GET", f"/api/patients/{patient}", stranger))[0] == 404  # a denial
    await open_signed_in(page, api, auditor)
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Charts").click()
    await page.wait_for_load_state()
    decisions = page.get_by_role("img", name="Decisions per week, by outcome and reason")
    assert await decisions.count() == 1
    assert await page.get_by_role("img", name="Break-glass sessions opened per week").count() == 1
    # The same numbers as a table: this week's row has the denial.
    table = page.get_by_role("table", name="Decisions per week")
    assert "denied: not_on_care_team" in await table.locator("thead").inner_text()
    # A bar per day for one day, chosen with the keyboard-usable form.
    today = (await page.get_by_label("To (UTC date, included)").input_value()).strip()
    await page.get_by_label("From (UTC date)").fill(today)
    await page.get_by_label("A bar per").select_option("day")
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_load_state()
    rows = page.get_by_role("table", name="Decisions per day").locator("tbody tr")
    assert await rows.count() == 1
    await page.emulate_media(media="print")
    assert not await page.get_by_role("button", name="Show").is_visible()
    assert await page.get_by_role("img", name="Decisions per day, by outcome and reason").is_visible()
