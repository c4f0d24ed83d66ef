"""The hash chain as the running service offers it to the console: status, signed anchors, exports
and verification runs in the background (the engine's ``AuditChain`` and ``AuditRecordStream``).

Everything goes through :class:`~integrations.audit_archive.AuditArchive`, the same code
``caremsg audit verify``/``anchor``/``export`` run: there is no second verifier or signer.

A verification run is a task of this process, kept in memory by id (the newest
:data:`RUNS_KEPT`), one at a time. With several instances (``--workers N``, or several hosts) each
runs its own and knows only its own: a page asking another instance for the run answers "not
known here". Its result is audited when it ends (``audit.chain_verified``), which every instance
can find.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime

import structlog

from engine.audit_chain import Checkpoint
from engine.audit_trail import Anchor, AuditFilter, AuditRecord, ChainStatus, VerificationRun
from engine.errors import ServiceUnavailable, TooManyRequests
from integrations.audit_anchor import AnchorError, key_id, private_key, public_key_text, sign_anchor
from integrations.audit_archive import AuditArchive

log = structlog.get_logger("caremsg.audit_chain")

#: Finished runs kept for their pages, newest first out.
RUNS_KEPT = 20
#: Exports streaming at once in one process (each holds a pooled connection while its client reads).
EXPORTS_AT_ONCE = 2


def _now() -> datetime:
    return datetime.now(UTC)


class ChainKeeper:
    """The chain's status, anchors, exports and this instance's verification runs."""

    def __init__(self, archive: AuditArchive, signing_key: str, clock: Callable[[], datetime] = _now) -> None:
        self._archive = archive
        self._signing_key = signing_key
        self._clock = clock
        self._runs: OrderedDict[str, VerificationRun] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._exports = 0

    # --- status and anchors ------------------------------------------------------------------------

    async def status(self, anchors: int) -> ChainStatus:
        return await self._archive.status(anchors)

    async def anchor_document(self, anchor_id: int) -> Mapping[str, object] | None:
        found = await self._archive.anchor(anchor_id)
        if found is None:
            return None
        anchor, signature = found
        checkpoint = Checkpoint(anchor.seq, anchor.event_id, anchor.hash, anchor.signed_at, anchor.key_id)
        document: dict[str, object] = dict(checkpoint.payload())
        # The public key goes with the document as `caremsg audit anchor` prints it, when it is the
        # key in use; verifying never trusts it anyway (integrations.audit_anchor.verify_anchor).
        with contextlib.suppress(AnchorError):
            public = private_key(self._signing_key).public_key()
            if key_id(public) == anchor.key_id:
                document["publicKey"] = public_key_text(public)
        document["signature"] = signature
        return document

    async def create_anchor(self, signed_at: datetime) -> Anchor:
        try:
            key = private_key(self._signing_key)
        except AnchorError as exc:
            raise ServiceUnavailable("Signing anchors is not configured.") from exc
        # Seal first, so the anchor covers every event committed before it was asked for.
        await self._archive.seal_pending()
        head = await self._archive.head()
        document = sign_anchor(head, key, signed_at)
        anchor_id = await self._archive.store_anchor(head, document)
        return Anchor(
            anchor_id,
            head.seq,
            head.event_id,
            head.hash,
            str(document["keyId"]),
            datetime.fromisoformat(str(document["signedAt"])),
        )

    # --- exports -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def records(self, query: AuditFilter) -> AsyncIterator[AsyncIterator[AuditRecord]]:
        """The records of an export, on a connection of the service's pool held while the client
        reads (at its own pace): at most :data:`EXPORTS_AT_ONCE` at a time in this process, so
        slow downloads cannot take the connections every other request needs."""
        if self._exports >= EXPORTS_AT_ONCE:
            raise TooManyRequests("Other exports are running; try again when one ends.", retry_after=30)
        self._exports += 1
        try:
            async with self._archive.search_records(query) as records:
                yield records
        finally:
            self._exports -= 1

    # --- verification runs -------------------------------------------------------------------------

    def running(self) -> VerificationRun | None:
        if self._task is None or self._task.done():
            return None
        return next((r for r in reversed(self._runs.values()) if r.state == "running"), None)

    def verification(self, run_id: str) -> VerificationRun | None:
        return self._runs.get(run_id)

    def start_verification(
        self, run_id: str, started_by: int, on_finished: Callable[[VerificationRun], Awaitable[None]]
    ) -> VerificationRun:
        run = VerificationRun(run_id, started_by, self._clock())
        self._runs[run_id] = run
        while len(self._runs) > RUNS_KEPT:
            self._runs.popitem(last=False)
        self._task = asyncio.create_task(self._verify(run, on_finished), name=f"audit-verify-{run_id}")
        return run

    async def _verify(
        self, run: VerificationRun, on_finished: Callable[[VerificationRun], Awaitable[None]]
    ) -> None:
        def progress(checked: int) -> None:
            run.checked = checked
            run.total = max(run.total, checked)

        try:
            run.total = (await self._archive.head()).seq
            run.report = await self._archive.verify(progress)
            run.checked = run.report.checked
        except asyncio.CancelledError:
            run.error = "stopped"
            run.finished_at = self._clock()
            raise
        except Exception as exc:  # the page says the run could not finish; the log says why
            run.error = "failed"
            log.exception("audit_chain.verification_failed", run_id=run.id, error=exc.__class__.__name__)
        run.finished_at = self._clock()
        log.info("audit_chain.verified", run_id=run.id, state=run.state, checked=run.checked)
        try:
            await on_finished(run)
        except Exception as exc:
            log.exception(
                "audit_chain.verification_not_recorded", run_id=run.id, error=exc.__class__.__name__
            )

    async def close(self) -> None:
        """Stop a run still going (the service is stopping)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
