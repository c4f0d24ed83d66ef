"""Audit ports: the buffered log every workflow records into, and reads of the stored trail."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from engine.audit import AuditEvent, DetailValue
from engine.audit_figures import DecisionCount, Period, PeriodCount
from engine.audit_trail import AuditFilter, AuditRecord, Disclosure
from engine.model import Page


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
