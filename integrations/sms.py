"""``SmsGateway`` on Sendbird Business Messaging (Sendbird's Business Messaging API documentation).

A text goes out as a Business Messaging notification on the SMS channel: ``POST {bm_base}{send_path}``
with the separate Business Messaging token, a dashboard template (``template.key``) whose one
variable ``message`` carries the text, and the recipient's Sendbird ``user_id`` as the only target
(``mode: realtime``). The recipient must be a Sendbird user carrying ``phone_number`` (E.164); the
outbox relay creates external participants that way before anything is texted.

**The path is uncertain** (§8 / §10.3): the documented one is ``/v1/notifications``; some v2 pages
show ``/v1/notifications/messages``. It is configurable (``messaging.bm_send_path``): confirm it
against the live docs before production. The reply shape is undocumented too; we keep whatever id
it carries (``request_id``, ``notification_id`` or ``id``) for the delivery row.

The API has no dedup key, so delivery is at least once: a retry after a timeout may text twice.
Errors map like the chat API's (same ``{"error": true, "code": ...}`` body, §2).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.decisions import Fact
from engine.errors import ChatGatewayError, ChatUnavailable
from engine.facts import external_facts, sms_refusal
from engine.policy import Policy
from engine.ports import SmsGateway
from engine.services import utc_now
from engine.sms import (
    Keyword,
    SmsRules,
    keyword_reply,
    sms_text,
    textable,
    which_conversation,
    with_reply_code,
)
from engine.workflows.messaging import POST_SMS_REPLY, SEND_SMS
from integrations.db.patients import SqlRelationshipFacts
from integrations.relay import OutboxEntry, RelayContext, post_once
from integrations.sendbird import TokenBucket, _reply_body

DEFAULT_SEND_PATH = "/v1/notifications"
#: custom_type of SMS replies posted into channels; their webhook echoes are ignored.
SMS_REPLY_CUSTOM_TYPE = "caremsg_sms_reply"


class SendbirdSmsGateway:
    """:class:`engine.ports.SmsGateway` over Business Messaging, on an injected ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_token: str,
        template_key: str,
        send_path: str = DEFAULT_SEND_PATH,
        timeout: float = 5.0,
        per_second: float = 5.0,
    ) -> None:
        if not base_url or not api_token or not template_key:
            raise ValueError("base_url, api_token and template_key are required")
        self._http = http
        self._url = base_url.rstrip("/") + "/" + send_path.lstrip("/")
        self._headers = {"Api-Token": api_token, "Accept": "application/json"}
        self._template_key = template_key
        self._timeout = timeout
        self._bucket = TokenBucket(per_second)

    async def send_sms(self, *, recipient_user_id: str, phone_number: str, text: str) -> str:
        """Send one realtime notification; ``phone_number`` is on the Sendbird user, not in the request."""
        body = {
            "mode": "realtime",
            "template": {
                "key": self._template_key,
                "variables": {recipient_user_id: {"message": text}},
            },
            "targets": [recipient_user_id],
        }
        await self._bucket.acquire()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(
                    self._url, json=body, headers=self._headers, timeout=self._timeout
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChatUnavailable("Business Messaging send timed out") from exc
        except httpx.HTTPError as exc:
            raise ChatUnavailable(f"Business Messaging send failed: {type(exc).__name__}") from exc
        reply: Any = _reply_body("send_sms", response)
        if isinstance(reply, dict):
            for key in ("request_id", "notification_id", "id", "message_id"):
                value = reply.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    return str(value)
        return ""


# --------------------------------------------------------------------------------------------------
# Outbox kinds: one text per delivery row, HELP answers, and SMS replies posted into the channel
# --------------------------------------------------------------------------------------------------


class SmsRefused(ChatGatewayError):
    """A text we will not send: ``code`` is the delivery's reason (opted_out, invalid_number, ...)."""

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(f"SMS not sent: {reason}")
        self.code = reason


class SendSms:
    """Text one external participant about one message (or answer HELP).

    Checked again right before texting, because time passed since the message was accepted: the
    participant is still in the conversation and has not texted STOP, a consent still counts for them
    (the fact builder's ``external_consent``, as when the message was accepted), the number is valid.
    """

    kind = SEND_SMS

    def __init__(
        self,
        gateway: SmsGateway,
        rules: SmsRules,
        policy: Callable[[], Policy],
        clock: Callable[[], datetime] = utc_now,
        *,
        two_way: bool = True,
        accept_outbound_only: bool = False,
    ) -> None:
        self._gateway = gateway
        self._rules = rules
        self._policy = policy  # the policy in force when each text goes out
        self._clock = clock
        # A text under an SMS consent promises that STOP works. Through an outbound-only provider
        # (Business Messaging) no STOP can arrive, so nothing is texted unless config accepts that.
        self._refuse_reason = None if two_way or accept_outbound_only else "no_opt_out_path"
        self._sent: dict[int, str] = {}
        # Numbers the provider refused as opted out at the carrier (a STOP caremsg never heard of),
        # by outbox id: recorded as opted out when the refusal is settled.
        self._carrier_opt_outs: dict[int, str] = {}

    async def deliver(self, entry: OutboxEntry, ctx: RelayContext) -> None:
        if "keyword_reply" in entry.payload:
            word = Keyword(entry.payload["keyword_reply"])
            await self._reply(int(entry.payload["participant_id"]), keyword_reply(word, self._rules), ctx)
            return
        if "help_participant_id" in entry.payload:  # entries queued before keyword_reply existed
            await self._reply(int(entry.payload["help_participant_id"]), self._rules.help_text, ctx)
            return
        if "reply_codes" in entry.payload:  # a held reply: ask which conversation it means
            question = which_conversation(int(c) for c in entry.payload["reply_codes"])
            await self._reply(int(entry.payload["participant_id"]), question, ctx)
            return
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT d.state, d.content, e.phone_number, e.chat_user_id, e.organization_id,"
                        " m.body, c.patient_id, e.removed_at IS NOT NULL AS removed, e.reply_code,"
                        " EXISTS (SELECT 1 FROM sms_opt_outs o WHERE o.phone_number = e.phone_number)"
                        " AS opted_out,"
                        " (SELECT count(*) FROM external_participants x"
                        "  WHERE x.phone_number = e.phone_number AND x.removed_at IS NULL)"
                        " AS active_conversations"
                        " FROM message_deliveries d"
                        " JOIN external_participants e ON e.id = d.external_participant_id"
                        " JOIN messages m ON m.id = d.message_id"
                        " JOIN conversations c ON c.id = m.conversation_id"
                        " WHERE d.id = :id"
                    ),
                    {"id": int(entry.payload["delivery_id"])},
                )
            ).one()
            candidates = await SqlRelationshipFacts(session).external_consents(
                row.patient_id, row.phone_number, row.organization_id
            )
        if row.state != "queued":
            return  # done before (a relay died between texting and recording it)
        if self._refuse_reason is not None:
            raise SmsRefused(self._refuse_reason)
        # The same facts and the same refusal order as when the message was accepted (engine/facts.py).
        spec = self._policy().workflows.get("sms.send_full_text")
        found = external_facts(spec, candidates, self._clock())
        reason = sms_refusal(
            removed=row.removed,
            opted_out=row.opted_out,
            consented=Fact.EXTERNAL_CONSENT in found.facts,
            textable=textable(row.phone_number),
        )
        if reason is not None:
            raise SmsRefused(reason)
        text_ = sms_text(row.content, row.body, self._rules)
        if row.active_conversations > 1:  # say which conversation a reply to this text goes to
            text_ = with_reply_code(text_, row.reply_code)
        try:
            self._sent[entry.id] = await self._gateway.send_sms(
                recipient_user_id=row.chat_user_id, phone_number=row.phone_number, text=text_
            )
        except ChatGatewayError as exc:
            if exc.code == "opted_out":  # the carrier has a STOP on record (e.g. Twilio's 21610)
                self._carrier_opt_outs[entry.id] = row.phone_number
            raise

    async def _reply(self, participant_id: int, reply: str, ctx: RelayContext) -> None:
        """Answer a carrier keyword; sent whatever the opt-out state (the STOP confirmation is sent to
        a number that has just opted out)."""
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    text("SELECT phone_number, chat_user_id FROM external_participants WHERE id = :id"),
                    {"id": participant_id},
                )
            ).one()
        if textable(row.phone_number):
            await self._gateway.send_sms(
                recipient_user_id=row.chat_user_id, phone_number=row.phone_number, text=reply
            )

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Record a wave's texts (sent, with the provider's id, or failed, with the reason) at once."""
        ids: list[int] = []
        states: list[str] = []
        provider_ids: list[str | None] = []
        reasons: list[str | None] = []
        for entry in done:
            provider_id = self._sent.pop(entry.id, None)
            if "delivery_id" in entry.payload:  # a keyword answer has no delivery row
                ids.append(int(entry.payload["delivery_id"]))
                states.append("sent")
                provider_ids.append(provider_id or None)
                reasons.append(None)
        carrier_opt_outs: list[str] = []
        for entry, reason in failed:
            self._sent.pop(entry.id, None)
            number = self._carrier_opt_outs.pop(entry.id, None)
            if number is not None and reason == "opted_out":
                carrier_opt_outs.append(number)
            if "delivery_id" in entry.payload:
                ids.append(int(entry.payload["delivery_id"]))
                states.append("failed")
                provider_ids.append(None)
                reasons.append(reason[:64])
        if ids:
            await session.execute(
                _SETTLE_DELIVERIES,
                {"ids": ids, "states": states, "provider_ids": provider_ids, "reasons": reasons},
            )
        if carrier_opt_outs:
            # Our record follows the carrier's: nothing more is planned for the number until START.
            await session.execute(
                text(
                    "INSERT INTO sms_opt_outs (phone_number, provider_message_id)"
                    " SELECT unnest(CAST(:numbers AS text[])), 'carrier_refusal' ON CONFLICT DO NOTHING"
                ),
                {"numbers": carrier_opt_outs},
            )

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        await self.settle([entry], [], session)

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        await self.settle([], [(entry, reason)], session)


_SETTLE_DELIVERIES = text(
    """
    UPDATE message_deliveries d SET
        state = s.state,
        provider_message_id = CASE WHEN s.state = 'sent' THEN s.provider_id ELSE d.provider_message_id END,
        reason = CASE WHEN s.state = 'failed' THEN s.reason ELSE d.reason END,
        updated_at = now()
    FROM unnest(
        CAST(:ids AS integer[]), CAST(:states AS text[]), CAST(:provider_ids AS text[]),
        CAST(:reasons AS text[])
    ) AS s(id, state, provider_id, reason)
    WHERE d.id = s.id AND d.state = 'queued'
    """
)


class PostSmsReply:
    """Post an inbound SMS into the channel as the external participant who sent it.

    The provider's message id is carried in ``data`` (what :func:`post_once` reconciles on) and as
    ``dedup_id`` (a second layer), so a provider retry (or ours) never posts twice.
    """

    kind = POST_SMS_REPLY

    async def deliver(self, entry: OutboxEntry, ctx: RelayContext) -> None:
        p = entry.payload
        await post_once(
            ctx.chat,
            entry,
            str(p["channel_url"]),
            sender_id=str(p["sender_chat_id"]),
            text=str(p["text"]),
            dedup_id=str(p["dedup_id"]),
            custom_type=SMS_REPLY_CUSTOM_TYPE,
            data=json.dumps({"source": "sms", "sms_id": str(p["dedup_id"])}),
        )

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        return None

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        return None
