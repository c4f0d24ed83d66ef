"""The send-message workflow's unit of work on asyncpg: one read, one atomic write.

Sending is the busiest workflow. Through the general unit of work it took eight round trips
(BEGIN, conversation, patient relation, message, outbox entry, delivery rows, audit, COMMIT), each
costing about 300 µs of CPU in SQLAlchemy's async session on these machines before PostgreSQL saw
it (bench/README.md). Here:

- :meth:`PgSendUnitOfWork.context` is one statement: the conversation, whether the sender is a
  member and on the patient's care team, the sender's open emergency session for the patient, the
  patient's organization, the other organizations whose staff are members (each a disclosure),
  the SMS recipients with the consents that could let each be texted (the fact builder,
  engine/facts.py, decides which counts), and a message id reserved from its sequence (so the
  decisions can name the message before it exists);
- :meth:`PgSendUnitOfWork.commit` is one data-modifying statement: the message, its delivery rows,
  its outbox entries (the chat post and one text per queued SMS delivery), the Idempotency-Key
  binding and the buffered audit events. A single statement is atomic, so no BEGIN/COMMIT round
  trips are needed: all of it is stored, or none of it (fail closed, as the general unit of work).

The read runs outside the write's transaction. Under READ COMMITTED, which the general unit of work
uses too, each statement sees what was committed when it started, so this changes nothing a
workflow could rely on: a consent revoked between the read and the write is missed either way.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import asyncpg  # type: ignore[import-untyped]
import structlog

from engine.effects import PostMessage, TextMessage, kind_of
from engine.errors import CaremsgError, ServiceUnavailable
from engine.ports import NewSend, SendContext
from integrations.db import array_codecs
from integrations.db.base import is_unavailable
from integrations.db.deliveries import SMS_RECIPIENTS_SQL, recipient
from integrations.db.uow import (
    BufferedAuditLog,
    audit_insert_sql,
    audit_json,
    emit_audit_log,
    log_undurable,
    unfinished,
)

log = structlog.get_logger("caremsg.db")

_CONTEXT = f"""
    SELECT c.patient_id,
           p.organization_id AS patient_organization_id,
           EXISTS (SELECT 1 FROM conversation_members m
                   WHERE m.conversation_id = c.id AND m.user_id = $2) AS is_member,
           EXISTS (SELECT 1 FROM care_teams t JOIN care_team_members tm ON tm.care_team_id = t.id
                   WHERE t.patient_id = c.patient_id AND tm.user_id = $2) AS on_care_team,
           (SELECT max(b.id) FROM break_glass_sessions b
            WHERE b.user_id = $2 AND b.patient_id = c.patient_id
              AND b.opened_at <= $3 AND b.expires_at > $3) AS break_glass_session_id,
           nextval(pg_get_serial_sequence('messages', 'id')) AS message_id,
           (SELECT json_build_array(r.care_team_id, r.holder_id) FROM conversation_on_call r
            WHERE r.conversation_id = c.id) AS on_call,
           ARRAY(SELECT DISTINCT mu.organization_id FROM conversation_members cm
                 JOIN users mu ON mu.id = cm.user_id
                 WHERE cm.conversation_id = c.id AND cm.user_id <> $2
                   AND mu.organization_id IS DISTINCT FROM p.organization_id
                 ORDER BY mu.organization_id) AS recipient_organization_ids,
           (SELECT json_agg(r ORDER BY r.participant_id) FROM (
               {SMS_RECIPIENTS_SQL.format(conversation="c.id", patient="c.patient_id")}
           ) r) AS sms_recipients
    FROM conversations c LEFT JOIN patients p ON p.id = c.patient_id
    WHERE c.id = $1
"""  # noqa: S608 - assembled from constants; every value is a bound parameter


_STORE = f"""
    WITH m AS (
        INSERT INTO messages (id, conversation_id, sender_id, body, priority, escalation_due_at)
        VALUES ($1, $2, $3, $4, $14, now() + make_interval(secs => $15::double precision))
        RETURNING id, created_at
    ), d AS (
        INSERT INTO message_deliveries
            (message_id, recipient, external_participant_id, state, reason, content)
        SELECT m.id, r.recipient, r.participant_id, r.state, r.reason, r.content
        FROM m, unnest($5::text[], $6::int[], $7::text[], $8::text[], $9::text[])
            WITH ORDINALITY AS r(recipient, participant_id, state, reason, content, position)
        ORDER BY r.position
        RETURNING id, external_participant_id, state
    ), o AS (
        INSERT INTO outbox (kind, payload, conversation_id, message_id)
        SELECT kind, payload, $2, $1 FROM (
            SELECT 0 AS position, $12::text AS kind, jsonb_build_object('message_id', m.id) AS payload
            FROM m
            UNION ALL
            SELECT d.id, $13::text, jsonb_build_object('delivery_id', d.id)
            FROM d WHERE d.external_participant_id IS NOT NULL AND d.state = 'queued'
        ) entries ORDER BY position
    ), k AS (
        UPDATE idempotency_keys SET resource_id = $1 WHERE id = $10
    ), a AS (
        {audit_insert_sql("$11::jsonb")}
    )
    SELECT created_at FROM m
"""  # noqa: S608 - assembled from constants; every value is a bound parameter


# The outbox entries' stored kinds, bound (engine/effects.py names them); the payloads are the
# shapes of integrations/effects/outbox.py, built in SQL because the ids exist only inside _STORE.
_POST_KIND, _TEXT_KIND = kind_of(PostMessage), kind_of(TextMessage)


def _on_call(value: Any) -> tuple[int, int | None] | None:
    """The conversation's on-call role as read: (care team, holder or None), or None without one."""
    if value is None:
        return None
    care_team_id, holder_id = json.loads(value) if isinstance(value, str) else value
    return int(care_team_id), None if holder_id is None else int(holder_id)


async def _no_reset(connection: asyncpg.Connection) -> None:
    """asyncpg's default reset on release is a round trip (UNLISTEN, RESET ALL, ...) per statement.
    This pool's statements leave no session state behind; only an open transaction is undone."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class SendPool:
    """The send path's asyncpg pool, entered through a first-come, first-served gate.

    asyncpg's pool hands a released connection to whichever task asks next, and a waiter woken for
    it that finds it taken queues again at the back, so under load a few sends wait many turns: at
    64 clients on 10 connections that was the p99 (bench/README.md). The gate admits at most as
    many sends as there are connections, strictly in arrival order, so none waits in the pool.

    Behind the gate, a connection given back with ``reuse=True`` (its holder finished every
    statement it started) is kept here, open and outside any transaction, for the next holder:
    asyncpg's own acquire and release (its proxy, the reset hook, the idle timers) cost ~40 µs of
    CPU per pair, as much as a quarter of a patient read's Python. Any other connection (closed, in
    a transaction, or given back after a cancellation, when a statement may still be in flight)
    goes back through asyncpg's pool, which rolls back, waits out a cancelled statement, or
    replaces a closed one, as before.
    """

    def __init__(self, pool: asyncpg.Pool, max_size: int) -> None:
        self.pool = pool
        self._gate = asyncio.Semaphore(max_size)
        self._max_size = max_size
        self._held = 0
        self._idle: list[asyncpg.Connection] = []
        self._closing = False

    @property
    def available(self) -> int:
        """How many more holders the gate would admit now (all of them when nothing is held)."""
        return self._max_size - self._held

    async def acquire(self) -> asyncpg.Connection:
        """A connection, after every send that asked earlier got one; give it back with :meth:`release`."""
        await self._gate.acquire()
        try:
            connection = None
            while self._idle and connection is None:
                connection = self._idle.pop()
                if not _open(connection):
                    await self.pool.release(connection)  # closed while idle: asyncpg replaces it
                    connection = None
            if connection is None:
                connection = await self.pool.acquire()
            self._held += 1
            return connection
        except BaseException:
            self._gate.release()
            raise

    async def release(self, connection: asyncpg.Connection, *, reuse: bool = False) -> None:
        """Give ``connection`` back. ``reuse``: no statement of the holder's can still be running
        (it was not cancelled), so an open connection outside a transaction may be kept as it is."""
        try:
            if reuse and not self._closing and _open(connection) and not connection.is_in_transaction():
                self._idle.append(connection)
            else:
                await self.pool.release(connection)
        finally:
            self._held -= 1
            self._gate.release()

    async def close(self) -> None:
        self._closing = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await self.pool.release(connection)
        await self.pool.close()


def _open(connection: asyncpg.Connection) -> bool:
    """Open and still ours: asyncpg detaches a pooled connection once it has closed (a restarted
    server), and then releasing it is a no-op."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        return False


async def create_send_pool(
    connect_args: dict[str, Any], *, max_size: int, statement_timeout_ms: int
) -> SendPool:
    """The send path's pool: its own connections (at most ``max_size``), no reset round trip.

    None is opened before the first send or patient read asks for one: an app that never serves
    either (a CLI command, many of the test suite's apps) costs PostgreSQL no backend for it."""
    server_settings = {
        **connect_args.pop("server_settings", {}),
        "statement_timeout": str(statement_timeout_ms),
    }
    pool: asyncpg.Pool = await asyncpg.create_pool(
        **connect_args,
        min_size=0,
        max_size=max_size,
        reset=_no_reset,
        init=array_codecs.prime,
        timeout=5,
        server_settings=server_settings,
    )
    return SendPool(pool, max_size)


#: Inserts buffered audit events given as one JSON array ($1): one statement, its own transaction.
STORE_AUDIT = audit_insert_sql("$1::jsonb")


class HeldConnectionUnitOfWork:
    """A unit of work on the send pool that takes one connection at its first statement, keeps it
    for the rest (one turn at the pool's gate, not one per statement) and gives it back when the
    block ends. A block left without commit stores its pending audit events as unfinished, as the
    general unit of work does. The send path and the patient read are built on it."""

    def __init__(self, pool: SendPool) -> None:
        self._pool = pool
        self._connection: asyncpg.Connection | None = None
        self._committed = False
        self.audit = BufferedAuditLog()

    async def __aenter__(self) -> Self:
        return self

    async def _connect(self) -> asyncpg.Connection:
        if self._connection is None:
            self._connection = await self._pool.acquire()
        return self._connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._committed and self.audit.pending:
                events = unfinished(self.audit.pending, exc)
                self.audit.pending.clear()
                try:
                    await (await self._connect()).execute(STORE_AUDIT, audit_json(events))
                except Exception as error:
                    log_undurable(events, error)
                else:
                    emit_audit_log(events)
        finally:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                # After a cancellation a statement may still be running: asyncpg's pool waits it out.
                await self._pool.release(connection, reuse=exc is None or isinstance(exc, Exception))
        if exc is not None and not isinstance(exc, CaremsgError) and is_unavailable(exc):
            raise ServiceUnavailable.database() from exc


class PgSendUnitOfWork(HeldConnectionUnitOfWork):
    """:class:`engine.ports.SendUnitOfWork` on the send pool; see the module docstring."""

    async def context(self, conversation_id: int, user_id: int, at: datetime) -> SendContext | None:
        row = await (await self._connect()).fetchrow(_CONTEXT, conversation_id, user_id, at)
        if row is None:
            return None
        recipients = json.loads(row["sms_recipients"]) if row["sms_recipients"] else []
        return SendContext(
            conversation_id=conversation_id,
            patient_id=row["patient_id"],
            patient_organization_id=row["patient_organization_id"],
            is_member=row["is_member"],
            on_care_team=row["on_care_team"],
            break_glass_session_id=row["break_glass_session_id"],
            message_id=row["message_id"],
            sms_recipients=tuple(recipient(r) for r in recipients),
            on_call=_on_call(row["on_call"]),
            recipient_organization_ids=tuple(row["recipient_organization_ids"]),
        )

    async def commit(self, send: NewSend) -> datetime:
        events = list(self.audit.pending)
        d = send.deliveries
        try:
            created_at: datetime = await (await self._connect()).fetchval(
                _STORE,
                send.message_id,
                send.conversation_id,
                send.sender_id,
                send.text,
                [x.recipient for x in d],
                [x.external_participant_id for x in d],
                [x.state.value for x in d],
                [x.reason for x in d],
                [x.content for x in d],
                send.idempotency_claim,
                audit_json(events),
                _POST_KIND,
                _TEXT_KIND,
                send.priority,
                send.first_escalation_seconds,
            )
        except Exception as error:
            if is_unavailable(error):
                raise ServiceUnavailable.database() from error
            # Fail closed: the message, its deliveries and its audit record are one statement.
            log.error("send.store_failed", error=type(error).__name__)
            raise ServiceUnavailable(
                "The message could not be stored with its audit record, so nothing was done;"
                " try again shortly."
            ) from error
        self._committed = True
        self.audit.pending.clear()
        emit_audit_log(events)
        return created_at


#: The send path's two statements, for the test that holds their columns to the table classes
#: (tests/unit/test_send_path_columns.py).
STATEMENTS = (_CONTEXT, _STORE)
