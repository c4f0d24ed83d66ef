"""The audit trail in PostgreSQL: searches, the accounting of disclosures, chain reads for
``caremsg audit verify``, and the streaming reads behind ``caremsg audit export``.

Nothing here writes an audit event (the unit of work does) or a chain entry (the sealer does).

Longer than 400 lines because every read of the trail, its chain and its anchors shares the one
search condition and the one row mapping here, so the search, its export and the verifier cannot
drift apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, and_, cast, exists, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from engine.audit import ANSWERED, AuditEvent, replayable_facts
from engine.audit_chain import (
    CONTENT_FIELDS,
    ChainEntry,
    ChainHead,
    ChainWalk,
    Problem,
    VerifyReport,
    content_digest,
    first_problem,
    out_of_sequence,
)
from engine.audit_trail import (
    DISCLOSED,
    Anchor,
    AuditFilter,
    AuditRecord,
    ChainPlace,
    Disclosure,
    RecordDetail,
)
from engine.model import EXTERNAL_PARTICIPANT, Page
from engine.policy_edits import AuditedDecision
from integrations.db.columns import table_of
from integrations.db.tables import (
    AuditAnchorRow,
    AuditChainRow,
    AuditEventRow,
    ConsentRow,
    PatientRow,
    UserRow,
)

events_t = table_of(AuditEventRow)
chain_t = table_of(AuditChainRow)
anchors_t = table_of(AuditAnchorRow)
patients_t = table_of(PatientRow)
users_t = table_of(UserRow)
consents_t = table_of(ConsentRow)

CONTENT_COLUMNS = [events_t.c[name] for name in CONTENT_FIELDS]
#: A time-range search gathers at most this many matching ids through the time index (see
#: ``SqlAuditTrail._in_range``); past it, it walks the primary key instead.
RANGE_CAP = 100_000


def content_of(row: Any) -> dict[str, object]:
    """The canonical content of an event row, as the digest covers it."""
    mapping = row._mapping
    return {name: mapping[name] for name in CONTENT_FIELDS}


def event_of(row: Any) -> AuditEvent:
    m = row._mapping
    return AuditEvent(
        event=m["event"],
        workflow=m["workflow"],
        outcome=m["outcome"],
        occurred_at=m["occurred_at"],
        actor_id=m["actor_id"],
        actor_role=m["actor_role"],
        organization_id=m["organization_id"],
        request_id=m["request_id"],
        source_address=m["source_address"],
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        patient_id=m["patient_id"],
        decision=m["decision"],
        matched_rule=m["matched_rule"],
        reason=m["reason"],
        policy_version=m["policy_version"],
        purpose=m["purpose"],
        break_glass=m["break_glass"],
        details=dict(m["details"] or {}),
        subject_hash=m["subject_hash"],
    )


def records_query() -> Select[Any]:
    """Events with their chain position (null while unsealed), by id."""
    return (
        select(events_t.c.id, *CONTENT_COLUMNS, chain_t.c.seq, chain_t.c.hash)
        .select_from(events_t.outerjoin(chain_t, chain_t.c.event_id == events_t.c.id))
        .order_by(events_t.c.id)
    )


def record_of(row: Any) -> AuditRecord:
    return AuditRecord(row.id, event_of(row), row.seq, row.hash)


def anchor_of(row: Any) -> Anchor:
    return Anchor(row.id, row.seq, row.event_id, row.hash, row.key_id, row.signed_at)


def visible_to(organization_id: int) -> Any:
    """The records an organization's auditors see: its staff's, and any about one of its patients;
    but not its staff's records of what they were not told (``details.answered``, see
    :data:`engine.audit.ANSWERED`: the records of what they were answered stand beside them), nor
    the events of no organization (a failed login for an email without an account: telling it from
    one for another organization's account would tell that the account exists).

    The organization's own records need their row read for ``details`` (not in the time index).
    """
    e = events_t.c
    own_patients = select(patients_t.c.id).where(patients_t.c.organization_id == organization_id)
    told = or_(e.organization_id != organization_id, ~e.details.has_key(ANSWERED))
    return and_(or_(e.organization_id == organization_id, e.patient_id.in_(own_patients)), told)


def search_conditions(query: AuditFilter) -> list[Any]:
    """The WHERE conditions of an auditor's search: the organization's visibility, then each filter."""
    e = events_t.c
    conditions: list[Any] = [visible_to(query.organization_id)]
    for column, value in (
        (e.actor_id, query.actor_id),
        (e.patient_id, query.patient_id),
        (e.workflow, query.workflow),
        (e.decision, query.decision),
        (e.outcome, query.outcome),
        (e.break_glass, query.break_glass),
        (e.subject_hash, query.subject_hash),
        (e.reason, query.reason),
        (e.purpose, query.purpose),
    ):
        if value is not None:
            conditions.append(column == value)
    if query.since is not None:
        conditions.append(e.occurred_at >= query.since)
    if query.until is not None:
        conditions.append(e.occurred_at < query.until)
    return conditions


class SqlAuditTrail:
    """The :class:`engine.ports.AuditTrail` adapter, on the unit of work's session."""

    def __init__(self, session: AsyncSession, *, range_cap: int = RANGE_CAP) -> None:
        self.session = session
        self.range_cap = range_cap

    async def search(self, query: AuditFilter, after: int | None, limit: int) -> Page[AuditRecord]:
        e = events_t.c
        conditions = search_conditions(query)
        if after is not None:
            conditions.append(e.id > after)
        rows = None
        if query.since is not None or query.until is not None:
            rows = await self._in_range(conditions, limit)
        if rows is None:
            # The page's ids first, then their chain entries: joined before the limit, PostgreSQL
            # may merge-join the whole chain against a long walk of the primary key.
            page_ids = select(e.id).where(*conditions).order_by(e.id).limit(limit + 1)
            rows = (await self.session.execute(records_query().where(e.id.in_(page_ids)))).all()
        items = tuple(record_of(r) for r in rows[:limit])
        return Page(items, items[-1].id if len(rows) > limit else None)

    async def _in_range(self, conditions: list[Any], limit: int) -> list[Any] | None:
        """A time-range search's page, or None when the range holds more than ``range_cap``
        (:data:`RANGE_CAP`) matching records.

        Ids follow time only roughly, and PostgreSQL cannot know how roughly: for ``ORDER BY id
        LIMIT n`` it walks the primary key from the start and filters on the time, which for a week
        late in a year of records reads most of the year first (bench/audit_search.py). So the
        matching ids are gathered through the time index first (``ix_audit_events_occurred_at_visible``
        covers the organization and patient the visibility asks for), at most ``RANGE_CAP + 1`` of
        them, and the page is the lowest of those: exact whenever the cap is not reached. A wider
        range walks the primary key as before: quick when it starts early in the trail, slow (most
        of the table read) when a wide range starts late in a long one — not solved here.
        """
        e = events_t.c
        matching = (
            select(e.id, e.occurred_at)
            .where(*conditions)
            .order_by(e.occurred_at)
            .limit(self.range_cap + 1)
            .cte("matching")
            .prefix_with("MATERIALIZED")
        )
        lowest = select(matching.c.id).order_by(matching.c.id).limit(limit + 1)
        counted = select(func.count()).select_from(matching).scalar_subquery()
        statement = records_query().where(e.id.in_(lowest)).add_columns(counted.label("matching"))
        rows = (await self.session.execute(statement)).all()
        if rows and rows[0].matching > self.range_cap:
            return None
        return list(rows)

    async def detail(self, record_id: int, organization_id: int) -> RecordDetail | None:
        c = chain_t.c
        query = (
            select(events_t.c.id, *CONTENT_COLUMNS, c.seq, c.hash, c.digest, c.prev_hash)
            .select_from(events_t.outerjoin(chain_t, c.event_id == events_t.c.id))
            .where(events_t.c.id == record_id, *search_conditions(AuditFilter(organization_id)))
        )
        row = (await self.session.execute(query)).one_or_none()
        if row is None:
            return None
        if row.seq is None:
            return RecordDetail(record_of(row), None)
        anchor = (
            await self.session.execute(
                select(anchors_t)
                .where(anchors_t.c.seq >= row.seq)
                .order_by(anchors_t.c.seq, anchors_t.c.id)
                .limit(1)
            )
        ).one_or_none()
        place = ChainPlace(
            row.seq, row.digest, row.prev_hash, row.hash, anchor_of(anchor) if anchor else None
        )
        return RecordDetail(record_of(row), place)

    async def disclosures(
        self, patient_id: int, since: datetime, until: datetime, after: int | None, limit: int
    ) -> Page[Disclosure]:
        e = events_t.c
        subject = users_t.alias("subject")
        # ->> gives SQL NULL for a missing key and for a JSON null alike.
        consent_id = e.details["consent_id"].astext
        subject_id = e.details["subject_user_id"].astext
        query = (
            select(
                e.id,
                e.occurred_at,
                e.workflow,
                e.actor_id,
                e.actor_role,
                e.organization_id,
                e.purpose,
                e.details,
                subject.c.role.label("subject_role"),
                subject.c.organization_id.label("subject_organization_id"),
                consents_t.c.purpose.label("consent_purpose"),
                consents_t.c.part2.label("consent_part2"),
            )
            .select_from(
                events_t.outerjoin(subject, subject.c.id == cast(subject_id, Integer)).outerjoin(
                    consents_t, consents_t.c.id == cast(consent_id, Integer)
                )
            )
            .where(
                e.patient_id == patient_id,
                e.outcome == "success",
                # an allowed decision under a consent, or a message disclosed beside its decision
                or_(e.decision == "allow", e.event == DISCLOSED),
                consent_id.is_not(None),
                e.occurred_at >= since,
                e.occurred_at < until,
                e.id > (after or 0),
            )
            .order_by(e.id)
            .limit(limit + 1)
        )
        rows = (await self.session.execute(query)).all()
        items = tuple(_disclosure(r) for r in rows[:limit])
        return Page(items, items[-1].audit_event_id if len(rows) > limit else None)

    async def decisions(
        self, organization_id: int | None, since: datetime, until: datetime | None, limit: int
    ) -> list[AuditedDecision]:
        e = events_t.c
        subject = users_t.alias("subject")
        conditions = [e.event == "decision", e.occurred_at >= since]
        if until is not None:
            conditions.append(e.occurred_at < until)
        if organization_id is not None:
            conditions.append(visible_to(organization_id))
        query = (
            select(
                e.id,
                e.occurred_at,
                e.workflow,
                e.actor_role,
                e.decision,
                e.policy_version,
                e.details,
                e.reason,
                subject.c.role.label("subject_role"),
            )
            .select_from(
                events_t.outerjoin(
                    subject, subject.c.id == cast(e.details["subject_user_id"].astext, Integer)
                )
            )
            .where(*conditions)
            .order_by(e.id.desc())
            .limit(limit)
        )
        return [audited_decision(r) for r in (await self.session.execute(query)).all()]


def _disclosure(row: Any) -> Disclosure:
    details: Mapping[str, Any] = row.details or {}
    consent = details.get("consent_id")
    if "external_index" in details:
        recipient, user_id, role, org = "external", None, None, None
    elif details.get("recipient_organization_id") is not None:
        recipient, user_id, role, org = "organization", None, None, int(details["recipient_organization_id"])
    elif details.get("subject_user_id") is not None:
        recipient = "person"
        user_id, role, org = int(details["subject_user_id"]), row.subject_role, row.subject_organization_id
    else:
        recipient, user_id, role, org = "person", row.actor_id, row.actor_role, row.organization_id
    return Disclosure(
        audit_event_id=row.id,
        occurred_at=row.occurred_at,
        workflow=row.workflow,
        actor_id=row.actor_id,
        actor_role=row.actor_role,
        actor_organization_id=row.organization_id,
        recipient=recipient,
        recipient_user_id=user_id,
        recipient_role=role,
        recipient_organization_id=org,
        consent_id=int(consent) if consent is not None else None,
        purpose=row.purpose or row.consent_purpose,
        part2=bool(row.consent_part2),
    )


# --- the chain, for the verifier -------------------------------------------------------------------


def _entry(row: Any) -> ChainEntry:
    return ChainEntry(row.seq, row.event_id, row.digest, row.prev_hash, row.hash)


async def chain_head(conn: AsyncConnection) -> ChainHead:
    row = (
        await conn.execute(
            select(chain_t.c.seq, chain_t.c.hash, chain_t.c.event_id).order_by(chain_t.c.seq.desc()).limit(1)
        )
    ).one_or_none()
    return ChainHead(row.seq, row.hash, row.event_id) if row else ChainHead()


async def verify_chain(
    conn: AsyncConnection, *, batch_size: int = 2000, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Walk the whole chain in ``seq`` order against the events, and look for inserted events.

    Reads in batches (keyset on ``seq``), so memory stays flat however long the trail is. Extra
    lookups (which entry holds this digest, where was this entry sealed) run only on a mismatch.
    ``progress`` is told how many entries were checked after each batch.
    """
    walk = ChainWalk()
    chain_problem: Problem | None = None
    last = 0
    c, e = chain_t.c, events_t.c
    while chain_problem is None:
        rows = (
            await conn.execute(
                select(
                    c.seq, c.event_id, c.digest, c.prev_hash, c.hash, e.id.label("present"), *CONTENT_COLUMNS
                )
                .select_from(chain_t.outerjoin(events_t, e.id == c.event_id))
                .where(c.seq > last)
                .order_by(c.seq)
                .limit(batch_size)
            )
        ).all()
        if not rows:
            break
        for row in rows:
            entry = _entry(row)
            content = content_of(row) if row.present is not None else None
            moved_from = origin = None
            if content is not None and content_digest(content) != entry.digest:
                moved_from = await _entry_with_digest(conn, content_digest(content))
            if entry.prev_hash != walk.previous.hash:
                origin = await _seq_after_hash(conn, entry.prev_hash)
            chain_problem = walk.check(entry, content, moved_from, origin)
            if chain_problem is not None:
                break
            last = entry.seq
        if progress is not None:
            progress(walk.checked)
    head = await chain_head(conn)
    inserted_id, inserted_after = await _first_inserted(conn, head)
    return VerifyReport(
        checked=walk.checked,
        head=head,
        unsealed=await unsealed_count(conn, head),
        problem=first_problem(chain_problem, inserted_id, inserted_after) or await _out_of_sequence(conn),
    )


async def _out_of_sequence(conn: AsyncConnection) -> Problem | None:
    """The lowest record whose id the sequence never handed out, if any."""
    row = (
        await conn.execute(
            text(
                "WITH s AS (SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS last"
                " FROM audit_events_id_seq)"
                " SELECT (SELECT min(id) FROM audit_events, s WHERE id > s.last) AS id, s.last FROM s"
            )
        )
    ).one()
    return None if row.id is None else out_of_sequence(int(row.id), int(row.last))


async def _entry_with_digest(conn: AsyncConnection, digest: str) -> ChainEntry | None:
    row = (await conn.execute(select(chain_t).where(chain_t.c.digest == digest).limit(1))).one_or_none()
    return _entry(row) if row else None


async def _seq_after_hash(conn: AsyncConnection, prev_hash: str) -> int | None:
    if prev_hash == ChainHead().hash:
        return 1
    seq = (await conn.execute(select(chain_t.c.seq).where(chain_t.c.hash == prev_hash).limit(1))).scalar()
    return None if seq is None else int(seq) + 1


async def _first_inserted(conn: AsyncConnection, head: ChainHead) -> tuple[int | None, int | None]:
    """The lowest-id event at or below the sealed head that is not in the chain, and the seq of the
    last entry before it (by event id)."""
    e, c = events_t.c, chain_t.c
    inserted = (
        await conn.execute(
            select(func.min(e.id)).where(e.id <= head.event_id, ~exists().where(c.event_id == e.id))
        )
    ).scalar()
    if inserted is None:
        return None, None
    after = (await conn.execute(select(func.max(c.seq)).where(c.event_id < inserted))).scalar()
    return int(inserted), int(after or 0)


# --- export ----------------------------------------------------------------------------------------


def _range(since: datetime | None, until: datetime | None) -> list[Any]:
    conditions: list[Any] = []
    if since is not None:
        conditions.append(events_t.c.occurred_at >= since)
    if until is not None:
        conditions.append(events_t.c.occurred_at < until)
    return conditions or [and_(True)]


async def count_records(conn: AsyncConnection, since: datetime | None, until: datetime | None) -> int:
    return int(
        (
            await conn.execute(select(func.count()).select_from(events_t).where(*_range(since, until)))
        ).scalar_one()
    )


async def stream_search(
    conn: AsyncConnection, query: AuditFilter, *, batch_size: int = 500
) -> AsyncIterator[AuditRecord]:
    """Every record an auditor's search matches, by id, through a server-side cursor."""
    result = await conn.stream(
        records_query().where(*search_conditions(query)).execution_options(yield_per=batch_size)
    )
    async for row in result:
        yield record_of(row)


async def unsealed_count(conn: AsyncConnection, head: ChainHead) -> int:
    """Events above the sealed head: committed but not yet in the chain."""
    query = select(func.count()).select_from(events_t).where(events_t.c.id > head.event_id)
    return int((await conn.execute(query)).scalar_one())


async def newest_anchors(conn: AsyncConnection, limit: int) -> tuple[Anchor, ...]:
    rows = (await conn.execute(select(anchors_t).order_by(anchors_t.c.id.desc()).limit(limit))).all()
    return tuple(anchor_of(r) for r in rows)


async def stored_anchor(conn: AsyncConnection, anchor_id: int) -> tuple[Anchor, str] | None:
    """An anchor and its signature (base64), or None."""
    row = (await conn.execute(select(anchors_t).where(anchors_t.c.id == anchor_id))).one_or_none()
    return None if row is None else (anchor_of(row), str(row.signature))


async def stream_records(
    conn: AsyncConnection, since: datetime | None, until: datetime | None, *, batch_size: int = 500
) -> AsyncIterator[AuditRecord]:
    """Every record in the range, by id, through a server-side cursor: memory stays flat."""
    result = await conn.stream(
        records_query().where(*_range(since, until)).execution_options(yield_per=batch_size)
    )
    async for row in result:
        yield record_of(row)


def audited_decision(row: Any) -> AuditedDecision:
    """A decision row as ``policy diff`` replays it: the role decided on is the one recorded with it
    (``details.subject_role``, for a decision about someone being added), else the external
    participant's, else the subject's role now, else the actor's."""
    details: Mapping[str, Any] = row.details or {}
    recorded_role = details.get("subject_role")
    if isinstance(recorded_role, str):
        role = recorded_role
    elif "external_index" in details or "external_participant_id" in details:
        role = EXTERNAL_PARTICIPANT
    else:
        role = row.subject_role or row.actor_role or ""
    return AuditedDecision(
        row.id,
        row.occurred_at,
        row.workflow,
        role,
        replayable_facts(details),
        row.decision,
        row.policy_version,
        row.reason,
    )
