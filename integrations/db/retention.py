"""SQL behind :class:`engine.ports.retention.RetentionSweeps`: which messages' content has outlived
its organization's lifespan under no legal hold, claimed with ``SKIP LOCKED``, and emptied."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

from engine.effects import PostSmsReply, kind_of
from engine.ports.retention import Cutoffs, ExpiredContent, ExpiredSmsReply, NewLegalHold
from engine.retention import LegalHold
from integrations.db.base import Repository
from integrations.webhooks import MESSAGE_CATEGORIES, SENDBIRD, SMS, sms_dedupe_key

#: Each organization's own cutoff, joined to ``p`` (the patient): :orgs and :org_cutoffs side by side.
_CUTOFFS = """
    LEFT JOIN unnest(CAST(:orgs AS integer[]), CAST(:org_cutoffs AS timestamptz[])) AS r(org_id, cutoff)
      ON r.org_id = p.organization_id"""


def _past_cutoff_and_not_held(row: str) -> str:
    """``row`` (a message or an SMS reply, with its conversation ``c``) was created before its
    organization's cutoff, or the default, and no legal hold that lasts is on the patient or on the
    conversation: the one rule for both kinds of content."""
    cutoff = "CASE WHEN r.org_id IS NULL THEN CAST(:default AS timestamptz) ELSE r.cutoff END"
    return f"""{row}.created_at < {cutoff}
      AND NOT EXISTS (
        SELECT 1 FROM legal_holds h WHERE h.lifted_at IS NULL
          AND (h.patient_id = c.patient_id OR h.conversation_id = {row}.conversation_id)
      )"""  # noqa: S608 - ``row`` is a table alias of this module; every value is a bound parameter


#: A claim also key-share-locks the patients whose content it deletes, until the sweep's batch
#: commits; placing a legal hold locks its patient FOR UPDATE first (:data:`_LOCK_PATIENT`). So a
#: hold placed while a batch deletes waits for it, and a batch skips the patients of a hold being
#: placed (then the hold, committed, keeps their content): no content is deleted after a hold on it
#: committed. Key share: a patient's ordinary updates are not held up.
_HOLDS_WAIT = " FOR KEY SHARE OF p SKIP LOCKED"

#: The messages whose content is due: the patient's organization's own cutoff if it has one (null:
#: kept), else the default; still with content; under no legal hold that lasts, on the patient or
#: on the conversation. The partial index on created_at (content_deleted_at IS NULL) is the scan.
_DUE = f"""
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    JOIN patients p ON p.id = c.patient_id{_CUTOFFS}
    WHERE m.content_deleted_at IS NULL
      AND {_past_cutoff_and_not_held("m")}
"""

_PLAN = text(f"SELECT p.organization_id, count(*) AS n {_DUE} GROUP BY p.organization_id")

_CLAIM = text(
    "SELECT m.id, m.conversation_id, c.patient_id, p.organization_id, m.recalled_at IS NOT NULL AS recalled"
    f" {_DUE} ORDER BY m.created_at, m.id LIMIT :limit FOR UPDATE OF m SKIP LOCKED{_HOLDS_WAIT}"
)

_DELETE = text(
    "UPDATE messages SET body = '', content_deleted_at = :at"
    " WHERE id = ANY(CAST(:ids AS integer[])) AND content_deleted_at IS NULL"
)
_DELETE_RECALLED = text(
    "UPDATE message_recalls SET body = '' WHERE message_id = ANY(CAST(:ids AS integer[]))"
)
# An attached file is content too: its bytes go with the text. Its type, size and SHA-256 stay in
# the audit record of the attaching (message.attach).
_DELETE_ATTACHMENTS = text("DELETE FROM message_attachments WHERE message_id = ANY(CAST(:ids AS integer[]))")
# The chat provider's webhooks about a message (the echo of caremsg's own post, a post made in the
# chat app, an edit) keep the raw body, text and all: emptied. The row (category, status, times)
# stays, and its dedupe key still turns a late retry away. Found by that unique key.
_DELETE_WEBHOOKS = text(
    "UPDATE webhook_events SET body = '' WHERE source = :source AND body <> '' AND dedupe_key IN ("
    " SELECT category || ':' || m.chat_message_id"
    " FROM messages m, unnest(CAST(:categories AS text[])) category"
    " WHERE m.id = ANY(CAST(:ids AS integer[])) AND m.chat_message_id IS NOT NULL)"
)

#: An SMS reply whose text is still stored: the partial index of migration 0028.
_REPLY_WITH_TEXT = f"o.kind = '{kind_of(PostSmsReply)}' AND (o.payload -> 'text') IS NOT NULL"
_DUE_REPLIES = f"""
    FROM outbox o
    JOIN conversations c ON c.id = o.conversation_id
    JOIN patients p ON p.id = c.patient_id{_CUTOFFS}
    LEFT JOIN webhook_events w
      ON w.source = '{SMS}' AND w.dedupe_key = '{sms_dedupe_key("")}' || (o.payload ->> 'dedup_id')
    WHERE {_REPLY_WITH_TEXT}
      AND {_past_cutoff_and_not_held("o")}
"""
_PLAN_REPLIES = text(f"SELECT p.organization_id, count(*) AS n {_DUE_REPLIES} GROUP BY p.organization_id")
_CLAIM_REPLIES = text(
    "SELECT o.id, w.id AS event_id, o.conversation_id, c.patient_id, p.organization_id,"
    " o.payload ->> 'channel_url' AS channel_url, o.payload ->> 'sender_chat_id' AS sender_chat_id,"
    " o.payload ->> 'dedup_id' AS dedup_id, CAST(o.payload ->> 'chat_message_id' AS bigint) AS chat_id,"
    " (o.status IN ('done', 'failed') OR o.lease_until > now()) AS posted"
    f" {_DUE_REPLIES} ORDER BY o.created_at, o.id LIMIT :limit FOR UPDATE OF o SKIP LOCKED{_HOLDS_WAIT}"
)
# A reply not posted yet is not posted empty: cancelled, as a recall cancels a message's entries.
_DELETE_REPLIES = text(
    "UPDATE outbox SET payload = payload - 'text',"
    " status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END"
    " WHERE id = ANY(CAST(:ids AS integer[]))"
)
_DELETE_INBOUND = text("UPDATE webhook_events SET body = '' WHERE id = ANY(CAST(:ids AS bigint[]))")


def _params(cutoffs: Cutoffs) -> dict[str, Any]:
    orgs = sorted(cutoffs.by_organization)
    return {
        "orgs": orgs,
        "org_cutoffs": [cutoffs.by_organization[o] for o in orgs],
        "default": cutoffs.default,
    }


class SqlRetentionSweeps(Repository):
    async def plan(self, cutoffs: Cutoffs) -> dict[int, int]:
        counts: dict[int, int] = {}
        for query in (_PLAN, _PLAN_REPLIES):
            for r in await self.session.execute(query, _params(cutoffs)):
                counts[r.organization_id] = counts.get(r.organization_id, 0) + r.n
        return counts

    async def claim(self, cutoffs: Cutoffs, limit: int) -> list[ExpiredContent]:
        rows = await self.session.execute(_CLAIM, {**_params(cutoffs), "limit": limit})
        return [
            ExpiredContent(r.id, r.conversation_id, r.patient_id, r.organization_id, r.recalled) for r in rows
        ]

    async def delete_content(self, message_ids: list[int], at: datetime) -> None:
        await self.session.execute(_DELETE, {"ids": message_ids, "at": at})
        await self.session.execute(_DELETE_RECALLED, {"ids": message_ids})
        await self.session.execute(_DELETE_ATTACHMENTS, {"ids": message_ids})
        await self.session.execute(
            _DELETE_WEBHOOKS, {"ids": message_ids, "source": SENDBIRD, "categories": list(MESSAGE_CATEGORIES)}
        )

    async def claim_sms_replies(self, cutoffs: Cutoffs, limit: int) -> list[ExpiredSmsReply]:
        rows = await self.session.execute(_CLAIM_REPLIES, {**_params(cutoffs), "limit": limit})
        return [
            ExpiredSmsReply(
                r.id,
                r.event_id,
                r.conversation_id,
                r.patient_id,
                r.organization_id,
                r.channel_url,
                r.sender_chat_id,
                r.dedup_id,
                r.chat_id,
                r.posted,
            )
            for r in rows
        ]

    async def delete_sms_replies(self, replies: list[ExpiredSmsReply]) -> None:
        await self.session.execute(_DELETE_REPLIES, {"ids": [r.outbox_id for r in replies]})
        events = [r.event_id for r in replies if r.event_id is not None]
        if events:
            await self.session.execute(_DELETE_INBOUND, {"ids": events})


_HOLD = """
    SELECT h.*, COALESCE(h.patient_id, c.patient_id) AS subject_patient_id
    FROM legal_holds h LEFT JOIN conversations c ON c.id = h.conversation_id
"""


def _hold(row: Any) -> LegalHold:
    return LegalHold(
        id=row.id,
        organization_id=row.organization_id,
        patient_id=row.patient_id,
        conversation_id=row.conversation_id,
        subject_patient_id=row.subject_patient_id,
        placed_by=row.placed_by,
        placed_at=row.placed_at,
        reason=row.reason,
        lifted_by=row.lifted_by,
        lifted_at=row.lifted_at,
        lift_reason=row.lift_reason,
    )


#: The hold's patient, locked until the hold is committed: a sweep's batch deleting its content
#: commits first (see :data:`_HOLDS_WAIT`), one starting meanwhile leaves it alone.
_LOCK_PATIENT = text("SELECT id FROM patients WHERE id = :id FOR UPDATE")


class SqlLegalHoldRepository(Repository):
    async def add(self, hold: NewLegalHold) -> LegalHold:
        await self.session.execute(_LOCK_PATIENT, {"id": hold.subject_patient_id})
        hold_id = (
            await self.session.execute(
                text(
                    "INSERT INTO legal_holds (organization_id, patient_id, conversation_id, reason,"
                    " placed_by, placed_at) VALUES (:o, :p, :c, :r, :by, :at) RETURNING id"
                ),
                {
                    "o": hold.organization_id,
                    "p": hold.patient_id,
                    "c": hold.conversation_id,
                    "r": hold.reason,
                    "by": hold.placed_by,
                    "at": hold.placed_at,
                },
            )
        ).scalar_one()
        found = await self.get(hold_id)
        assert found is not None
        return found

    async def get(self, hold_id: int) -> LegalHold | None:
        row = (await self.session.execute(text(f"{_HOLD} WHERE h.id = :id"), {"id": hold_id})).first()
        return None if row is None else _hold(row)

    async def lift(self, hold_id: int, *, by: int, at: datetime, reason: str) -> bool:
        done = await self.session.execute(
            text(
                "UPDATE legal_holds SET lifted_at = :at, lifted_by = :by, lift_reason = :r"
                " WHERE id = :id AND lifted_at IS NULL RETURNING id"
            ),
            {"id": hold_id, "at": at, "by": by, "r": reason},
        )
        return done.first() is not None

    async def of_organization(self, organization_id: int, *, active_only: bool) -> list[LegalHold]:
        only = " AND h.lifted_at IS NULL" if active_only else ""
        rows = await self.session.execute(
            text(f"{_HOLD} WHERE h.organization_id = :o{only} ORDER BY h.id DESC"), {"o": organization_id}
        )
        return [_hold(r) for r in rows]
