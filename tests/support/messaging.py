"""Messaging scenarios: a care team with a consented external participant, the emulators wired to
the app's own webhook endpoints, sends, their deliveries and the texts that went out."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from handlers.api_messaging import messaging_key
from handlers.keys import chat_key, emulator_key, relay_key, sessions_key, twilio_emulator_key
from integrations.relay import TEXT_KINDS, OutboxRelay, RelaySettings
from integrations.sendbird_emulator import EmulatorState, RunningEmulator
from integrations.twilio_emulator import EmulatedSms, RunningTwilioEmulator
from tests.support.api import Api, Person
from tests.support.polling import eventually

#: A small PDF (its magic bytes are what the attachment check reads).
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
#: A valid US number (libphonenumber) for the external participant.
PHONE = "+12025550143"

#: Longer than any test: a hang lasts until the test releases it (``release_hangs``) once what it
#: waits for has happened, not for a fixed time. A client that is to see a hang out waits as long
#: (``patient_chat``, ``patient_api`` in tests/integration/conftest.py): the app's gives up after
#: 2 s (tests/conftest.py), and on a loaded machine what a test waits for can take that long, so a
#: hang would end in a timeout the test did not ask for.
UNTIL_RELEASED = 60.0


def unique_phone() -> str:
    """A valid US number no other test uses: inbound SMS are routed by number."""
    return f"+1202{200 + secrets.randbelow(800)}{secrets.randbelow(10_000):04d}"


#: E.164 with a known country code, so the API takes it, but no valid number of its plan.
INVALID_PHONE = "+11234567890"
NOTIFICATION = "You have a new secure message from your care team."


@dataclass
class CareTeam:
    """A peer on the patient's care team, a nurse colleague, a compliance officer, one conversation
    (ready) with the nurse and one consented external participant."""

    organization_id: int
    peer: Person
    nurse: Person
    officer: Person
    patient_id: int
    conversation: dict[str, Any]
    phones: tuple[str, ...] = ()

    @property
    def phone(self) -> str:
        return self.phones[0]

    @property
    def conversation_id(self) -> int:
        return int(self.conversation["id"])

    @property
    def external_id(self) -> int:
        return int(self.conversation["externalMembers"][0]["id"])


def running_emulator(api: Api) -> RunningEmulator:
    return api.app[emulator_key]


def emulator(api: Api) -> EmulatorState:
    return api.app[emulator_key].state


def twilio(api: Api) -> RunningTwilioEmulator:
    """The Twilio emulator: the carrier texts go out through and replies come in from."""
    return api.app[twilio_emulator_key]


def texts(api: Api, phone: str) -> list[EmulatedSms]:
    """The texts Twilio accepted from caremsg for ``phone``, in order.

    Filtered by number: the test database is shared, and a text an earlier test left queued may be
    delivered by this test's app (through this test's carrier) to that test's own number.
    """
    return [t for t in twilio(api).state.sent if t.phone_number == phone]


def text_requests(api: Api, phone: str) -> list[tuple[str, str, dict[str, str]]]:
    """The requests to send ``phone`` a text that reached the carrier, answered or refused."""
    return [r for r in twilio(api).state.received if r[0] == "POST" and r[2].get("To") == phone]


def receive_sms(api: Api, from_number: str, text: str, *, message_sid: str | None = None) -> str:
    """A person texts caremsg's number (Twilio posts it to the webhook); returns the Message SID."""
    return twilio(api).receive_sms(from_number, text, message_sid=message_sid)


def wire_webhooks(api: Api) -> None:
    """Point the emulators' signed webhooks at this test server's own endpoints."""
    running_emulator(api).set_webhook_urls(str(api.client.make_url("/api/webhooks/sendbird")))
    twilio(api).set_webhook_url(str(api.client.make_url("/api/webhooks/twilio")))


async def care_team(
    api: Api,
    *,
    phones: tuple[str, ...] | None = None,
    external_organization_id: int | None = None,
    consent_fields: dict[str, Any] | None = None,
) -> CareTeam:
    """A conversation of a peer and a nurse with external participants, each admitted by a consent
    naming their number (with ``consent_fields`` besides, e.g. ``part2``). With
    ``external_organization_id`` the participants are that organization's (its directory lists
    them), so one of its nurses, on the patient's care team under a consent naming it, starts the
    conversation: a directory vouches only to its own organization's staff."""
    phones = phones or (unique_phone(),)
    org = await api.organization()
    peer = await api.person("peer_support", org)
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    patient_id = await api.patient(peer)
    externals = []
    if external_organization_id is not None:
        # The organization vouches for the numbers (its contact directory): naming it proves nothing.
        admin = await api.person("admin", external_organization_id)
        for phone in phones:
            await add_contact(api, admin, external_organization_id, phone)
    for phone in phones:
        await api.consent(
            officer,
            patient_id,
            externalParty={"phoneNumber": phone, "name": "Dr. External"},
            **(consent_fields or {}),
        )
        member: dict[str, Any] = {"phoneNumber": phone, "name": "Dr. External"}
        if external_organization_id is not None:
            member["organizationId"] = external_organization_id
        externals.append(member)
    body = {
        "title": "Care coordination",
        "patientId": patient_id,
        "memberIds": [nurse.id],
        "externalMembers": externals,
    }
    creator = peer
    if external_organization_id is not None:
        # Covered for conversations, not for texts: each text stays under its number's consent.
        await api.consent(
            officer, patient_id, organizationId=external_organization_id, scope=["read", "message"]
        )
        creator = await api.person("care_team_member", external_organization_id)
        _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", peer)
        status, added = await api.call(
            "POST",
            f"/api/care-teams/{team['id']}/members",
            await api.person("admin", org),
            json={"userId": creator.id},
        )
        assert status == 201, added
        body["memberIds"] = [peer.id, nurse.id]
    status, created = await api.call("POST", "/api/conversations", creator, json=body)
    assert status == 201, created
    team = CareTeam(org, peer, nurse, officer, patient_id, created, phones)
    await ready(api, team)
    return team


async def add_contact(api: Api, admin: Person, organization_id: int, phone: str) -> dict[str, Any]:
    status, body = await api.call(
        "POST",
        f"/api/organizations/{organization_id}/contacts",
        admin,
        json={"phoneNumber": phone, "name": "Dr. External"},
    )
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def ready(api: Api, team: CareTeam) -> None:
    async def probe() -> bool:
        status, body = await api.call("GET", f"/api/conversations/{team.conversation_id}", team.peer)
        assert status == 200, body
        assert body["channelState"] != "failed", body
        return bool(body["channelState"] == "ready")

    # 30 s: a full run on a loaded two-core machine once took longer than 10 s (a run's other
    # workers and their PostgreSQL share the cores); the channel's state is what is asserted.
    await eventually(probe, "the channel to be ready", within=30.0)


async def send(api: Api, who: Person, conversation_id: int, text: str, **kw: Any) -> tuple[int, Any]:
    body = {"conversationId": conversation_id, "message": text}
    return await api.call("POST", "/api/conversations/send-message", who, json=body, **kw)


async def message_status(api: Api, who: Person, message_id: int) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/messages/{message_id}", who)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def settled_deliveries(api: Api, who: Person, message_id: int) -> list[dict[str, Any]]:
    """The message's deliveries once none is queued any more."""

    async def probe() -> list[dict[str, Any]] | None:
        body = await message_status(api, who, message_id)
        deliveries: list[dict[str, Any]] = body["deliveries"]
        return deliveries if all(d["state"] != "queued" for d in deliveries) else None

    return await eventually(probe, f"the deliveries of message {message_id} to settle")


async def recalled_with_a_file(api: Api) -> tuple[CareTeam, dict[str, Any]]:
    """A care team whose peer sent a PDF with a text, then recalled it: (the team, the message as
    sent). Its legal record holds the text, the reason ("wrong patient") and the file."""
    team = await care_team(api)
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(PDF), filename="discharge.pdf", content_type="application/pdf")
    form.add_field("message", "see the discharge letter")
    status, sent = await api.call(
        "POST", f"/api/conversations/{team.conversation_id}/attachments", team.peer, data=form
    )
    assert status == 202, sent
    await settled_deliveries(api, team.peer, sent["id"])
    status, recalled = await api.call(
        "POST", f"/api/messages/{sent['id']}/recall", team.peer, json={"reason": "wrong patient"}
    )
    assert status == 200, recalled
    return team, sent


def staff_post(
    team: CareTeam, sender_chat_id: str, *, message_id: int, text: str, sdk: str = "JavaScript"
) -> Any:
    """A ``group_channel:message_send`` event as Sendbird sends it for a post from a chat SDK (§7)."""
    return {
        "category": "group_channel:message_send",
        "app_id": "emulator",
        "type": "MESG",
        "custom_type": "",
        "silent": False,
        "sdk": sdk,
        "sender": {"user_id": sender_chat_id, "nickname": "N", "profile_url": "https://x.example/a.png"},
        "payload": {
            "message_id": message_id,
            "message": text,
            "custom_type": "",
            "data": "",
            "created_at": 1,
        },
        "channel": {"channel_url": team.conversation["channelUrl"], "name": "Care", "custom_type": ""},
    }


async def stop_app_relay(app: web.Application) -> None:
    """Stop ``app``'s outbox relay (its task, not any relay's: other apps may be running on the
    test's event loop): what the app accepts from now on stays in the outbox for the test."""
    task = app[relay_key].task
    assert task is not None, "the app's relay has not started"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def chat_relay(api: Api) -> OutboxRelay:
    """A relay of ``api``'s chat effects (everything but texts), with the app's executors, for a
    test that stopped the app's own relay and drives this one."""
    return OutboxRelay(
        api.app[sessions_key],
        api.app[chat_key],
        RelaySettings(poll_interval=0.05, base_backoff=0.05, max_backoff=0.2, skip_kinds=TEXT_KINDS),
        executors=api.app[messaging_key].outbox_kinds,
        jitter=lambda cap: cap,
    )


def text_relay(api: Api) -> OutboxRelay:
    """A relay of ``api``'s texts only, with the app's executors of them, for a test that stopped the
    app's own relay and drives this one with ``run_once``."""
    return OutboxRelay(
        api.app[sessions_key],
        api.app[chat_key],
        RelaySettings(poll_interval=0.05, base_backoff=0.05, max_backoff=0.2, claim_kinds=TEXT_KINDS),
        executors=api.app[messaging_key].outbox_kinds,
        jitter=lambda cap: cap,
    )


async def set_aside_others_due(db: asyncpg.Connection, conversation_id: int) -> None:
    """Cancel what other conversations have pending. A claim takes each conversation's first due
    entry before a second of any: entries earlier tests left due (their relays stopped) can fill a
    batch and leave a test's own second entry unclaimed."""
    await db.execute(
        "UPDATE outbox SET status = 'cancelled', done_at = now() WHERE status = 'pending'"
        " AND conversation_id IS DISTINCT FROM $1",
        conversation_id,
    )
