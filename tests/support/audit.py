"""Finding a test's own audit records in the database.

Every test on a worker writes to one database, and a resource's id comes from a sequence: the same
number is also the id of another test's resource of another type, and of any request that asked for
that id before it existed (a refused read, a lookup that found nothing, schemathesis's probes; they
are audited under the id asked for). So a test finds its records by something only it has: the
request ids it sent (``new_request_id``), its people, its organization or its patient, never by a
resource id alone."""

from __future__ import annotations

import asyncpg


async def request_records(
    db: asyncpg.Connection, *request_ids: str, workflow: str | None = None
) -> list[asyncpg.Record]:
    """The audit records of these requests (each sent with its own ``X-Request-ID``), of
    ``workflow`` when given, oldest first."""
    return await db.fetch(  # type: ignore[no-any-return]
        "SELECT * FROM audit_events WHERE request_id = ANY($1::text[])"
        " AND ($2::text IS NULL OR workflow = $2) ORDER BY id",
        list(request_ids),
        workflow,
    )


async def webhook_request_id(db: asyncpg.Connection, dedupe_key: str) -> str:
    """The request id of the records a stored webhook's processing wrote (``webhook-<event id>``)."""
    event_id = await db.fetchval("SELECT id FROM webhook_events WHERE dedupe_key = $1", dedupe_key)
    assert event_id is not None, dedupe_key
    return f"webhook-{event_id}"
