"""A provider refusing caremsg's own credentials is an outage, not a refusal of what was accepted,
against the real app, PostgreSQL and the emulators over HTTP.

A token rotated at the provider and not in caremsg's configuration (or revoked, or mistyped on
deploy) is played by changing the token the emulator accepts: Sendbird then answers 400401 (HTTP
401) and Twilio 20003 (HTTP 401) to everything. While it lasts, nothing accepted is failed or
dead-lettered, however many attempts it takes (the app here gives caremsg's own errors two), the
operator is told (an error-level line naming the provider and its code, no PHI) and a metric
counts it; once the token is right again, everything is delivered exactly once, in order.
(Sendbird answering 503 is in test_outage.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from structlog.testing import capture_logs

from engine.effects import CreateChannel, PostMessage, TextMessage, kind_of
from handlers.app import create_app
from handlers.keys import operations_key
from handlers.settings import Settings
from tests.support.api import Api
from tests.support.messaging import (
    CareTeam,
    care_team,
    chat_relay,
    emulator,
    send,
    settled_deliveries,
    stop_app_relay,
    text_requests,
    texts,
    twilio,
)
from tests.support.polling import eventually, settled

N = 5
#: caremsg's own errors end an entry after this many attempts here; a refusal of our credentials
#: must outlast it.
MAX_ATTEMPTS = 2


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    outbox = settings.outbox.model_copy(update={"max_attempts": MAX_ATTEMPTS})
    return Api(await aiohttp_client(create_app(settings.model_copy(update={"outbox": outbox}))))


def _refusals(api: Api, provider: str, code: int) -> float:
    """How many deliveries the app counted as refused for its credentials by ``provider``."""
    value = api.app[operations_key].metrics.registry.get_sample_value(
        "caremsg_provider_credential_failures_total", {"provider": provider, "code": str(code)}
    )
    return value or 0.0


async def _most_attempts(db: asyncpg.Connection, kind: str, message_ids: Sequence[int]) -> int:
    attempts = await db.fetchval(
        "SELECT max(attempts) FROM outbox WHERE kind = $1 AND message_id = ANY($2::int[])",
        kind,
        list(message_ids),
    )
    return int(attempts or 0)


async def _nothing_given_up(db: asyncpg.Connection, message_ids: Sequence[int], conversation_id: int) -> None:
    """Nothing of these messages, nor of the conversation, was failed, cancelled or audited as failed."""
    ended = await db.fetch(
        "SELECT kind, status, last_error FROM outbox WHERE status NOT IN ('pending', 'done')"
        " AND (message_id = ANY($1::int[]) OR conversation_id = $2)",
        list(message_ids),
        conversation_id,
    )
    assert ended == []
    failed = await db.fetchval(
        "SELECT count(*) FROM message_deliveries WHERE state = 'failed' AND message_id = ANY($1::int[])",
        list(message_ids),
    )
    assert failed == 0
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE workflow LIKE 'delivery.%' AND outcome <> 'success'"
        " AND resource_type = 'message' AND resource_id = ANY($1::text[])",
        [str(i) for i in message_ids],
    )
    assert audited == 0


async def _accepted(api: Api, team: CareTeam, said: Sequence[str]) -> list[int]:
    """Each text sent by the team's peer into its conversation, accepted: the messages' ids."""
    ids = []
    for text in said:
        status, accepted = await send(api, team.peer, team.conversation_id, text)
        assert status == 202, accepted
        ids.append(int(accepted["id"]))
    return ids


def _told(logs: list[dict[str, Any]], provider: str, code: int, said: Sequence[str]) -> None:
    """The operator was told at error level, naming the provider and its code, and no log line
    carried what was said."""
    told = [e for e in logs if e["event"] == "relay.provider_credentials_rejected"]
    assert told, [e["event"] for e in logs]
    assert {(e["log_level"], e["provider"], e["provider_code"]) for e in told} == {("error", provider, code)}
    for event in logs:
        assert not any(text in str(event) for text in said), event


async def test_messages_accepted_while_sendbird_refuses_our_token_are_delivered_exactly_once_once_it_is_right(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    channel = team.conversation["channelUrl"]
    token = emulator(api).api_token
    emulator(api).api_token = "rotated-at-sendbird"  # caremsg's configured token is refused from now on

    said = [f"message {i}" for i in range(N)]
    with capture_logs() as logs:
        ids = await _accepted(api, team, said)
        # A conversation started meanwhile: its channel cannot be created either.
        status, other = await api.call(
            "POST", "/api/conversations", team.peer, json={"title": "Second", "patientId": team.patient_id}
        )
        assert status == 201, other

        async def refused_past_the_attempts_for_own_errors() -> bool:
            created = await db.fetchval(
                "SELECT attempts FROM outbox WHERE kind = $1 AND conversation_id = $2",
                kind_of(CreateChannel),
                other["id"],
            )
            posts = await _most_attempts(db, kind_of(PostMessage), ids)
            return created > MAX_ATTEMPTS + 1 and posts > MAX_ATTEMPTS + 1

        await eventually(
            refused_past_the_attempts_for_own_errors, "posts and a channel refused, again and again"
        )
        await _nothing_given_up(db, ids, other["id"])
        assert emulator(api).messages(channel) == []
        assert other["channelUrl"] not in emulator(api).channels
        assert await db.fetchval("SELECT channel_state FROM conversations WHERE id = $1", other["id"]) == (
            "pending"
        )
    _told(logs, "sendbird", 400401, said)
    assert _refusals(api, "sendbird", 400401) > 2 * MAX_ATTEMPTS

    emulator(api).api_token = token  # the operator puts the right token in place

    for message_id in ids:
        deliveries = await settled_deliveries(api, team.peer, message_id)
        assert [d["state"] for d in deliveries] == ["sent", "sent"]
    assert [m.message for m in emulator(api).messages(channel)] == said  # each once, in order
    assert sorted(m.dedup_id or "" for m in emulator(api).messages(channel)) == sorted(
        f"caremsg_msg_{i}" for i in ids
    )

    async def second_channel_ready() -> bool:
        state = await db.fetchval("SELECT channel_state FROM conversations WHERE id = $1", other["id"])
        return bool(state == "ready")

    await eventually(second_channel_ready, "the second conversation's channel")
    assert other["channelUrl"] in emulator(api).channels


async def test_texts_accepted_while_twilio_refuses_our_credentials_are_sent_exactly_once_once_they_are_right(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    carrier = twilio(api).state
    auth_token = carrier.auth_token
    carrier.auth_token = "rotated-at-twilio"  # caremsg's Auth Token is refused from now on

    said = [f"text {i}" for i in range(N)]
    with capture_logs() as logs:
        ids = await _accepted(api, team, said)

        async def refused_past_the_attempts_for_own_errors() -> bool:
            return await _most_attempts(db, kind_of(TextMessage), ids) > MAX_ATTEMPTS + 1

        await eventually(refused_past_the_attempts_for_own_errors, "texts refused, again and again")
        await _nothing_given_up(db, ids, team.conversation_id)
        assert texts(api, team.phone) == []
        assert len(text_requests(api, team.phone)) >= MAX_ATTEMPTS + 1  # the last claimed may be in flight
    _told(logs, "twilio", 20003, said)
    assert _refusals(api, "twilio", 20003) > MAX_ATTEMPTS

    carrier.auth_token = auth_token  # the operator puts the right Auth Token in place

    for message_id in ids:
        deliveries = await settled_deliveries(api, team.peer, message_id)
        assert [d["state"] for d in deliveries] == ["sent", "sent"]
    assert len(texts(api, team.phone)) == N  # each text once
    assert len({t.sid for t in texts(api, team.phone)}) == N


async def test_a_relay_started_after_the_credentials_are_fixed_sends_what_was_held_at_once(
    api: Api, db: asyncpg.Connection
) -> None:
    """A restart is how corrected credentials take effect: what an earlier run held for refused
    credentials, waiting out its backoff (up to ``outbox.max_backoff``, 5 minutes), goes out when the
    new relay starts, not when that backoff ends."""
    team = await care_team(api)
    await stop_app_relay(api.app)
    token = emulator(api).api_token
    emulator(api).api_token = "rotated-at-sendbird"
    ids = await _accepted(api, team, ["held 1", "held 2"])
    first_run = chat_relay(api)
    await first_run.run_once()
    held = await db.fetch(
        "UPDATE outbox SET next_attempt_at = now() + interval '1 hour' WHERE message_id = ANY($1::int[])"
        " AND last_error = 'chat_credentials_rejected' RETURNING id",
        ids,
    )
    assert held, "the first run was refused our credentials"

    emulator(api).api_token = token  # corrected, and the service restarted: a new relay starts
    restarted = asyncio.create_task(chat_relay(api).run())
    try:
        channel = team.conversation["channelUrl"]
        posted = await eventually(
            lambda: settled([m.message for m in emulator(api).messages(channel)] == ["held 1", "held 2"]),
            "the held posts to go out",
        )
    finally:
        restarted.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await restarted
    assert posted
