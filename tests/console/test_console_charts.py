"""The audit trail in charts (``/console/audit/charts``) over plain HTTP: its numbers are the stored
records' own count, another organization's records are not in them, and a bad period is named next
to its field."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.support.api import Api, Person
from tests.support.console import sign_in

ROW = re.compile(r'<tr><th scope="row">([0-9-]+)</th>(.*?)</tr>', re.S)
CELL = re.compile(r"<td>(\d+)</td>")
HEADER = re.compile(r'<th scope="col">(.*?)</th>')

#: The records an auditor of organization $1 may search: its staff's, and any about its patients, but
#: not its staff's records of what they were not told (``details.answered``).
VISIBLE = """
    (organization_id = $1 OR patient_id IN (SELECT id FROM patients WHERE organization_id = $1))
    AND NOT (organization_id = $1 AND details ? 'answered')
    AND id <= $2 AND occurred_at >= $3 AND occurred_at < $4
"""


def tables(html: str) -> list[tuple[list[str], dict[str, list[int]]]]:
    """Each figures table: its column headings, and each row's numbers by the period's first day."""
    found = []
    for table in re.findall(r'<table class="figures.*?</table>', html, re.S):
        headings = [h.replace("<wbr>", "") for h in HEADER.findall(table)]
        rows = {day: [int(n) for n in CELL.findall(cells)] for day, cells in ROW.findall(table)}
        found.append((headings, rows))
    return found


async def busy_organization(api: Api) -> tuple[int, Person, int]:
    """An organization whose patient is read, refused to a stranger, and opened under break-glass."""
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    clinician = await api.person("care_team_member", org)
    patient = await api.patient(nurse)
    assert (await api.call("GET", f"/api/patients/{patient}", nurse))[0] == 200
    stranger = await api.person("care_team_member", await api.organization())
    assert (await api.call("GET", f"/api/patients/{patient}", stranger))[0] == 404
    reason = {"reason": "Unresponsive patient, care team unreachable"}
    status, _ = await api.call("POST", f"/api/patients/{patient}/break-glass", clinician, json=reason)
    assert status == 201
    return org, nurse, patient


async def test_the_charts_count_exactly_the_organizations_own_decisions(
    api: Api, db: asyncpg.Connection
) -> None:
    org, _, _ = await busy_organization(api)
    other_org, _, _ = await busy_organization(api)  # must not show
    auditor = await api.person("auditor", org)
    assert (await sign_in(api, auditor)).status == 303
    today = datetime.now(UTC).date()
    since = datetime(today.year, today.month, today.day, tzinfo=UTC)
    last_id = await db.fetchval("SELECT max(id) FROM audit_events")

    page = await api.client.get(
        "/console/audit/charts", params={"from": today.isoformat(), "to": today.isoformat(), "per": "day"}
    )
    html = await page.text()
    assert page.status == 200, html
    (headings, decisions), (_, openings) = tables(html)

    counted = await db.fetch(
        f"""SELECT outcome, CASE WHEN outcome = 'denied' THEN reason END AS reason, count(*) AS n
            FROM audit_events WHERE decision IS NOT NULL AND {VISIBLE} GROUP BY 1, 2""",
        org,
        last_id,
        since,
        since + timedelta(days=1),
    )
    expected: dict[str, int] = {}
    for r in counted:
        label = {"success": "allowed", "failure": "allowed, then failed"}.get(
            r["outcome"], f"denied: {r['reason']}"
        )
        expected[label] = r["n"]
    [numbers] = decisions.values()
    shown = dict(zip(headings[1:-1], numbers[:-1], strict=True))
    assert shown == expected
    assert numbers[-1] == sum(expected.values())
    assert any(label.startswith("denied: ") for label in shown)  # the stranger's refused read

    # One break-glass session opened by the organization's staff today; the other one's not counted.
    opened = await db.fetchval(
        "SELECT count(*) FROM break_glass_sessions WHERE organization_id = $1 AND opened_at >= $2",
        org,
        since,
    )
    assert sum(n for [n] in openings.values()) == opened == 1
    everyone = await db.fetchval(
        f"SELECT count(*) FROM audit_events WHERE decision IS NOT NULL AND {VISIBLE}",
        other_org,
        last_id,
        since,
        since + timedelta(days=1),
    )
    assert everyone > 0  # the other organization had records today that could have leaked in
    assert '<title id="decisions-t">' in html
    assert '<desc id="decisions-d">' in html


async def test_a_compliance_officer_sees_the_charts_and_a_bad_period_is_named(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    default = await api.client.get("/console/audit/charts")
    html = await default.text()
    assert default.status == 200
    assert html.count('role="img"') == 2
    assert "Decisions per week, by outcome and reason" in html
    bad = await api.client.get("/console/audit/charts", params={"from": "yesterday", "to": "2026-01-01"})
    assert bad.status == 422
    body = await bad.text()
    assert 'id="e-from"' in body
    assert 'aria-invalid="true"' in body
    too_long = await api.client.get(
        "/console/audit/charts", params={"from": "2025-01-01", "to": "2026-06-01", "per": "week"}
    )
    assert too_long.status == 422
    assert "At most 371 days" in await too_long.text()
    per_day = await api.client.get(
        "/console/audit/charts", params={"from": "2026-01-01", "to": "2026-12-01", "per": "day"}
    )
    assert per_day.status == 422


async def test_the_charts_need_a_session_and_are_audited_as_audit_reads(api: Api) -> None:
    api.client.session.cookie_jar.clear()
    anonymous = await api.client.get("/console/audit/charts", allow_redirects=False)
    assert anonymous.status == 303
    assert anonymous.headers["Location"] == "/console/login"
    org = await api.organization()
    auditor = await api.person("auditor", org)
    assert (await sign_in(api, auditor)).status == 303
    assert (await api.client.get("/console/audit/charts")).status == 200
    status, body = await api.call(
        "GET", "/api/audit-events", auditor, params={"workflow": "audit.read", "actorId": auditor.id}
    )
    assert status == 200
    viewed: list[dict[str, Any]] = [r for r in body["items"] if r["details"].get("view") == "figures"]
    assert [(r["decision"], r["outcome"]) for r in viewed] == [("allow", "success")]
