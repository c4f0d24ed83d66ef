"""An app judges every fact by its own clock (``create_app``'s ``clock``), in the background as in
requests: whether a consent is active when a text goes out, and which Part 2 consents call for the
42 CFR 2.32 notice before a message, are read by the clock that decided the send, not by the
machine's time or the database's ``now()``; a request body's "today" (a date of birth) is the
app's too. The apps here run an hour ahead of both, so a consent
that begins "now" by the app's clock lies an hour in the future by theirs.

(The consent listener's clock is tested in test_consent_sync.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.policy import PART2_SHORT_NOTICE
from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import Api
from tests.support.fakes import ShiftedClock
from tests.support.messaging import (
    NOTIFICATION,
    CareTeam,
    care_team,
    emulator,
    ready,
    send,
    settled_deliveries,
    texts,
)
from tests.support.part2 import PART2_ELEMENTS


async def app_ahead(aiohttp_client: Any, settings: Settings, **delta: float) -> tuple[Api, ShiftedClock]:
    clock = ShiftedClock()
    clock.advance(**delta)
    return Api(await aiohttp_client(create_app(settings, clock=clock))), clock


async def app_an_hour_ahead(aiohttp_client: Any, settings: Settings) -> tuple[Api, ShiftedClock]:
    return await app_ahead(aiohttp_client, settings, hours=1)


async def test_a_text_under_a_consent_that_began_now_by_the_apps_clock_goes_out(
    aiohttp_client: Any, settings: Settings
) -> None:
    api, _ = await app_an_hour_ahead(aiohttp_client, settings)
    team = await care_team(api)  # its consent begins at the app's "now"
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted

    deliveries = await settled_deliveries(api, team.peer, accepted["id"])

    assert sorted(d["state"] for d in deliveries) == ["sent", "sent"], deliveries
    assert [t.text for t in texts(api, team.phone)] == [NOTIFICATION]


async def test_the_part2_notice_is_due_under_a_consent_that_began_now_by_the_apps_clock(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    api, clock = await app_an_hour_ahead(aiohttp_client, settings)
    org, partner_org = await api.organization(), await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    partner = await api.person("care_team_member", partner_org)
    patient_id = await api.patient(peer)
    expires = (clock() + timedelta(days=365)).isoformat()
    await api.consent(
        officer, patient_id, organizationId=partner_org, expiresAt=expires, part2=PART2_ELEMENTS
    )
    body = {"title": "Care coordination", "patientId": patient_id, "memberIds": [partner.id]}
    status, created = await api.call("POST", "/api/conversations", peer, json=body)
    assert status == 201, created
    await ready(api, CareTeam(org, peer, partner, officer, patient_id, created))
    effective: datetime = await db.fetchval(
        "SELECT effective_at FROM consents WHERE patient_id = $1", patient_id
    )
    assert effective > await db.fetchval("SELECT now()")  # in the future by the database's clock

    status, accepted = await send(api, peer, int(created["id"]), "first")
    assert status == 202, accepted
    await settled_deliveries(api, peer, accepted["id"])

    url = created["channelUrl"]
    posted = [(m.custom_type, m.message) for m in emulator(api).channels[url].messages]
    assert [p for p in posted if p[0] != "caremsg_conversation"] == [
        ("caremsg_part2_notice", PART2_SHORT_NOTICE),
        ("caremsg_message", "first"),
    ]
    noticed_at = await db.fetchval(
        "SELECT occurred_at FROM audit_events WHERE event = 'part2.notice_sent' AND resource_id = $1",
        str(created["id"]),
    )
    assert noticed_at >= effective  # audited by the same clock


async def test_a_date_of_birth_is_checked_against_the_apps_today(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Three days ahead, the app's today is three days past the machine's: a birth then is no
    birth in the future, and the day after the app's today (anywhere) still is."""
    api, clock = await app_ahead(aiohttp_client, settings, days=3)
    nurse = await api.person("care_team_member", await api.organization())
    today = (clock() + timedelta(hours=14)).date()
    body = {"firstName": "Ada", "lastName": "Quist", "riskLevel": "low", "dateOfBirth": today.isoformat()}

    status, created = await api.call("POST", "/api/patients", nurse, json=body)
    assert status == 201, created
    later = {**body, "dateOfBirth": (today + timedelta(days=1)).isoformat()}
    status, refused = await api.call("POST", "/api/patients", nurse, json=later)
    assert status == 422
    assert [e["field"] for e in refused["errors"]] == ["dateOfBirth"]
