"""Audit ports: the buffered log every workflow records into, and reads of the stored trail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from engine.audit import AuditEvent, DetailValue
from engine.audit_figures import DecisionCount, Period, PeriodCount
from engine.audit_trail import (
    Anchor,
    AuditFilter,
    AuditRecord,
    ChainStatus,
    Disclosure,
    RecordDetail,
    VerificationRun,
)
from engine.model import Page
from engine.policy_edits import AuditedDecision


class AuditLog(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Buffer an event; it is written with the transaction (or, on rollback, on its own)."""
        ...

    def amend_last(
        self,
        workflow: str,
        *,
        resource_id: str | None = None,
        patient_id: int | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None:
        """Complete the latest ``workflow`` decision once the record exists (a create decides before
        the record has an id): set the given ids, merge the given details; None leaves a field."""
        ...


class AuditTrail(Protocol):
    """Reads of the stored audit trail, in the workflow's transaction. Never writes."""

    async def search(self, query: AuditFilter, after: int | None, limit: int) -> Page[AuditRecord]:
        """Events matching every given filter, by ascending id (a stable order: ids never change)."""
        ...

    async def disclosures(
        self, patient_id: int, since: datetime, until: datetime, after: int | None, limit: int
    ) -> Page[Disclosure]:
        """Allowed, committed accesses to the patient's data by people of another organization under
        a consent, and disclosures to external parties, in the period, by ascending id."""
        ...

    async def decisions(
        self, organization_id: int | None, since: datetime, until: datetime | None, limit: int
    ) -> list[AuditedDecision]:
        """Policy decisions (denials included) in [since, until), newest first, at most ``limit``,
        each with the role decided on and its recorded facts, for ``policy diff`` to decide again.

        With an organization: only what its audit search shows (its people's records and those about
        its patients); None: every organization's (the command line, run by the operator).
        """
        ...

    async def detail(self, record_id: int, organization_id: int) -> RecordDetail | None:
        """The record with its place in the chain, if the organization may see it (the same
        visibility as :meth:`search`); None for another organization's record or no record."""
        ...


class AuditRecordStream(Protocol):
    """Every record a search matches, streamed (for exports): memory stays flat however many."""

    def records(self, query: AuditFilter) -> AbstractAsyncContextManager[AsyncIterator[AuditRecord]]:
        """The records ``query`` matches (the visibility and filters of
        :meth:`AuditTrail.search`), by id, read while the caller iterates."""
        ...


class AuditChain(Protocol):
    """The hash chain of the whole trail (one for every organization): its status, signed anchors,
    and verifications run in the background by this instance."""

    async def status(self, anchors: int) -> ChainStatus:
        """The head, the count of records not sealed yet, and the newest ``anchors`` anchors."""
        ...

    async def anchor_document(self, anchor_id: int) -> Mapping[str, object] | None:
        """A stored anchor as the JSON document ``caremsg audit anchor`` prints (with its
        signature), or None if there is no such anchor."""
        ...

    async def create_anchor(self, signed_at: datetime) -> Anchor:
        """Seal what is committed, sign the head with the service's key and store the anchor."""
        ...

    def running(self) -> VerificationRun | None:
        """The verification this instance is running now, if any (one at a time)."""
        ...

    def verification(self, run_id: str) -> VerificationRun | None:
        """A verification this instance ran or runs (the newest few are kept), by id."""
        ...

    def start_verification(
        self, run_id: str, started_by: int, on_finished: Callable[[VerificationRun], Awaitable[None]]
    ) -> VerificationRun:
        """Start walking the whole chain in the background (``caremsg audit verify``'s walk);
        ``on_finished`` is awaited with the run once it has its report or error."""
        ...


class AuditFigures(Protocol):
    """Counts over the stored audit trail for the console's charts, in the workflow's transaction.

    The records counted are those an auditor of ``organization_id`` finds in a search: its staff's,
    and any about one of its patients.
    """

    async def decisions(
        self, organization_id: int, since: datetime, until: datetime, period: Period
    ) -> list[DecisionCount]:
        """Policy decisions per period, outcome and (for denials) reason; empty periods left out."""
        ...

    async def break_glass_openings(
        self, organization_id: int, since: datetime, until: datetime
    ) -> list[PeriodCount]:
        """Emergency sessions opened (allowed and carried out) per ISO week; empty weeks left out."""
        ...
