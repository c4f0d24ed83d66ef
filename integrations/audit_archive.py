"""The audit trail as ``caremsg audit`` (handlers/cli_audit.py) works on it: verify the hash chain,
seal what is committed, read and store signed anchors of the chain head, and stream records for an
export. Each call opens its own connection on the archive's engine; the command line never holds a
connection or writes SQL itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.audit_chain import ChainHead, VerifyReport
from engine.audit_trail import Anchor, AuditFilter, AuditRecord, ChainStatus
from integrations.audit_sealer import AuditSealer
from integrations.db.audit import (
    chain_head,
    chain_t,
    count_records,
    newest_anchors,
    stored_anchor,
    stream_records,
    stream_search,
    unsealed_count,
    verify_chain,
)
from integrations.db.columns import table_of
from integrations.db.resources import create_engine
from integrations.db.tables.audit import AuditAnchorRow

_anchors: Table = table_of(AuditAnchorRow)


class AuditArchive:
    """The stored audit trail: events, their hash chain and the anchors signed over it."""

    def __init__(self, engine: AsyncEngine, *, seal_batch_size: int = 1000) -> None:
        self._engine = engine
        self._seal_batch_size = seal_batch_size

    async def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Walk the whole chain against the events (integrations/db/audit.py ``verify_chain``);
        ``progress`` is told the entries checked so far after each batch."""
        async with self._engine.connect() as conn:
            return await verify_chain(conn, progress=progress)

    async def status(self, anchors: int) -> ChainStatus:
        """The head, how many events wait to be sealed, and the newest ``anchors`` anchors."""
        async with self._engine.connect() as conn:
            head = await chain_head(conn)
            return ChainStatus(head, await unsealed_count(conn, head), await newest_anchors(conn, anchors))

    async def anchor(self, anchor_id: int) -> tuple[Anchor, str] | None:
        """A stored anchor and its signature (base64), or None."""
        async with self._engine.connect() as conn:
            return await stored_anchor(conn, anchor_id)

    async def seal_pending(self) -> int:
        """Chain every event committed so far; how many were sealed."""
        return await AuditSealer(self._engine, batch_size=self._seal_batch_size).seal_pending()

    async def head(self) -> ChainHead:
        """The newest chain entry (an empty head for an empty chain)."""
        async with self._engine.connect() as conn:
            return await chain_head(conn)

    async def sealed_at(self, seq: int) -> tuple[str, int] | None:
        """The hash and the event id the chain holds at ``seq``, or None if it no longer has ``seq``."""
        query = select(chain_t.c.hash, chain_t.c.event_id).where(chain_t.c.seq == seq)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else (str(row.hash), int(row.event_id))

    async def store_anchor(self, head: ChainHead, document: dict[str, Any]) -> int:
        """Keep a signed anchor of ``head`` (as ``integrations.audit_anchor.sign_anchor`` wrote it);
        its id."""
        async with self._engine.begin() as conn:
            stored = await conn.execute(
                insert(_anchors)
                .values(
                    seq=head.seq,
                    event_id=head.event_id,
                    hash=head.hash,
                    key_id=document["keyId"],
                    signature=document["signature"],
                    signed_at=datetime.fromisoformat(document["signedAt"]),
                )
                .returning(_anchors.c.id)
            )
            return int(stored.scalar_one())

    @asynccontextmanager
    async def records(
        self, since: datetime | None, until: datetime | None
    ) -> AsyncIterator[tuple[int, AsyncIterator[AuditRecord]]]:
        """How many records the range holds, and a stream of them by id (a server-side cursor on one
        connection, held while the caller reads)."""
        async with self._engine.connect() as conn:
            yield await count_records(conn, since, until), stream_records(conn, since, until)

    @asynccontextmanager
    async def search_records(self, query: AuditFilter) -> AsyncIterator[AsyncIterator[AuditRecord]]:
        """The records an auditor's search matches, streamed by id on one held connection."""
        async with self._engine.connect() as conn:
            yield stream_search(conn, query)


@asynccontextmanager
async def open_archive(
    url: str, *, statement_timeout_ms: int, seal_batch_size: int
) -> AsyncIterator[AuditArchive]:
    """An archive on its own small engine, disposed of on the way out."""
    engine = create_engine(url, pool_size=2, max_overflow=0, statement_timeout_ms=statement_timeout_ms)
    try:
        yield AuditArchive(engine, seal_batch_size=seal_batch_size)
    finally:
        await engine.dispose()
