"""The audit trail as pictures: decisions over time by outcome and reason, and break-glass openings
per week, for the console's charts page.

Decided as ``audit.read``, the audit search's own workflow, with the same scope: an auditor or a
compliance officer counts their own organization's records (its staff's, and any about its
patients), never another's. Looking is audited like searching.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.audit_figures import Figures, Period
from engine.decisions import Fact
from engine.errors import FieldError, InvalidInput
from engine.model import Actor
from engine.ports.units import AuditUnitOfWork
from engine.services import Guard, Services

#: The longest period one chart covers: a bar per day for two months, a bar per week for a year.
LONGEST = {Period.DAY: timedelta(days=62), Period.WEEK: timedelta(days=371)}


def _unit_of_work(services: Services) -> AuditUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class CountDecisions:
    since: datetime
    until: datetime
    period: Period = Period.WEEK


async def audit_figures(services: Services, actor: Actor, cmd: CountDecisions) -> Figures:
    """The actor's organization's decisions per period by outcome and reason, and its break-glass
    openings per week, from ``since`` (inclusive) to ``until`` (exclusive)."""
    if cmd.since >= cmd.until:
        raise InvalidInput([FieldError("from", "Must be earlier than to.")])
    if cmd.until - cmd.since > LONGEST[cmd.period]:
        days = LONGEST[cmd.period].days
        raise InvalidInput(
            [FieldError("from", f"At most {days} days with a bar per {cmd.period.value}.", "period_too_long")]
        )
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "audit.read",
            {Fact.OWN_ORG},
            resource_type="audit_event",
            details={"organization_id": actor.organization_id, "view": "figures"},
        )
        org = actor.organization_id
        decisions = await uow.audit_figures.decisions(org, cmd.since, cmd.until, cmd.period)
        openings = await uow.audit_figures.break_glass_openings(org, cmd.since, cmd.until)
        await uow.commit()
    return Figures(cmd.since, cmd.until, cmd.period, tuple(decisions), tuple(openings))
