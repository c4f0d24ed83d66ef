"""A consent revoked while something under it is in flight, against the real app and PostgreSQL.

Whatever a revocation races with, nothing under the consent happens after its commit: a text the
relay has checked and is handing to the provider either reaches the provider before the revocation
commits (the revocation waits for it), or is refused. The text tests stop the app's own relay and
drive one of their own with ``run_once``. So too an inbound reply decided under the consent, and an
external participant admitted under it to a new conversation: each is held (a table lock of the
test's own that only its next write needs) after its decision and before its commit, the consent is
revoked then, and the revocation either waits for that commit (and then ends what it let in) or
commits first and the reply or admission is refused; never accepted after the revocation's commit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from engine.inbound import handle_inbound
from engine.sms import SmsRules
from engine.workflows.messaging import PROCESSED, InboundSms
from handlers.app import create_app
from handlers.keys import chat_key, clock_key, policy_key, services_key, sessions_key
from handlers.settings import Settings
from integrations.effects.texts import TextExecutor
from integrations.relay import TEXT_KINDS, OutboxRelay, RelaySettings
from tests.support.api import Api
from tests.support.database import table_held, waiting_on_a_lock
from tests.support.fakes import FakeSmsGateway
from tests.support.messaging import CareTeam, care_team, send, stop_app_relay
from tests.support.polling import eventually


class HeldProvider(FakeSmsGateway):
    """An SMS provider that takes each text only once the test releases it, noting at that moment
    whether the consent's revocation had committed (as any other connection sees the database)."""

    def __init__(self, db: asyncpg.Connection, consent_id: int) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.revoked_when_handed_over: list[bool] = []
        self._db, self._consent_id = db, consent_id

    async def send_sms(self, *, recipient_user_id: str, phone_number: str, text: str) -> str:
        self.entered.set()
        await self.release.wait()
        revoked = await self._db.fetchval(
            "SELECT revoked_at IS NOT NULL FROM consents WHERE id = $1", self._consent_id
        )
        self.revoked_when_handed_over.append(bool(revoked))
        return await super().send_sms(
            recipient_user_id=recipient_user_id, phone_number=phone_number, text=text
        )


async def _revoke_while_a_text_is_handed_over(
    api: Api, db: asyncpg.Connection, db_pool: asyncpg.Pool, *, provider_takes: float = 0.0
) -> tuple[int, Any, HeldProvider]:
    """Queue a text under a consent, let a relay check it and start handing it over, revoke the
    consent then, and let the provider take the text ``provider_takes`` seconds after the revocation
    has committed or started to wait; returns the revocation's answer and the provider."""
    team = await care_team(api)
    await stop_app_relay(api.app)
    status, consents = await api.call("GET", f"/api/patients/{team.patient_id}/consents", team.officer)
    assert status == 200, consents
    (consent,) = consents["items"]
    status, sent = await send(api, team.peer, team.conversation_id, "see you at 3")
    assert status == 202, sent

    async with db_pool.acquire() as observer:
        provider = HeldProvider(observer, int(consent["id"]))
        app = api.app
        relay = OutboxRelay(
            app[sessions_key],
            app[chat_key],
            RelaySettings(poll_interval=0.05, claim_kinds=TEXT_KINDS),
            executors=[TextExecutor(provider, SmsRules(), lambda: app[policy_key].current, app[clock_key])],
        )
        batch = asyncio.create_task(relay.run_once())
        revocation: asyncio.Task[tuple[int, Any]] | None = None
        try:
            await asyncio.wait_for(provider.entered.wait(), 10)  # checked, and being handed over
            revocation = asyncio.create_task(
                api.call(
                    "POST", f"/api/consents/{consent['id']}/revoke", team.officer, json={"reason": "asked"}
                )
            )

            async def revocation_done_or_waiting() -> bool:
                return revocation.done() or await waiting_on_a_lock(db)

            await eventually(revocation_done_or_waiting, "the revocation to commit or to wait")
            await asyncio.sleep(provider_takes)
        finally:
            provider.release.set()
            await batch
        assert revocation is not None
        status, revoked = await revocation
    return status, revoked, provider


async def test_a_text_being_handed_over_as_its_consent_is_revoked_goes_out_before_the_revocation_commits(
    patient_api: Api, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    status, revoked, provider = await _revoke_while_a_text_is_handed_over(patient_api, db, db_pool)

    assert status == 200, revoked
    assert provider.revoked_when_handed_over == [False]
    assert len(provider.sent) == 1


async def test_a_revocation_waits_out_a_slow_hand_over_longer_than_a_statement_may_take(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    quick = settings.database.model_copy(update={"statement_timeout_ms": 300})
    api = Api(await aiohttp_client(create_app(settings.model_copy(update={"database": quick}))))

    status, revoked, provider = await _revoke_while_a_text_is_handed_over(
        api, db, db_pool, provider_takes=1.0
    )

    assert status == 200, revoked
    assert provider.revoked_when_handed_over == [False]


#: The revocation's first lock: its consent, FOR UPDATE (integrations/db/consents.py get_for_update).
_REVOCATION_LOCK = "SELECT consents.id, "


async def _revoke_while(
    api: Api, db: asyncpg.Connection, team: CareTeam, finished: list[str]
) -> asyncio.Task[tuple[int, Any]]:
    """Revoke the team's consent and return once the revocation has committed or waits on a lock."""
    status, consents = await api.call("GET", f"/api/patients/{team.patient_id}/consents", team.officer)
    assert status == 200, consents
    (consent,) = consents["items"]

    async def revoke() -> tuple[int, Any]:
        answer = await api.call(
            "POST", f"/api/consents/{consent['id']}/revoke", team.officer, json={"reason": "asked"}
        )
        finished.append("revocation")
        return answer

    revocation = asyncio.create_task(revoke())

    async def revocation_done_or_waiting() -> bool:
        return revocation.done() or await waiting_on_a_lock(db, _REVOCATION_LOCK)

    await eventually(revocation_done_or_waiting, "the revocation to commit or to wait")
    return revocation


async def test_a_reply_decided_as_its_consent_is_revoked_is_queued_before_the_revocation_commits(
    patient_api: Api, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    api = patient_api
    team = await care_team(api)
    sid = "SMreplyrace0001"
    body = json.dumps({"message_id": sid, "from": team.phone, "text": "Running late", "keyword": None})
    # Stored under a lease the app's webhook processor leaves alone: the test hands it to the workflow.
    event_id = await db.fetchval(
        "INSERT INTO webhook_events (source, dedupe_key, category, body, lease_until)"
        " VALUES ('sms', $1, 'sms:inbound', $2, now() + interval '1 hour') RETURNING id",
        f"sms:{sid}",
        body,
    )
    finished: list[str] = []

    async def reply() -> str:
        answer = await handle_inbound(
            api.app[services_key], InboundSms(event_id, sid, team.phone, "Running late")
        )
        finished.append("reply")
        return answer

    # Taking the event (FOR UPDATE) passes this lock; marking it handled, after the decision, waits.
    async with table_held(db_pool, "webhook_events"):
        replying = asyncio.create_task(reply())
        await eventually(
            lambda: waiting_on_a_lock(db, "UPDATE webhook_events SET status"), "the reply to be decided"
        )
        revocation = await _revoke_while(api, db, team, finished)
    assert await replying == PROCESSED
    status, revoked = await revocation

    assert status == 200, revoked
    accepted = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'post_sms_reply' AND payload->>'dedup_id' = $1", sid
    )
    # Before the fix the revocation committed while the reply waited, and the reply was queued after.
    assert (finished, accepted) == (["reply", "revocation"], 1)
    assert revoked["removedExternalParticipants"] == [team.external_id]


async def test_a_participant_admitted_as_their_consent_is_revoked_is_removed_by_the_revocation(
    patient_api: Api, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    api = patient_api
    team = await care_team(api)
    finished: list[str] = []

    async def start() -> tuple[int, Any]:
        answer = await api.call(
            "POST",
            "/api/conversations",
            team.peer,
            json={
                "title": "Follow-up",
                "patientId": team.patient_id,
                "memberIds": [team.nurse.id],
                "externalMembers": [{"phoneNumber": team.phone, "name": "Dr. External"}],
            },
        )
        finished.append("conversation")
        return answer

    # The conversation's row is written after its members are decided: that write waits.
    async with table_held(db_pool, "conversations"):
        starting = asyncio.create_task(start())
        await eventually(
            lambda: waiting_on_a_lock(db, "INSERT INTO conversations"), "the participant to be admitted"
        )
        revocation = await _revoke_while(api, db, team, finished)
    status, started = await starting
    revoked_status, revoked = await revocation

    assert revoked_status == 200, revoked
    # Decided under the consent before the revocation began: admitted, and the revocation waited.
    # Before the fix the revocation committed first and missed the new participant, who stayed in.
    assert (status, finished) == (201, ["conversation", "revocation"]), started
    (admitted,) = started["externalMembers"]
    assert sorted(revoked["removedExternalParticipants"]) == sorted([team.external_id, admitted["id"]])
    removed_at = await db.fetchval(
        "SELECT removed_at FROM external_participants WHERE id = $1", admitted["id"]
    )
    assert removed_at is not None
