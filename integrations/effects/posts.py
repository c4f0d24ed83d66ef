"""What posts of a message into its channel share, as a text (integrations/effects/messages.py) or a
file (integrations/effects/attachments.py): their cancellation when the message was recalled after
the post was claimed, and how a wave's outcomes are recorded on the message and its channel delivery.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from integrations.effects.executor import EffectCancelled


class MessageRecalled(EffectCancelled):
    """The message was recalled after its post was claimed, before it was posted: the post is
    cancelled (outbox ``cancelled: recalled``, channel delivery ``failed: recalled``, the message's
    own state left as it was), as the recall cancels a post no relay holds; never retried."""

    code = "recalled"


# A wave's messages and their channel delivery rows, sent, failed or cancelled, in one statement.
# Read receipts compare their read_ts with the delivery row's provider_ts_ms. A post cancelled by the
# relay (its message recalled after the claim) is recorded as the recall's own cancel records one
# (integrations/db/recalls.py, CANCEL): its queued channel delivery failed with the reason, the
# message's own state left as it was.
_SETTLE_POSTS = text(
    """
    WITH s AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:states AS text[]), CAST(:chat_ids AS bigint[]),
            CAST(:ts AS bigint[]), CAST(:reasons AS text[])
        ) AS s(id, state, chat_id, ts, reason)
    ), m AS (
        UPDATE messages m SET
            state = s.state,
            chat_message_id = CASE WHEN s.state = 'sent' THEN s.chat_id ELSE m.chat_message_id END
        FROM s WHERE m.id = s.id AND s.state <> 'cancelled'
    )
    UPDATE message_deliveries d SET
        state = CASE WHEN s.state = 'sent' THEN 'sent' ELSE 'failed' END,
        provider_ts_ms = CASE WHEN s.state = 'sent' THEN s.ts ELSE d.provider_ts_ms END,
        reason = CASE WHEN s.state = 'sent' THEN d.reason ELSE s.reason END,
        updated_at = now()
    FROM s
    WHERE d.message_id = s.id AND d.recipient = 'channel' AND (s.state = 'failed' OR d.state = 'queued')
    """
)

#: One post's outcome for :func:`record_posts`: (message id, state, Sendbird's id, its timestamp, reason).
PostRow = tuple[int, str, int | None, int | None, str | None]


def posted(message_id: int, sent: tuple[int, int] | None) -> PostRow:
    """A post that went out, with Sendbird's id and timestamp of it."""
    chat_id, ts = sent if sent is not None else (None, None)
    return (message_id, "sent", chat_id, ts, None)


def not_posted(message_id: int, reason: str) -> PostRow:
    """A post that failed for good, or was cancelled because its message was recalled."""
    return (message_id, "cancelled" if reason == MessageRecalled.code else "failed", None, None, reason)


async def record_posts(session: AsyncSession, rows: Sequence[PostRow]) -> None:
    """Record a wave's posts (messages and files alike) and their channel deliveries, in one statement."""
    if not rows:
        return
    ids, states, chat_ids, timestamps, reasons = (list(column) for column in zip(*rows, strict=True))
    await session.execute(
        _SETTLE_POSTS,
        {"ids": ids, "states": states, "chat_ids": chat_ids, "ts": timestamps, "reasons": reasons},
    )
