"""The background sealer: appends committed audit events to the hash chain, in batches, in id order.

Requests never wait on the chain. The only coordination with them is the *horizon*: the sealer must
not seal event 11 while the transaction holding event 10 has yet to commit (10 would then land
below the sealed head and look inserted). So:

- every statement that inserts audit events takes ``pg_advisory_xact_lock_shared`` on
  :data:`AUDIT_WRITE_LOCK`, by a statement-level BEFORE INSERT trigger (migration 0006), which fires
  before any row draws its id from the sequence. Shared locks never wait on one another; the lock
  is held from the audit insert to the commit, which follow each other immediately (the unit of
  work inserts its events last). Being a trigger, it covers every writer, not just caremsg's code,
  and costs no extra round trip;
- the sealer, for an instant, takes the same lock exclusively in a transaction of its own: once it
  has it, every writer that could hold an id below the current maximum has committed or rolled
  back, and every later writer draws a higher id. That maximum is the horizon.

Writers may wait behind that instant (milliseconds, once per sealing round), never behind one
another or behind hashing. Sealing itself runs under :data:`SEAL_LOCK`, so several service
instances can run a sealer: one seals a batch while the others wait, then finds nothing to do.

The sealer talks to PostgreSQL through the asyncpg connection under one of the engine's pooled
connections (the same pool and connect arguments, statement_timeout included), not through
SQLAlchemy, whose rows and executemany cost the sealer about as much CPU per event as hashing did
(bench/audit_sealer.py). A round is the horizon transaction, three round trips (BEGIN with SET LOCAL
and the lock; the maximum, with the head's event id; COMMIT), and only if something is unsealed, one
transaction of four statements per batch (BEGIN with :data:`SEAL_LOCK`; one read of the head and the
batch; one call of ``audit_chain_append`` with the whole batch; COMMIT).

**Privileges.** The service's database role may read ``audit_chain`` but not write it: the batch goes
through ``audit_chain_append``, a SECURITY DEFINER function of the owner role (migration 0009) that
appends only a sound extension of the chain (numbered on from the head, linked, over the next
events in id order, none past the sequence's last value). So the sealer needs no privilege of its
own, and a compromised application role cannot seal a forged chain.

After a failure the connection rolls back, or is discarded if it cannot: it never goes back to the
pool in a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.audit_chain import DIGEST_FIELDS, ChainEntry, ChainHead, digest_of_values, link
from integrations.background import woken_or_after

log = structlog.get_logger("caremsg.audit_sealer")

#: Shared by every statement that inserts audit events (a trigger takes it: migration 0006), taken
#: exclusively by the sealer for an instant. An arbitrary constant unique to caremsg: 'cmaw'.
AUDIT_WRITE_LOCK = 0x636D6177
#: Serialises sealers of several instances: 'cmas'.
SEAL_LOCK = 0x636D6173
#: Events hashed between two turns of the event loop. Hashing is ~30 µs of CPU per event (bench/
#: audit_sealer.py), so a batch of 1000 hashed in one go held every request of this process for
#: ~30 ms, twice a second at 2,000 audited reads a second (bench/read_patient.py's p99); a slice of
#: 100 holds them ~3 ms.
HASH_SLICE = 100
#: How long the sealer waits for in-flight writers before skipping a round.
HORIZON_LOCK_TIMEOUT_MS = 500

#: The horizon's maximum, with the sealed head's event id: when that is the horizon, the round has
#: nothing to seal and opens no sealing transaction (a hint only: the batch re-reads the head).
#: Only ids the sequence handed out count: a row above the sequence's last value was inserted with
#: an id of its own choosing (by someone who switched the id trigger off, migration 0009). Sealing
#: it would put every genuine event after it below the sealed head, so it is left unsealed and
#: ``caremsg audit verify`` names it, while the events the database numbered are sealed as ever.
_HORIZON = """
    SELECT least(coalesce(max(id), 0),
                 (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM audit_events_id_seq)),
           coalesce((SELECT event_id FROM audit_chain ORDER BY seq DESC LIMIT 1), 0)
    FROM audit_events
"""
#: The head (on every row, null for an empty chain) and the next batch: the content columns in the
#: digest's order, details as the JSON text PostgreSQL stores, then the id.
_DETAILS = DIGEST_FIELDS.index("details")
_BATCH = f"""
    WITH head AS (SELECT seq, hash, event_id FROM audit_chain ORDER BY seq DESC LIMIT 1)
    SELECT {", ".join("details::text" if name == "details" else name for name in DIGEST_FIELDS)}, id,
           (SELECT seq FROM head), (SELECT hash FROM head)
    FROM audit_events
    WHERE id > coalesce((SELECT event_id FROM head), 0) AND id <= $1
    ORDER BY id
    LIMIT $2
"""  # noqa: S608 - assembled from constants; every value is a bound parameter
_APPEND = "SELECT audit_chain_append($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])"


class AuditSealer:
    """Seals what is sealable now (``seal_pending``) or keeps doing so in the background (``run``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 1000,
        interval: float = 1.0,
        horizon_timeout_ms: int = HORIZON_LOCK_TIMEOUT_MS,
    ) -> None:
        self._engine = engine
        self.horizon_timeout_ms = int(horizon_timeout_ms)
        self.batch_size = batch_size
        self.interval = interval
        self._wake = asyncio.Event()

    async def horizon(self) -> int:
        """The highest event id below which no uncommitted audit event can still appear."""
        async with self._connection() as conn:
            horizon, _ = await self._horizon(conn)
        return horizon

    async def seal_pending(self) -> int:
        """Seal every event committed before this call; returns how many were sealed."""
        async with self._connection() as conn:
            horizon, sealed_to = await self._horizon(conn)
            total = 0
            while sealed_to < horizon:
                sealed, sealed_to = await self._seal_batch(conn, horizon)
                if not sealed:
                    break
                total += sealed
            return total

    async def _horizon(self, conn: asyncpg.Connection) -> tuple[int, int]:
        """The horizon, and the event id of the chain head as it read then."""
        # Writers queue behind this request while it waits: if some writer holds its shared lock
        # for long, give up (and try next round) rather than stall every request behind it.
        lock = (
            f"SET LOCAL lock_timeout = '{self.horizon_timeout_ms}ms';"
            f" SELECT pg_advisory_xact_lock({AUDIT_WRITE_LOCK})"
        )
        async with _transaction(conn, lock):
            # A statement after the lock's: its snapshot sees every writer the lock waited for.
            horizon, sealed_to = await conn.fetchrow(_HORIZON)
        return int(horizon), int(sealed_to)

    async def _seal_batch(self, conn: asyncpg.Connection, horizon: int) -> tuple[int, int]:
        """Seal the next batch at or below ``horizon``: how many, and the last event id sealed."""
        async with _transaction(conn, f"SELECT pg_advisory_xact_lock({SEAL_LOCK})"):
            rows = await conn.fetch(_BATCH, horizon, self.batch_size)
            if not rows:
                return 0, horizon
            first = rows[0]
            head = ChainHead() if first[-2] is None else ChainHead(first[-2], first[-1])
            details, end = _DETAILS, len(DIGEST_FIELDS)
            entries: list[ChainEntry] = []
            for start in range(0, len(rows), HASH_SLICE):
                if start:
                    await asyncio.sleep(0)  # the requests waiting on this process go first
                digests = []
                for row in rows[start : start + HASH_SLICE]:
                    values = (*row[:details], _json_object(row[details]), *row[details + 1 : end])
                    digests.append((row[end], digest_of_values(values)))
                entries += link(head, digests)
                head = ChainHead(entries[-1].seq, entries[-1].hash)
            # The application role may not write audit_chain: the owner's function checks that the
            # entries extend the chain soundly and appends them (migration 0009).
            await conn.execute(
                _APPEND,
                [x.seq for x in entries],
                [x.event_id for x in entries],
                [x.digest for x in entries],
                [x.prev_hash for x in entries],
                [x.hash for x in entries],
            )
        return len(entries), entries[-1].event_id

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The asyncpg connection under one of the engine's pooled connections, for one round.

        After a failure it goes back to the pool only once a ROLLBACK has gone through and left it
        out of any transaction: asyncpg waits for a cancelled statement's end before sending it, so
        a round cancelled in mid-statement is covered too (the connection's transaction state is
        not yet known when the cancellation arrives). Otherwise it is invalidated: closed, and
        PostgreSQL drops its transaction and advisory locks.
        """
        async with self._engine.connect() as pooled:
            conn = (await pooled.get_raw_connection()).driver_connection
            assert conn is not None  # a checked-out connection always has one
            try:
                yield conn
            except BaseException:
                clean = False
                try:
                    await conn.execute("ROLLBACK")  # outside a transaction: a warning, nothing else
                    clean = not conn.is_in_transaction()
                except Exception:  # noqa: S110 - the connection is invalidated below instead
                    pass
                finally:
                    if not clean:
                        await pooled.invalidate()
                raise

    def wake(self) -> None:
        """Seal now rather than at the next interval (a hint)."""
        self._wake.set()

    async def run(self) -> None:
        """Seal every ``interval`` seconds until cancelled; a failed round is logged and retried."""
        while True:
            try:
                sealed = await self.seal_pending()
                if sealed:
                    log.debug("audit.sealed", events=sealed)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database may be away; the next round tries again
                log.warning("audit.seal_failed", error=type(error).__name__)
            await woken_or_after(self._wake, self.interval)
            self._wake.clear()


_decode_json = json.JSONDecoder().raw_decode  # json.loads' decoder, without its checks for whitespace


def _json_object(text: str) -> object:
    """``json.loads(text)`` of the JSON text PostgreSQL prints for a jsonb value, in half the time."""
    if text == "{}":
        return {}
    try:
        value, end = _decode_json(text)
    except ValueError:
        return json.loads(text)  # raises the same, unless it was only leading whitespace
    return value if end == len(text) else json.loads(text)


@contextlib.asynccontextmanager
async def _transaction(conn: asyncpg.Connection, first: str) -> AsyncIterator[None]:
    """A transaction that starts with the statements ``first``, sent with its BEGIN in one round
    trip, and commits if the block completes (on a failure, the round's connection rolls back).

    READ COMMITTED whatever the server's default: each statement must see what committed before it
    started, so a read that follows a lock sees everything the lock waited for.
    """
    await conn.execute(f"BEGIN ISOLATION LEVEL READ COMMITTED; {first}")
    yield
    await conn.execute("COMMIT")
