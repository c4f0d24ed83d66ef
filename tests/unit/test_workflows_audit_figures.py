"""The counts behind the console's charts, on fakes: decided as ``audit.read`` for one's own
organization, refused to other roles before anything is counted, and a period too long or empty
refused naming ``from`` (tests/console/test_console_charts.py shows what PostgreSQL counts)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.audit_figures import Period
from engine.errors import Forbidden, InvalidInput
from engine.model import Role
from engine.workflows.audit_figures import CountDecisions, audit_figures
from tests.support.fakes import FakeWorld


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.COMPLIANCE_OFFICER])
async def test_auditors_and_officers_count_their_own_organizations_records(
    world: FakeWorld, role: Role
) -> None:
    org = world.organization()
    until = world.clock()
    since = until - timedelta(weeks=12)

    figures = await audit_figures(world.services, world.actor(role, org.id), CountDecisions(since, until))

    assert (figures.since, figures.until, figures.period) == (since, until, Period.WEEK)
    assert world.db.audit_queries == [
        ("decisions", (org.id, since, until, Period.WEEK)),
        ("break_glass_openings", (org.id, since, until)),
    ]
    [event] = world.events("audit.read")
    assert (event.outcome, event.details["organization_id"], event.details["view"]) == (
        "success",
        org.id,
        "figures",
    )


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.ADMIN])
async def test_other_roles_may_not_count_and_nothing_is_counted(world: FakeWorld, role: Role) -> None:
    org = world.organization()
    until = world.clock()
    with pytest.raises(Forbidden):
        await audit_figures(
            world.services, world.actor(role, org.id), CountDecisions(until - timedelta(days=7), until)
        )
    assert world.db.audit_queries == []
    [event] = world.events("audit.read")
    assert (event.outcome, event.reason) == ("denied", "role_not_permitted")


@pytest.mark.parametrize(
    ("days", "period"), [(0, Period.WEEK), (-1, Period.DAY), (63, Period.DAY), (372, Period.WEEK)]
)
async def test_an_empty_or_too_long_period_is_refused_naming_from(
    world: FakeWorld, days: int, period: Period
) -> None:
    org = world.organization()
    until = world.clock()
    with pytest.raises(InvalidInput) as raised:
        await audit_figures(
            world.services,
            world.actor(Role.AUDITOR, org.id),
            CountDecisions(until - timedelta(days=days), until, period),
        )
    assert [e.field for e in raised.value.errors] == ["from"]
    assert world.events("audit.read") == []
    assert world.db.audit_queries == []
