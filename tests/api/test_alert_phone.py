"""PUT/GET/DELETE /api/auth/alert-phone: staff register the number an unacknowledged urgent message's
text step is sent to (policies/escalation.toml); decided as alert_phone.set, audited without the
number."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests.support.api import Api

NUMBER = "+14155550142"


async def test_a_care_team_member_registers_reads_and_forgets_their_alert_phone(
    api: Api, db: asyncpg.Connection
) -> None:
    nurse = await api.person("care_team_member", await api.organization())

    status, body = await api.call("PUT", "/api/auth/alert-phone", nurse, json={"phoneNumber": NUMBER})
    assert (status, body) == (200, {"phoneNumber": NUMBER})
    assert await db.fetchval("SELECT alert_phone FROM users WHERE id = $1", nurse.id) == NUMBER
    status, body = await api.call("GET", "/api/auth/alert-phone", nurse)
    assert (status, body) == (200, {"phoneNumber": NUMBER})

    status, _ = await api.call("DELETE", "/api/auth/alert-phone", nurse)
    assert status == 204
    assert await db.fetchval("SELECT alert_phone FROM users WHERE id = $1", nurse.id) is None
    _, body = await api.call("GET", "/api/auth/alert-phone", nurse)
    assert body == {"phoneNumber": None}

    rows = await db.fetch(
        "SELECT decision, details FROM audit_events WHERE workflow = 'alert_phone.set' AND actor_id = $1"
        " ORDER BY id",
        nurse.id,
    )
    assert [(r["decision"], json.loads(r["details"])["registered"]) for r in rows] == [
        ("allow", True),
        ("allow", False),
    ]
    assert all(NUMBER not in r["details"] for r in rows)


@pytest.mark.parametrize("number", ["not a number", "+1415", "12"])
async def test_a_number_that_is_not_one_is_a_422_naming_the_field(
    api: Api, db: asyncpg.Connection, number: str
) -> None:
    nurse = await api.person("care_team_member", await api.organization())
    status, body = await api.call("PUT", "/api/auth/alert-phone", nurse, json={"phoneNumber": number})
    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == ["phoneNumber"]
    assert await db.fetchval("SELECT alert_phone FROM users WHERE id = $1", nurse.id) is None


async def test_an_auditor_has_no_alert_phone_to_register(api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    status, body = await api.call("PUT", "/api/auth/alert-phone", auditor, json={"phoneNumber": NUMBER})
    assert (status, body["reason"]) == (403, "role_not_permitted")
