"""The hash chain in the console: its status and anchors, verifying it, signing an anchor.

The chain is one for the whole trail (every organization's records, in one total order), so these
workflows decide with no facts (rules ``any``): what they show is counts, positions and hashes,
never a record's content; a problem is named by record id and chain position, as ``caremsg audit
verify`` names it. Each action is decided and audited like any API call:

- ``audit.chain.read``: the status page, a verification run's progress, an anchor's download;
- ``audit.verify``: start a verification (one at a time per instance); its result is audited too,
  as ``audit.chain_verified`` with the run's id, so it outlives the instance that ran it;
- ``audit.anchor``: seal, sign the head with the service's key and store the anchor.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from engine.audit import AuditEvent, DetailValue
from engine.audit_trail import Anchor, ChainStatus, VerificationRun
from engine.errors import NotFound
from engine.model import Actor
from engine.ports.audit import AuditChain
from engine.ports.units import Transaction
from engine.services import Guard, Services

#: The newest anchors the status page lists.
ANCHORS_SHOWN = 10


def _unit_of_work(services: Services) -> Transaction:
    """This family's view of the unit of work: it records decisions only (the chain is a port)."""
    return services.uow()


async def _decide(
    services: Services,
    actor: Actor,
    workflow: str,
    resource_id: object | None = None,
    details: Mapping[str, DetailValue] | None = None,
) -> None:
    async with _unit_of_work(services) as uow:
        Guard(services, uow, actor).require(
            workflow, resource_type="audit_chain", resource_id=resource_id, details=details
        )
        await uow.commit()


async def chain_status(services: Services, actor: Actor, chain: AuditChain) -> ChainStatus:
    """The head, the unsealed count and the newest anchors; decided as ``audit.chain.read``."""
    await _decide(services, actor, "audit.chain.read")
    return await chain.status(ANCHORS_SHOWN)


async def read_verification(
    services: Services, actor: Actor, chain: AuditChain, run_id: str
) -> VerificationRun:
    """A verification run's progress or result; decided as ``audit.chain.read``. A run this
    instance does not know (another instance's, or one too old to keep) raises NotFound."""
    await _decide(services, actor, "audit.chain.read", resource_id=run_id)
    run = chain.verification(run_id)
    if run is None:
        raise NotFound("verification")
    return run


async def start_verification(services: Services, actor: Actor, chain: AuditChain) -> VerificationRun:
    """Start verifying the whole chain in the background, or join the run already going on this
    instance; decided as ``audit.verify`` (the record names the run). The run's result is recorded
    as ``audit.chain_verified`` when it ends."""
    running = chain.running()
    run_id = running.id if running is not None else secrets.token_hex(8)
    await _decide(
        services, actor, "audit.verify", resource_id=run_id, details={"joined": running is not None}
    )
    if running is not None:
        return running

    async def finished(run: VerificationRun) -> None:
        await record_verification(services, actor, run)

    return chain.start_verification(run_id, actor.user_id, finished)


async def record_verification(services: Services, actor: Actor, run: VerificationRun) -> None:
    """Audit what a verification found: outcome ``success`` for a sound chain, ``failure`` for a
    problem (named by its kind, record id and seq) or a run that could not finish."""
    report = run.report
    details: dict[str, DetailValue] = {"run_id": run.id, "checked": run.checked, "state": run.state}
    if report is not None:
        details.update(head_seq=report.head.seq, unsealed=report.unsealed)
        if report.problem is not None:
            details.update(
                problem=report.problem.kind,
                problem_event_id=report.problem.event_id,
                problem_seq=report.problem.seq,
            )
    async with _unit_of_work(services) as uow:
        uow.audit.record(
            AuditEvent.by(
                actor,
                event="audit.chain_verified",
                workflow="audit.verify",
                outcome="success" if run.state == "ok" else "failure",
                occurred_at=run.finished_at or services.clock(),
                resource_type="audit_chain",
                resource_id=run.id,
                reason=None if report is None or report.problem is None else f"chain_{report.problem.kind}",
                details=details,
            )
        )
        await uow.commit()


async def create_anchor(services: Services, actor: Actor, chain: AuditChain) -> Anchor:
    """Seal what is committed, sign the chain head and keep the anchor; decided as
    ``audit.anchor``, the record naming the anchor and the seq it covers."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("audit.anchor", resource_type="audit_chain")
        anchor = await chain.create_anchor(services.clock())
        guard.identify(resource_id=anchor.id)
        guard.annotate(seq=anchor.seq, event_id=anchor.event_id, key_id=anchor.key_id)
        await uow.commit()
    return anchor


async def anchor_document(
    services: Services, actor: Actor, chain: AuditChain, anchor_id: int
) -> Mapping[str, object]:
    """A stored anchor as ``caremsg audit anchor`` prints it, for download; decided as
    ``audit.chain.read``."""
    await _decide(services, actor, "audit.chain.read", resource_id=anchor_id)
    document = await chain.anchor_document(anchor_id)
    if document is None:
        raise NotFound("anchor")
    return document
