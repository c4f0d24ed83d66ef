"""Group commit of audit events: concurrent patient reads' records stored by one statement.

Each patient read stores its audit record in a statement of its own before it answers (fail
closed). In PostgreSQL that statement is most of the read's cost: a transaction committed per read,
the sealer's lock trigger and the six indexes of ``audit_events`` (bench/README.md, "Patient reads
over HTTP"). Here concurrent reads share the statement:

- the first read to arrive when nothing is being stored starts a flush at once, on the connection
  it read with (handed over: the flush gives it back), so at low load nothing waits for company;
- reads that arrive while a flush is in flight queue, give their connection back to the pool at
  once (another read may use it), and go together in the next flush, which starts as soon as the
  one in flight ends;
- every read still waits until the statement holding its own events has committed before it
  answers. A single statement is its own transaction, so each flush stores all of its events or
  none of them.

If a flush fails for a reason other than the database being unreachable, its reads are stored again
one by one, so one event the database refuses fails only its own read; each read whose events could
not be stored raises :class:`engine.errors.ServiceUnavailable` and discloses nothing. The rows are
those the one-read statement writes (:data:`integrations.db.send_uow.STORE_AUDIT`, the same JSON
from :func:`integrations.db.uow.audit_json`): each read's events in its order, reads in arrival
order. Every statement takes the sealer's shared lock by trigger as before (migration 0006), so the
chain's horizon holds as for any other insert.

The flush runs in a task of its own, not in a request's task: a read that is cancelled while it
waits leaves the others' flush alone. It answers nothing either way; if no statement had taken its
events yet, none will (its unit of work records them as unfinished, as for any cancelled read),
else they are stored or not with the others'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]

from engine.audit import AuditEvent
from engine.errors import ServiceUnavailable
from integrations.db.base import is_unavailable
from integrations.db.send_uow import STORE_AUDIT, SendPool
from integrations.db.uow import audit_json, audit_not_stored

#: At most this many reads' events in one statement (a queue longer than that flushes in turns).
MAX_READS_PER_FLUSH = 256


@dataclass(eq=False)
class _Entry:
    events: Sequence[AuditEvent]
    stored: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AuditGroupCommit:
    """Stores audit events for many concurrent reads in as few statements as the load allows, on the
    send pool (:class:`integrations.db.send_uow.SendPool`); see the module docstring."""

    def __init__(self, pool: SendPool) -> None:
        self._pool = pool
        self._queue: list[_Entry] = []
        #: The flush in flight (kept: the loop holds tasks only weakly).
        self._flushing: asyncio.Task[None] | None = None
        #: Statements run and reads stored, for the benchmark and the tests.
        self.flushes = 0
        self.reads = 0

    @property
    def waiting(self) -> int:
        """Reads queued for the next flush."""
        return len(self._queue)

    async def store(self, events: Sequence[AuditEvent], connection: asyncpg.Connection) -> None:
        """Store ``events`` (one read's, in order) and return once they are committed; raises
        :class:`engine.errors.ServiceUnavailable` if they could not be. ``connection`` is the
        caller's connection from the pool, taken over here: the caller must not use or release it.
        """
        entry = _Entry(events)
        self._queue.append(entry)
        if self._flushing is not None:
            await self._pool.release(connection, reuse=True)  # its read has finished
        else:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_while_queued(connection))
        try:
            await entry.stored
        except asyncio.CancelledError:
            # Not yet taken into a statement: it never will be (the caller's unit of work records
            # the events as unfinished). Once taken, they are stored or not with the others.
            if entry in self._queue:
                self._queue.remove(entry)
            raise

    async def _flush_while_queued(self, connection: asyncpg.Connection) -> None:
        batch: list[_Entry] = []
        finished = False
        try:
            while self._queue:
                batch = self._queue[:MAX_READS_PER_FLUSH]
                del self._queue[:MAX_READS_PER_FLUSH]
                await self._flush(batch, connection)
            finished = True
        except BaseException as error:
            # Cancelled (the service is stopping) or a bug: whether the batch in flight was stored
            # is unknown, so its reads and every queued one fail closed rather than wait forever.
            for entry in (*batch, *self._queue):
                _fail(entry, error)
            self._queue.clear()
            raise
        finally:
            self._flushing = None
            await self._pool.release(connection, reuse=finished)

    async def _flush(self, batch: list[_Entry], connection: asyncpg.Connection) -> None:
        self.flushes += 1
        self.reads += len(batch)
        try:
            await connection.execute(STORE_AUDIT, audit_json([e for entry in batch for e in entry.events]))
        except Exception as error:
            if is_unavailable(error) or len(batch) == 1:
                for entry in batch:
                    _fail(entry, error)
                return
            # One refused event must not fail the reads it shared the statement with.
            for entry in batch:
                try:
                    await connection.execute(STORE_AUDIT, audit_json(entry.events))
                except Exception as alone:
                    _fail(entry, alone)
                else:
                    _done(entry)
            return
        for entry in batch:
            _done(entry)


def _done(entry: _Entry) -> None:
    if not entry.stored.done():  # a read cancelled while it waited
        entry.stored.set_result(None)


def _fail(entry: _Entry, error: BaseException) -> None:
    if entry.stored.done():  # stored before, or a read cancelled while it waited
        return
    # Fail closed: no audit record, no disclosure.
    failure = (
        ServiceUnavailable.database() if is_unavailable(error) else audit_not_stored(entry.events, error)
    )
    failure.__cause__ = error
    entry.stored.set_exception(failure)
