"""The console's four-eyes policy changes: propose an edit of a policy file, a second compliance
officer approves or rejects it, the history of applied versions with "propose restoring this
version". Each page and button is a workflow of engine/workflows/policy_changes.py; nothing here
decides anything.

The routes are built by :func:`routes` with the console's page wrapper and renderer (passed in, so
this module does not import the package that imports it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import Actor
from engine.workflows import policy_changes as changes
from handlers.keys import policy_files_key
from handlers.requests import record_id, services

Render = Callable[[web.Request, str, dict[str, Any], int], web.Response]
Page = Callable[[Callable[[web.Request, Actor], Awaitable[web.StreamResponse]]], Any]
Base = Callable[[web.Request], dict[str, Any]]

PAGE_SIZE = 25


def _id(raw: str, what: str) -> int:
    found = record_id(raw)
    if found is None:
        raise NotFound(what)
    return found


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _upload(form: Any) -> str | None:
    """The text of an uploaded file, if one was chosen (it replaces the textarea's content)."""
    upload = form.get("upload")
    if upload is None or isinstance(upload, str) or not getattr(upload, "filename", ""):
        return None
    raw = upload.file.read(changes.MAX_CONTENT * 4 + 1)
    try:
        return str(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return changes.NOT_TEXT  # refused by the workflow: not a policy file's text


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """Each line of a unified diff with its kind, for the page to mark (added, removed, hunk)."""
    kinds = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        kinds.append((kind, line))
    return kinds


def routes(page: Page, render: Render, base: Base, prefix: str) -> list[tuple[str, str, Any, str]]:
    """The console's routes of this page family: (method, path, handler, name)."""
    root = f"{prefix}/policy/changes"

    async def listing_context(
        request: web.Request, actor: Actor, file: str | None, form: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        cursor = request.query.get("cursor", "")
        before = _id(cursor, "page") if cursor else None
        found = await changes.list_policy_changes(
            services(request), actor, request.app[policy_files_key], file=file, before=before, limit=PAGE_SIZE
        )
        next_url = None
        if found.proposals.next_cursor is not None:
            next_url = f"{root}?{urlencode({'file': found.file, 'cursor': found.proposals.next_cursor})}"
        proposal = form or {"content": found.current, "reason": "", "errors": {}, "problems": []}
        return {
            "title": "Policy changes (four eyes)",
            "changes": found,
            "next_url": next_url,
            "form": proposal,
            "root": root,
            "done": request.query.get("done"),
            **base(request),
        }

    async def list_page(request: web.Request, actor: Actor) -> web.StreamResponse:
        context = await listing_context(request, actor, request.query.get("file"))
        return render(request, "policy_changes.html", context, 200)

    async def propose(request: web.Request, actor: Actor) -> web.StreamResponse:
        form = await request.post()
        file, reason = _field(form, "file"), _field(form, "reason")
        content = _upload(form)
        content = _field(form, "content") if content is None else content
        try:
            proposal = await changes.propose_policy_change(
                services(request),
                actor,
                request.app[policy_files_key],
                changes.ProposePolicyChange(file, content, reason),
            )
        except InvalidInput as invalid:
            errors: dict[str, str] = {}
            problems = [e.message for e in invalid.errors if e.type == "policy_rejected"]
            for error in invalid.errors:
                if error.type != "policy_rejected":
                    errors.setdefault(error.field, error.message)
            state = {"content": content, "reason": reason, "errors": errors, "problems": problems}
            context = await listing_context(request, actor, file, state)
            return render(request, "policy_changes.html", context, 422)
        raise web.HTTPSeeOther(f"{root}/{proposal.id}?done=proposed")

    async def proposal_context(
        request: web.Request, actor: Actor, message: str | None = None, error: str | None = None
    ) -> dict[str, Any]:
        proposal_id = _id(request.match_info["proposal_id"], "policy_proposal")
        view = await changes.read_policy_change(
            services(request), actor, request.app[policy_files_key], proposal_id
        )
        done = request.query.get("done")
        return {
            "title": f"Policy change {view.proposal.id}",
            "view": view,
            "p": view.proposal,
            "lines": diff_lines(view.diff),
            "own": view.proposal.proposed_by == actor.user_id,
            "message": message or DONE.get(done or ""),
            "error": error,
            "root": root,
            **base(request),
        }

    async def proposal_page(request: web.Request, actor: Actor) -> web.StreamResponse:
        return render(request, "policy_change.html", await proposal_context(request, actor), 200)

    def decision(
        act: Callable[[web.Request, Actor, changes.DecidePolicyChange], Awaitable[object]], done: str
    ) -> Callable[[web.Request, Actor], Awaitable[web.StreamResponse]]:
        async def decide(request: web.Request, actor: Actor) -> web.StreamResponse:
            proposal_id = _id(request.match_info["proposal_id"], "policy_proposal")
            form = await request.post()
            cmd = changes.DecidePolicyChange(proposal_id, _field(form, "note"))
            try:
                await act(request, actor, cmd)
            except Forbidden as refused:
                if refused.decision.reason == "role_not_permitted":
                    raise
                # The proposer, or someone else withdrawing: say why on the proposal's own page.
                context = await proposal_context(request, actor, error=refused.decision.hint)
                return render(request, "policy_change.html", context, 403)
            except (Conflict, InvalidInput) as error:
                text = str(error)
                if isinstance(error, InvalidInput):
                    text = "; ".join(e.message for e in error.errors) or str(error)
                status = 409 if isinstance(error, Conflict) else 422
                context = await proposal_context(request, actor, error=text)
                return render(request, "policy_change.html", context, status)
            raise web.HTTPSeeOther(f"{root}/{proposal_id}?done={done}")

        return decide

    async def approve(request: web.Request, actor: Actor, cmd: changes.DecidePolicyChange) -> object:
        return await changes.approve_policy_change(
            services(request), actor, request.app[policy_files_key], cmd
        )

    async def reject(request: web.Request, actor: Actor, cmd: changes.DecidePolicyChange) -> object:
        return await changes.reject_policy_change(services(request), actor, cmd)

    async def withdraw(request: web.Request, actor: Actor, cmd: changes.DecidePolicyChange) -> object:
        return await changes.withdraw_policy_change(services(request), actor, cmd)

    async def restore(request: web.Request, actor: Actor) -> web.StreamResponse:
        """Propose restoring a version from a file's history: to the new proposal's page, or the
        history again with the error next to that version's reason."""
        source = _id(request.match_info["proposal_id"], "policy_version")
        form = await request.post()
        version, reason = _field(form, "version"), _field(form, "reason")
        try:
            proposal = await changes.restore_policy_version(
                services(request),
                actor,
                request.app[policy_files_key],
                changes.RestorePolicyVersion(source, version, reason),
            )
        except InvalidInput as invalid:
            context = await listing_context(request, actor, _field(form, "file") or None)
            context["restore_errors"] = {(source, version): "; ".join(e.message for e in invalid.errors)}
            return render(request, "policy_changes.html", context, 422)
        raise web.HTTPSeeOther(f"{root}/{proposal.id}?done=proposed")

    return [
        ("GET", root, page(list_page), "console-policy-changes"),
        ("POST", root, page(propose), "console-policy-propose"),
        ("GET", f"{root}/{{proposal_id}}", page(proposal_page), "console-policy-change"),
        (
            "POST",
            f"{root}/{{proposal_id}}/approve",
            page(decision(approve, "approved")),
            "console-policy-approve",
        ),
        (
            "POST",
            f"{root}/{{proposal_id}}/reject",
            page(decision(reject, "rejected")),
            "console-policy-reject",
        ),
        (
            "POST",
            f"{root}/{{proposal_id}}/withdraw",
            page(decision(withdraw, "withdrawn")),
            "console-policy-withdraw",
        ),
        ("POST", f"{root}/{{proposal_id}}/restore", page(restore), "console-policy-restore"),
    ]


DONE = {
    "proposed": "The change was proposed. A second compliance officer must approve it before it applies.",
    "approved": "The change was approved and applied: the file was written and the policy reloaded.",
    "rejected": "The change was rejected.",
    "withdrawn": "The change was withdrawn.",
}
