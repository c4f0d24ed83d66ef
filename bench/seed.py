"""What the relay benchmarks start from (bench/relay.py, bench/exactly_once.py): a sender, ready
conversations whose channels exist in the emulator, and chat posts queued in them as the
send-message workflow queues them (message, channel delivery row, outbox entry)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]

from engine.effects import PostMessage, kind_of
from integrations.sendbird import SendbirdChatGateway

#: The sender's chat user id.
SENDER = "bench_sender"


@dataclass(frozen=True)
class Seeded:
    sender_id: int
    conversations: list[tuple[int, str]]  # (id, channel_url)


async def seed_conversations(conn: asyncpg.Connection, chat: SendbirdChatGateway, count: int) -> Seeded:
    """An organization, a peer support (:data:`SENDER`) and a patient of theirs, and ``count`` ready
    conversations with the sender as member, each with its channel in the emulator."""
    org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('Bench') RETURNING id")
    sender = await conn.fetchval(
        "INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role, chat_user_id)"
        " VALUES ($1, 'bench@example.org', 'x', 'Bench', 'Sender', 'peer_support', $2) RETURNING id",
        org,
        SENDER,
    )
    patient = await conn.fetchval(
        "INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)"
        " VALUES ($1, 'P', 'Q', 'low', $2) RETURNING id",
        org,
        sender,
    )
    await chat.ensure_user(SENDER, "Bench S.")
    conversations = []
    for i in range(count):
        channel_url = f"bench_{secrets.token_hex(6)}_{i}"
        conversation_id = await conn.fetchval(
            "INSERT INTO conversations (patient_id, title, channel_url, channel_state, organization_id,"
            " created_by) VALUES ($1, $2, $3, 'ready', $4, $5) RETURNING id",
            patient,
            f"Bench {i}",
            channel_url,
            org,
            sender,
        )
        await conn.execute(
            "INSERT INTO conversation_members (conversation_id, user_id) VALUES ($1, $2)",
            conversation_id,
            sender,
        )
        await chat.ensure_channel(channel_url, name=f"Bench {i}", user_ids=[SENDER])
        conversations.append((conversation_id, channel_url))
    return Seeded(sender, conversations)


async def queue_posts(conn: asyncpg.Connection, seeded: Seeded, messages: int, body: str) -> None:
    """``messages`` messages round-robin over the conversations (``body #n``), each with its channel
    delivery row and its chat post's outbox entry (outbox ids in message order)."""
    await conn.execute(
        """
        WITH m AS (
            INSERT INTO messages (conversation_id, sender_id, body)
            SELECT ($1::int[])[1 + g % cardinality($1::int[])], $2, $3 || ' #' || g
            FROM generate_series(0, $4 - 1) AS g ORDER BY g
            RETURNING id, conversation_id
        ), d AS (
            INSERT INTO message_deliveries (message_id, recipient) SELECT id, 'channel' FROM m
        )
        INSERT INTO outbox (kind, payload, conversation_id, message_id)
        SELECT $5, jsonb_build_object('message_id', id), conversation_id, id FROM m ORDER BY id
        """,
        [c for c, _ in seeded.conversations],
        seeded.sender_id,
        body,
        messages,
        kind_of(PostMessage),
    )
