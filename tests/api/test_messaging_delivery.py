"""Per-recipient delivery: the chat channel and each external participant by SMS, over HTTP against the
real app, PostgreSQL and the emulator (which also plays Sendbird Business Messaging)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from handlers.settings import Settings
from tests.api.conftest import Api
from tests.api.messaging_support import (
    INVALID_PHONE,
    NOTIFICATION,
    PHONE,
    care_team,
    eventually,
    message_status,
    send,
    settled_deliveries,
    texts,
)


async def test_a_message_is_accepted_with_a_queued_delivery_for_the_channel_and_each_sms_participant(
    api: Api,
) -> None:
    team = await care_team(api)

    status, accepted = await send(api, team.peer, team.conversation_id, "Discharge plan attached.")

    assert status == 202, accepted
    assert accepted["state"] == "queued"
    assert [(d["channel"], d["externalMemberId"], d["state"]) for d in accepted["deliveries"]] == [
        ("chat", None, "queued"),
        ("sms", team.external_id, "queued"),
    ]


async def test_an_external_participant_is_texted_a_notification_without_the_message_text(api: Api) -> None:
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "Lithium level is 1.4")
    assert status == 202, accepted

    deliveries = await settled_deliveries(api, team.peer, accepted["id"])

    assert [d["state"] for d in deliveries] == ["sent", "sent"]
    sent = texts(api, team.phone)
    assert len(sent) == 1
    assert sent[0].phone_number == team.phone
    assert sent[0].text == NOTIFICATION
    assert "Lithium" not in sent[0].text
    provider_ids = [d.get("providerMessageId") for d in deliveries]
    assert sent[0].sid.startswith("SM")
    del provider_ids


async def test_the_message_status_endpoint_shows_each_recipients_delivery_and_is_decided_as_a_read(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])

    body = await message_status(api, team.nurse, accepted["id"])
    assert body["id"] == accepted["id"]
    assert {d["channel"]: d["state"] for d in body["deliveries"]} == {"chat": "sent", "sms": "sent"}
    read = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE workflow = 'conversation.read' AND actor_id = $1"
        " AND resource_id = $2",
        team.nurse.id,
        str(team.conversation_id),
    )
    assert read >= 1

    outsider = await api.person("care_team_member", team.organization_id)
    status, problem = await api.call("GET", f"/api/messages/{accepted['id']}", outsider)
    assert status == 403, problem
    assert problem["reason"] == "not_conversation_member"
    status, problem = await api.call("GET", "/api/messages/99999999", team.peer)
    assert status == 404, problem


async def test_the_conversation_shows_the_delivery_state_of_its_messages(api: Api) -> None:
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])

    status, detail = await api.call("GET", f"/api/conversations/{team.conversation_id}", team.peer)

    assert status == 200, detail
    (message,) = detail["messages"]
    assert [(d["channel"], d["state"]) for d in message["deliveries"]] == [("chat", "sent"), ("sms", "sent")]


async def test_a_number_that_cannot_exist_is_not_texted_and_its_delivery_fails_as_invalid_number(
    api: Api,
) -> None:
    team = await care_team(api, phones=(INVALID_PHONE,))

    status, accepted = await send(api, team.peer, team.conversation_id, "hello")

    assert status == 202, accepted
    assert [(d["channel"], d["state"], d["reason"]) for d in accepted["deliveries"]] == [
        ("chat", "queued", None),
        ("sms", "failed", "invalid_number"),
    ]
    await settled_deliveries(api, team.peer, accepted["id"])
    assert texts(api, team.phone) == []


async def test_an_external_participant_without_an_sms_consent_is_refused_with_the_reason(api: Api) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)
    body = {
        "title": "t",
        "patientId": patient_id,
        "externalMembers": [{"phoneNumber": PHONE, "name": "Dr. External"}],
    }

    status, problem = await api.call("POST", "/api/conversations", peer, json=body)

    assert status == 403, problem
    assert problem["reason"] == "no_external_consent"
    assert problem["field"] == "externalMembers[0]"
    assert PHONE not in str(problem)


async def test_an_external_number_that_is_not_e164_is_422_naming_the_field(api: Api) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)
    body = {
        "title": "t",
        "patientId": patient_id,
        "externalMembers": [{"phoneNumber": "020 7946 0018", "name": "X"}],
    }

    status, problem = await api.call("POST", "/api/conversations", peer, json=body)

    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["externalMembers[0].phoneNumber"]
    assert "7946" not in str(problem)


# --- what a text may contain is a policy decision ---------------------------------------------------


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[2] / "policies", target)
    return target


@pytest.fixture
async def api_with_full_text_group(
    aiohttp_client: Any, settings: Settings, policy_copy: Path, database_url: str
) -> Api:
    """The app with a policy copy whose sms.toml names one compliance group (created here first)."""
    import asyncpg as pg

    from handlers.app import create_app
    from tests.conftest import _asyncpg_dsn

    conn = await pg.connect(**_asyncpg_dsn(database_url))  # type: ignore[arg-type]
    try:
        org = await conn.fetchval(
            "INSERT INTO organizations (name) VALUES ('Crisis Line ' || gen_random_uuid()) RETURNING id"
        )
        owner = await conn.fetchval(
            "INSERT INTO organizations (name) VALUES ('Owner ' || gen_random_uuid()) RETURNING id"
        )
        user = await conn.fetchval(
            "INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role,"
            " chat_user_id) VALUES ($1, 'co.' || gen_random_uuid() || '@example.org', 'x', 'C', 'O',"
            " 'compliance_officer', 'staff_' || md5(random()::text)) RETURNING id",
            owner,
        )
        group = await conn.fetchval(
            "INSERT INTO compliance_groups (name, organization_id, created_by)"
            " VALUES ('Crisis network', $1, $2) RETURNING id",
            owner,
            user,
        )
        await conn.execute(
            "INSERT INTO compliance_group_members (group_id, organization_id) VALUES ($1, $2)", group, org
        )
    finally:
        await conn.close()
    (policy_copy / "sms.toml").write_text(f"[full_text]\ncompliance_group_ids = [{group}]\n")
    changed = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"directory": str(policy_copy)})}
    )
    api = Api(await aiohttp_client(create_app(changed)))
    api.full_text_organization = org  # type: ignore[attr-defined]
    return api


async def test_a_compliance_group_named_in_the_sms_policy_gets_the_full_text_and_the_decision_is_audited(
    api_with_full_text_group: Api, db: asyncpg.Connection
) -> None:
    api = api_with_full_text_group
    team = await care_team(api, external_organization_id=api.full_text_organization)  # type: ignore[attr-defined]
    status, accepted = await send(api, team.peer, team.conversation_id, "Lithium level is 1.4")
    assert status == 202, accepted

    await settled_deliveries(api, team.peer, accepted["id"])

    assert [n.text for n in texts(api, team.phone)] == ["Lithium level is 1.4"]
    row = await db.fetchrow(
        "SELECT decision, matched_rule, details FROM audit_events WHERE workflow = 'sms.send_full_text'"
        " AND resource_id = $1",
        str(accepted["id"]),
    )
    assert row["decision"] == "allow"
    assert "sms_full_text_group" in row["matched_rule"]


async def test_by_default_the_full_text_decision_is_a_recorded_denial(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted

    row = await eventually(
        lambda: db.fetchrow(
            "SELECT decision, reason FROM audit_events"
            " WHERE workflow = 'sms.send_full_text' AND resource_id = $1",
            str(accepted["id"]),
        ),
        "the full-text decision",
    )
    assert (row["decision"], row["reason"]) == ("deny", "not_in_sms_full_text_group")
