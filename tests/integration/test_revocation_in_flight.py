"""A consent revoked while something under it is in flight, against the real app and PostgreSQL.

Whatever a revocation races with, nothing under the consent happens after its commit: a text the
relay has checked and is handing to the provider either reaches the provider before the revocation
commits (the revocation waits for it), or is refused. Each test stops the app's own relay and drives
one of its own with ``run_once``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from engine.sms import SmsRules
from handlers.app import create_app
from handlers.keys import chat_key, clock_key, policy_key, sessions_key
from handlers.settings import Settings
from integrations.effects.texts import TextExecutor
from integrations.relay import TEXT_KINDS, OutboxRelay, RelaySettings
from tests.support.api import Api
from tests.support.fakes import FakeSmsGateway
from tests.support.messaging import care_team, send, stop_app_relay
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


async def _waiting_on_a_lock(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
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
                return revocation.done() or await _waiting_on_a_lock(db)

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
