"""The expiry sweep's claim on real PostgreSQL: two instances sweeping at once take different
consents (``FOR UPDATE SKIP LOCKED``), and a consent one of them swept is never claimed again."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from engine.model import Purpose, RecipientType, RiskLevel, Role
from engine.ports.consents import NewConsent
from engine.ports.identity import NewUser
from engine.ports.patients import NewPatient
from integrations.db.uow import SqlUnitOfWork


async def test_two_sweeps_at_once_claim_different_consents_and_a_swept_one_never_again(
    engine: AsyncEngine,
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    async with SqlUnitOfWork(sessions) as u:
        org = await u.organizations.add(f"Clinic {secrets.token_hex(4)}", self_registration=True)
        partner = await u.organizations.add(f"Partner {secrets.token_hex(4)}", self_registration=True)
        nurse = await u.users.add(
            NewUser(f"n.{secrets.token_hex(4)}@example.org", "hash", "A", "B", Role.CARE_TEAM_MEMBER, org.id)
        )
        patient = await u.patients.add(NewPatient(org.id, "Ann", "Lee", None, RiskLevel.LOW, nurse.id))
        ours = set()
        for minutes in (30, 20, 10, 5):
            consent = await u.consents.add(
                NewConsent(
                    patient.id,
                    RecipientType.ORGANIZATION,
                    purpose=Purpose.TREATMENT,
                    effective_at=now - timedelta(days=3660),
                    expires_at=now - timedelta(days=3650, minutes=minutes),  # older than any other test's
                    recorded_by=nurse.id,
                    organization_id=partner.id,
                    compliance_group_id=None,
                    external_phone_number=None,
                    external_name=None,
                )
            )
            ours.add(consent.id)
        await u.commit()

    first, second = SqlUnitOfWork(sessions), SqlUnitOfWork(sessions)
    async with first, second:
        claimed_first = await first.consent_lifecycle.claim_expired(now, 2)
        claimed_second = await second.consent_lifecycle.claim_expired(now, 2)
        for claim, u in ((claimed_first, first), (claimed_second, second)):
            for expired in claim:
                await u.consent_lifecycle.mark_expiry_swept(expired.consent.id, now)
        await first.commit()
        await second.commit()
    a = {c.consent.id for c in claimed_first}
    b = {c.consent.id for c in claimed_second}
    assert a <= ours
    assert b <= ours
    assert len(a) == len(b) == 2
    assert a.isdisjoint(b)
    async with SqlUnitOfWork(sessions) as u:
        again = await u.consent_lifecycle.claim_expired(now, 10_000)
    assert not {c.consent.id for c in again} & ours
