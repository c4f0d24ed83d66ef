"""REST endpoints for four-eyes policy changes (engine/workflows/policy_changes.py): the console's
proposals over the API. Each handler parses, calls one workflow, and maps the result to a public
schema; the policy decides who may do what (a second compliance officer approves)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from engine.model import Actor
from engine.ports.policy import PolicyProposal, ProposalState
from engine.workflows import policy_changes as changes
from handlers.keys import policy_files_key
from handlers.requests import parse, path_id, query, respond, services
from handlers.routing import Endpoint
from handlers.schemas import ListQuery, PageOf, Request, Response

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=changes.MAX_REASON)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=changes.MAX_NOTE)]
State = Literal["proposed", "applied", "rejected", "withdrawn", "superseded"]


class PolicyProposalCreate(Request):
    file: Annotated[str, StringConstraints(max_length=200)] = Field(
        description="The policy file, relative to the policy directory: roles.csv, workflows.toml, "
        "sms.toml, model.conf, or an existing test table such as tests/default.csv."
    )
    content: Annotated[str, StringConstraints(max_length=changes.MAX_CONTENT)] = Field(
        description="The whole new content of the file (checked with policy check and policy test)."
    )
    reason: Reason = Field(description="Why the change is needed (1 to 2000 characters).")


class PolicyProposalDecision(Request):
    note: Note = Field("", description="A note (required to reject: the reason; optional otherwise).")


class PolicyVersionRestore(Request):
    version: Literal["before", "after"] = Field(
        description="Restore the file as it was before this applied change, or as the change left it."
    )
    reason: Reason = Field(description="Why the version is restored (1 to 2000 characters).")


class PolicyProposalQuery(ListQuery):
    state: State | None = Field(None, description="Only proposals in this state.")


class PolicyProposalPublic(Response):
    id: int = Field(description="The proposal's id.")
    file: str = Field(description="The policy file it changes, relative to the policy directory.")
    state: ProposalState = Field(
        description="proposed; applied (approved by someone else and written); rejected; withdrawn; "
        "superseded (another change of the file was applied first)."
    )
    reason: str = Field(description="The proposer's reason.")
    proposed_by: int = Field(description="The compliance officer who proposed it.")
    organization_id: int = Field(description="The proposer's organization.")
    proposed_at: datetime = Field(description="When it was proposed (UTC).")
    restores_id: int | None = Field(
        description="For a restore: the applied change whose version it restores."
    )
    restores_version: str | None = Field(description="For a restore: before or after that change.")
    decided_by: int | None = Field(description="Who approved, rejected or withdrew it.")
    decided_at: datetime | None = Field(description="When it was decided (UTC).")
    decision_note: str | None = Field(description="The approval note or the reason for rejecting it.")
    applied_version: str | None = Field(description="The policy version in force once it was applied.")
    base_sha256: str = Field(description="SHA-256 of the content the proposal was based on.")
    content_sha256: str = Field(description="SHA-256 of the content proposed.")

    @classmethod
    def of(cls, p: PolicyProposal) -> PolicyProposalPublic:
        return cls(
            id=p.id,
            file=p.file,
            state=p.state,
            reason=p.reason,
            proposed_by=p.proposed_by,
            organization_id=p.organization_id,
            proposed_at=p.proposed_at,
            restores_id=p.restores_id,
            restores_version=p.restores_version,
            decided_by=p.decided_by,
            decided_at=p.decided_at,
            decision_note=p.decision_note,
            applied_version=p.applied_version,
            base_sha256=p.base_sha256,
            content_sha256=p.content_sha256,
        )


class PolicyProposalDetail(PolicyProposalPublic):
    content: str = Field(description="The whole content proposed.")
    diff: str = Field(description="The change as a unified diff (a/FILE -> b/FILE).")
    stale: bool = Field(description="The live file changed since the proposal was based on it.")


async def list_proposals(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, PolicyProposalQuery)
    found = await changes.list_policy_changes(
        services(request),
        actor,
        request.app[policy_files_key],
        state=ProposalState(q.state) if q.state else None,
        before=q.cursor,
        limit=q.limit or services(request).settings.default_page_size,
    )
    page = found.proposals
    return respond(
        PageOf[PolicyProposalPublic](
            items=[PolicyProposalPublic.of(p) for p in page.items], next_cursor=page.next_cursor
        )
    )


async def propose(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, PolicyProposalCreate)
    proposal = await changes.propose_policy_change(
        services(request),
        actor,
        request.app[policy_files_key],
        changes.ProposePolicyChange(body.file, body.content, body.reason),
    )
    return respond(PolicyProposalPublic.of(proposal), 201)


async def read_proposal(request: web.Request, actor: Actor) -> web.Response:
    view = await changes.read_policy_change(
        services(request), actor, request.app[policy_files_key], path_id(request, "proposalId")
    )
    public = PolicyProposalPublic.of(view.proposal).model_dump()
    return respond(
        PolicyProposalDetail(**public, content=view.proposal.content, diff=view.diff, stale=view.stale)
    )


async def _decision(request: web.Request) -> changes.DecidePolicyChange:
    proposal_id = path_id(request, "proposalId")
    body = await parse(request, PolicyProposalDecision)
    return changes.DecidePolicyChange(proposal_id, body.note)


async def approve(request: web.Request, actor: Actor) -> web.Response:
    cmd = await _decision(request)
    applied = await changes.approve_policy_change(
        services(request), actor, request.app[policy_files_key], cmd
    )
    return respond(PolicyProposalPublic.of(applied.proposal))


async def reject(request: web.Request, actor: Actor) -> web.Response:
    cmd = await _decision(request)
    return respond(PolicyProposalPublic.of(await changes.reject_policy_change(services(request), actor, cmd)))


async def withdraw(request: web.Request, actor: Actor) -> web.Response:
    cmd = await _decision(request)
    return respond(
        PolicyProposalPublic.of(await changes.withdraw_policy_change(services(request), actor, cmd))
    )


async def restore(request: web.Request, actor: Actor) -> web.Response:
    proposal_id = path_id(request, "proposalId")
    body = await parse(request, PolicyVersionRestore)
    proposal = await changes.restore_policy_version(
        services(request),
        actor,
        request.app[policy_files_key],
        changes.RestorePolicyVersion(proposal_id, body.version, body.reason),
    )
    return respond(PolicyProposalPublic.of(proposal), 201)


PROPOSAL = "/api/policy/proposals/{proposalId}"
TAG = "policy"

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/api/policy/proposals",
        list_proposals,
        "listPolicyProposals",
        "Proposed policy changes (four eyes), newest first",
        TAG,
        response=PageOf[PolicyProposalPublic],
        query=PolicyProposalQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/policy/proposals",
        propose,
        "proposePolicyChange",
        "Propose new content for one policy file (checked and tested); applied once someone else approves",
        TAG,
        PolicyProposalCreate,
        PolicyProposalPublic,
        status=201,
        errors=(400, 401, 403, 422),
    ),
    Endpoint(
        "GET",
        PROPOSAL,
        read_proposal,
        "getPolicyProposal",
        "One proposed policy change with its content, diff and whether it is stale",
        TAG,
        response=PolicyProposalDetail,
        errors=(401, 403, 404, 422),
    ),
    Endpoint(
        "POST",
        f"{PROPOSAL}/approve",
        approve,
        "approvePolicyChange",
        "Approve someone else's proposal and apply it (409 when stale or decided; 422 when checks fail)",
        TAG,
        PolicyProposalDecision,
        PolicyProposalPublic,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Endpoint(
        "POST",
        f"{PROPOSAL}/reject",
        reject,
        "rejectPolicyChange",
        "Reject someone else's proposal, with a reason in the note",
        TAG,
        PolicyProposalDecision,
        PolicyProposalPublic,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Endpoint(
        "POST",
        f"{PROPOSAL}/withdraw",
        withdraw,
        "withdrawPolicyChange",
        "Withdraw one's own proposal",
        TAG,
        PolicyProposalDecision,
        PolicyProposalPublic,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Endpoint(
        "POST",
        f"{PROPOSAL}/restore",
        restore,
        "restorePolicyVersion",
        "Propose restoring the version of a file before (or after) an applied change; four eyes again",
        TAG,
        PolicyVersionRestore,
        PolicyProposalPublic,
        status=201,
        errors=(400, 401, 403, 404, 422),
    ),
]
