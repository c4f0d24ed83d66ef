"""SQL behind the policy proposals port (engine/ports/policy.py): proposed edits of the policy files
and their four-eyes decision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update

from engine.model import Page
from engine.ports.policy import NewPolicyProposal, PolicyProposal, ProposalState
from engine.workflows.policy_changes import sha256_of
from integrations.db.base import Repository, page
from integrations.db.columns import table_of
from integrations.db.tables import PolicyProposalRow

proposals_t = table_of(PolicyProposalRow)
#: The one advisory lock every application of a proposal holds until its transaction ends (any
#: instance): two approvals never write the policy files at once.
APPLY_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('caremsg.policy_files'))")


def _proposal(row: Any) -> PolicyProposal:
    return PolicyProposal(
        id=row.id,
        file=row.file,
        content=row.content,
        content_sha256=row.content_sha256,
        base_content=row.base_content,
        base_sha256=row.base_sha256,
        reason=row.reason,
        proposed_by=row.proposed_by,
        organization_id=row.organization_id,
        proposed_at=row.proposed_at,
        state=ProposalState(row.state),
        restores_id=row.restores_id,
        restores_version=row.restores_version,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_note=row.decision_note,
        applied_version=row.applied_version,
    )


class SqlPolicyProposalRepository(Repository):
    async def add(self, proposal: NewPolicyProposal, *, at: datetime) -> PolicyProposal:
        row = (
            await self.session.execute(
                insert(proposals_t)
                .values(
                    file=proposal.file,
                    content=proposal.content,
                    content_sha256=sha256_of(proposal.content),
                    base_content=proposal.base_content,
                    base_sha256=sha256_of(proposal.base_content),
                    reason=proposal.reason,
                    proposed_by=proposal.proposed_by,
                    organization_id=proposal.organization_id,
                    proposed_at=at,
                    state=ProposalState.PROPOSED.value,
                    restores_id=proposal.restores_id,
                    restores_version=proposal.restores_version,
                )
                .returning(proposals_t)
            )
        ).one()
        return _proposal(row)

    async def get(self, proposal_id: int) -> PolicyProposal | None:
        row = (
            await self.session.execute(select(proposals_t).where(proposals_t.c.id == proposal_id))
        ).one_or_none()
        return None if row is None else _proposal(row)

    async def list(
        self, *, state: ProposalState | None, file: str | None, before: int | None, limit: int
    ) -> Page[PolicyProposal]:
        p = proposals_t.c
        query = select(proposals_t)
        if state is not None:
            query = query.where(p.state == state.value)
        if file is not None:
            query = query.where(p.file == file)
        if before is not None:
            query = query.where(p.id < before)
        rows = (await self.session.execute(query.order_by(p.id.desc()).limit(limit + 1))).all()
        return page([_proposal(r) for r in rows], limit, lambda x: x.id)

    async def history(self, file: str, limit: int) -> tuple[PolicyProposal, ...]:
        p = proposals_t.c
        query = (
            select(proposals_t)
            .where(p.file == file, p.state == ProposalState.APPLIED.value)
            .order_by(p.decided_at.desc(), p.id.desc())
            .limit(limit)
        )
        return tuple(_proposal(r) for r in (await self.session.execute(query)).all())

    async def lock_files(self) -> None:
        await self.session.execute(APPLY_LOCK)

    async def decide(
        self,
        proposal_id: int,
        state: ProposalState,
        *,
        by: int,
        at: datetime,
        note: str | None,
        applied_version: str | None = None,
    ) -> bool:
        p = proposals_t.c
        done = await self.session.execute(
            update(proposals_t)
            .where(p.id == proposal_id, p.state == ProposalState.PROPOSED.value)
            .values(
                state=state.value,
                decided_by=by,
                decided_at=at,
                decision_note=note,
                applied_version=applied_version,
            )
            .returning(p.id)
        )
        return done.scalar_one_or_none() is not None

    async def supersede(
        self, file: str, *, applied: PolicyProposal, by: int, at: datetime
    ) -> tuple[int, ...]:
        p = proposals_t.c
        done = await self.session.execute(
            update(proposals_t)
            .where(
                p.file == file,
                p.state == ProposalState.PROPOSED.value,
                p.id != applied.id,
                p.base_sha256 != applied.content_sha256,
            )
            .values(
                state=ProposalState.SUPERSEDED.value,
                decided_by=by,
                decided_at=at,
                decision_note=func.concat("superseded by proposal ", applied.id),
            )
            .returning(p.id)
        )
        return tuple(sorted(done.scalars().all()))
