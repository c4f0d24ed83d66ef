"""The console's chain page: the hash chain's status and newest anchors (``audit.chain.read``), a
verification run started from the page (``audit.verify``) whose page refreshes itself until it is
done (``<meta http-equiv="refresh">``, no script), and signed anchors created (``audit.anchor``) and
downloaded as ``caremsg audit anchor`` prints them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from engine.audit_trail import VerificationRun
from engine.errors import NotFound
from engine.model import Actor
from engine.ports.audit import AuditChain
from engine.workflows import audit_chain
from handlers.requests import services

#: Seconds between two refreshes of a running verification's page.
REFRESH_SECONDS = 2
_ANCHOR_ID = re.compile(r"[0-9]{1,19}")
_RUN_ID = re.compile(r"[0-9a-f]{16}")


async def status_context(request: web.Request, actor: Actor, chain: AuditChain) -> dict[str, Any]:
    status = await audit_chain.chain_status(services(request), actor, chain)
    running = chain.running()
    anchored = request.query.get("anchored", "")
    return {
        "status": status,
        "running": running,
        "anchored": int(anchored) if _ANCHOR_ID.fullmatch(anchored) else None,
    }


async def start(request: web.Request, actor: Actor, chain: AuditChain) -> VerificationRun:
    return await audit_chain.start_verification(services(request), actor, chain)


def run_id(request: web.Request) -> str:
    raw = request.match_info["run_id"]
    if not _RUN_ID.fullmatch(raw):
        raise NotFound("verification")
    return raw


async def run_context(request: web.Request, actor: Actor, chain: AuditChain) -> dict[str, Any]:
    run = await audit_chain.read_verification(services(request), actor, chain, run_id(request))
    if run.total == 0:  # not counted yet, or an empty chain
        percent = 0 if run.state == "running" else 100
    else:
        percent = min(100, round(100 * run.checked / run.total))
    return {
        "run": run,
        "percent": percent,
        "refresh": REFRESH_SECONDS if run.state == "running" else None,
        "problem": run.report.problem.describe() if run.report and run.report.problem else None,
    }


async def create_anchor(request: web.Request, actor: Actor, chain: AuditChain) -> int:
    anchor = await audit_chain.create_anchor(services(request), actor, chain)
    return anchor.id


async def anchor_download(request: web.Request, actor: Actor, chain: AuditChain) -> web.Response:
    """The anchor as the JSON ``caremsg audit anchor`` prints, as an attachment."""
    raw = request.match_info["anchor_id"]
    if not _ANCHOR_ID.fullmatch(raw) or not 1 <= int(raw) <= 2**63 - 1:
        raise NotFound("anchor")
    document = await audit_chain.anchor_document(services(request), actor, chain, int(raw))
    return web.Response(
        text=json.dumps(document, indent=2) + "\n",
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="audit-anchor-{raw}.json"'},
    )
