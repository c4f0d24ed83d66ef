"""The executor of texts: one per message delivery row, keyword answers, and reply-code questions.

Whether a text about a message may go out is decided again right before texting, because time passed
since the message was accepted, by the same pure rule that planned it (:func:`engine.facts.sms_refusal`,
over the fact builder's ``external_consent``): the participant is still in the conversation, has not
texted STOP, a consent still counts for them, the number is valid. An answer to a number's own
text (a keyword's, the question which conversation a reply means) is decided again the same way, by
:func:`engine.facts.answer_refusal`: nothing but the confirmation of a STOP goes to a number that
has opted out, even one that opted out after the answer was queued. Nothing else here decides it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.decisions import Fact
from engine.effects import AnswerKeyword, AskWhichConversation, Effect, TextMessage
from engine.errors import ChatGatewayError
from engine.facts import ConsentCandidate, answer_refusal, external_facts, sms_refusal
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
    with_part2_notice,
    with_reply_code,
)
from integrations.db.patients import SqlRelationshipFacts
from integrations.effects.executor import EffectCancelled, RelayContext
from integrations.effects.outbox import OutboxEntry

Text = TextMessage | AnswerKeyword | AskWhichConversation

_DELIVERY = text(
    "SELECT d.state, d.content, e.phone_number, e.chat_user_id, e.organization_id,"
    " m.body, m.recalled_at IS NOT NULL AS recalled, c.patient_id,"
    " e.removed_at IS NOT NULL AS removed, e.reply_code,"
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
)

#: Whom an answer goes to, and whether the number has opted out by now.
_ANSWERED = text(
    "SELECT e.phone_number, e.chat_user_id,"
    " EXISTS (SELECT 1 FROM sms_opt_outs o WHERE o.phone_number = e.phone_number) AS opted_out"
    " FROM external_participants e WHERE e.id = :id"
)

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

_CARRIER_OPT_OUTS = text(
    "INSERT INTO sms_opt_outs (phone_number, provider_message_id)"
    " SELECT unnest(CAST(:numbers AS text[])), 'carrier_refusal' ON CONFLICT DO NOTHING"
)


class TextRecalled(EffectCancelled):
    """The message was recalled after this text was claimed: the text is cancelled (outbox
    ``cancelled: recalled``, its delivery ``failed: recalled``), as the recall cancels a text no relay
    holds; never sent, never retried."""

    code = "recalled"


class TextRefused(EffectCancelled):
    """An answer to a number's text that the rule no longer lets go out (the number opted out after
    it was queued, or cannot be texted): cancelled (outbox ``cancelled`` with the rule's reason,
    audited as a ``delivery.send_sms`` failure naming it), never sent, never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"answer not sent: {reason}")
        self.code = reason


class SmsRefused(ChatGatewayError):
    """A text we will not send: ``code`` is the delivery's reason (opted_out, invalid_number, ...)."""

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(f"SMS not sent: {reason}")
        self.code = reason


class TextExecutor:
    """Text one external participant about one message, answer a keyword, or ask which conversation."""

    handles: tuple[type[Effect], ...] = (TextMessage, AnswerKeyword, AskWhichConversation)

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

    async def deliver(self, effect: Text, entry: OutboxEntry, ctx: RelayContext) -> None:
        match effect:
            case AnswerKeyword(participant_id=participant, keyword=word):
                stop = word is Keyword.STOP
                await self._reply(participant, keyword_reply(word, self._rules), ctx, confirms_stop=stop)
            case AskWhichConversation(participant_id=participant, reply_codes=codes):
                await self._reply(participant, which_conversation(codes), ctx, confirms_stop=False)
            case TextMessage(delivery_id=delivery_id):
                await self._text(delivery_id, entry, ctx)

    async def _text(self, delivery_id: int, entry: OutboxEntry, ctx: RelayContext) -> None:
        # One transaction from the check to the hand-over: the consents the check rests on are held
        # until the provider has the text, so a revocation (or a removal it makes) commits either
        # before the check reads them, and the text is refused, or after the text went out; never a
        # text handed over after a revocation's commit.
        async with ctx.sessions() as session, session.begin():
            first = (await session.execute(_DELIVERY, {"id": delivery_id})).one()
            candidates = await SqlRelationshipFacts(session).external_consents(
                first.patient_id, first.phone_number, first.organization_id, hold=True
            )
            # Read again under the hold: a revocation waited for has removed the participant by now.
            row = (await session.execute(_DELIVERY, {"id": delivery_id})).one()
            await self._text_checked(row, candidates, delivery_id, entry)

    async def _text_checked(
        self, row: Any, candidates: list[ConsentCandidate], delivery_id: int, entry: OutboxEntry
    ) -> None:
        if row.state != "queued":
            return  # done before (a relay died between texting and recording it)
        if row.recalled:  # recalled after this text was claimed: it never goes out
            raise TextRecalled(f"message of delivery {delivery_id} was recalled")
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
        if found.details.get("part2"):
            # Under a Part 2 consent (chosen just above from the candidates already read: no query
            # more) the text carries the 42 CFR 2.32 notice of policies/notices.toml.
            text_ = with_part2_notice(text_, self._policy().part2_notice)
        try:
            self._sent[entry.id] = await self._gateway.send_sms(
                recipient_user_id=row.chat_user_id, phone_number=row.phone_number, text=text_
            )
        except ChatGatewayError as exc:
            if exc.code == "opted_out":  # the carrier has a STOP on record (e.g. Twilio's 21610)
                self._carrier_opt_outs[entry.id] = row.phone_number
            raise

    async def _reply(
        self, participant_id: int, reply: str, ctx: RelayContext, *, confirms_stop: bool
    ) -> None:
        """Answer a text the number sent (a keyword, or a reply whose conversation is not clear), if
        :func:`engine.facts.answer_refusal` still lets it go out now: the STOP confirmation goes to
        a number that has just opted out; anything else to a number that opted out after the answer
        was queued is cancelled (:class:`TextRefused`), never sent."""
        async with ctx.sessions() as session:
            row = (await session.execute(_ANSWERED, {"id": participant_id})).one()
        reason = answer_refusal(
            confirms_stop=confirms_stop, opted_out=row.opted_out, textable=textable(row.phone_number)
        )
        if reason is not None:
            raise TextRefused(reason)
        await self._gateway.send_sms(
            recipient_user_id=row.chat_user_id, phone_number=row.phone_number, text=reply
        )

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Record a wave's texts (sent, with the provider's id, or failed, with the reason) at once."""
        rows: list[tuple[int, str, str | None, str | None]] = []
        for entry in done:
            provider_id = self._sent.pop(entry.id, None)
            if isinstance(entry.effect, TextMessage):  # a keyword answer has no delivery row
                rows.append((entry.effect.delivery_id, "sent", provider_id or None, None))
        carrier_opt_outs: list[str] = []
        for entry, reason in failed:
            self._sent.pop(entry.id, None)
            number = self._carrier_opt_outs.pop(entry.id, None)
            if number is not None and reason == "opted_out":
                carrier_opt_outs.append(number)
            if isinstance(entry.effect, TextMessage):
                rows.append((entry.effect.delivery_id, "failed", None, reason[:64]))
        if rows:
            ids, states, provider_ids, reasons = (list(column) for column in zip(*rows, strict=True))
            await session.execute(
                _SETTLE_DELIVERIES,
                {"ids": ids, "states": states, "provider_ids": provider_ids, "reasons": reasons},
            )
        if carrier_opt_outs:
            # Our record follows the carrier's: nothing more is planned for the number until START.
            await session.execute(_CARRIER_OPT_OUTS, {"numbers": carrier_opt_outs})
