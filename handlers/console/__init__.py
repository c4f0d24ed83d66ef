"""The web console at /console/: server-rendered pages for compliance officers and auditors.

Same engine, same decisions, same audit trail as the API: signing in is the login workflow (and its
throttle), then ``console.sign_in``; each page calls one engine workflow (``console.policy.read``,
the API's ``audit.read`` search). The session lives in a signed cookie over the login's access token
(``handlers/console/session.py``); every POST form carries a CSRF token. Pages are Jinja2 templates
with autoescaping (``handlers/console/templates``) and one stylesheet; no script.

Longer than 400 lines because every route of the console is here with the one wrapper each page
passes through (session, CSRF, the engine's refusals as pages) and the thin handler of each page; what
each page does lives in a module of its own (``audit_page``, ``chain_page``, ``charts_page``,
``consents_page``, ``groups_page``, ``legal_holds_page``, ``legal_record_page``, ``policy_pages``,
``policy_changes_page`` ...).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from pydantic import ValidationError

from engine.errors import Forbidden, InvalidInput, NotFound, TooManyRequests, Unauthenticated
from engine.model import Actor
from engine.workflows import accounts, console, identity
from handlers.console import (
    audit_page,
    break_glass_page,
    chain_page,
    charts_page,
    consents_page,
    disclosures_page,
    groups_page,
    legal_holds_page,
    legal_record_page,
    policy_changes_page,
    policy_pages,
)
from handlers.console.session import CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE, SessionCodec
from handlers.console.words import facts_explained, policy_in_words
from handlers.keys import (
    accounts_key,
    audit_chain_key,
    clock_key,
    console_actor_key,
    console_codec_key,
    console_csrf_key,
    request_id_key,
    services_key,
    settings_key,
)
from handlers.middleware import SECURITY_HEADERS, SERVER_NAME
from handlers.proxies import client_address
from handlers.requests import services
from handlers.schemas.identity import LoginRequest

PREFIX = "/console"
#: The console's own Content-Security-Policy: its stylesheet, its forms, nothing else.
CONSOLE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
ConsolePage = Callable[[web.Request, Actor], Awaitable[web.StreamResponse]]


def _now(request: web.Request) -> float:
    """Now on the app's clock, in seconds (a session's idle time is measured on it)."""
    return request.app[clock_key]().timestamp()


def cookie_flags(environment: str) -> dict[str, Any]:
    """The flags of every console cookie: never readable by script, never sent cross-site, and
    Secure (HTTPS only) everywhere but development, which serves plain HTTP on loopback."""
    return {"httponly": True, "samesite": "Strict", "secure": environment != "development"}


def _render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Content-Security-Policy"] = CONSOLE_CSP
    return response


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, path: str) -> None:
    flags = cookie_flags(request.app[settings_key].service.environment)
    response.set_cookie(name, value, path=path, **flags)


async def _session_actor(request: web.Request) -> tuple[Actor, str] | None:
    """The signed-in actor and their access token, or None (no, forged, idle, expired or ended session)."""
    codec = request.app[console_codec_key]
    now = _now(request)
    opened = codec.open(request.cookies.get(SESSION_COOKIE), now)
    if opened is None:
        return None
    try:
        actor = services(request).tokens.verify(opened.token)
    except Unauthenticated:
        return None
    if actor.issued_at is None or now - actor.issued_at > codec.absolute_seconds:
        return None
    if not await request.app[accounts_key].current(actor):
        return None
    return (
        Actor(
            user_id=actor.user_id,
            role=actor.role,
            organization_id=actor.organization_id,
            request_id=request[request_id_key],
            source_address=client_address(request),
            issued_at=actor.issued_at,
        ),
        opened.token,
    )


def page(handler: ConsolePage) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A console page: signed in (else to the sign-in page), CSRF-checked on POST, the session's idle
    clock restarted, and the engine's refusals shown as pages rather than problem+json."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        found = await _session_actor(request)
        if found is None:
            expired = web.HTTPSeeOther(f"{PREFIX}/login")
            expired.del_cookie(SESSION_COOKIE, path=f"{PREFIX}/")
            raise expired
        actor, token = found
        codec = request.app[console_codec_key]
        request[console_csrf_key] = codec.csrf_for(token)
        request[console_actor_key] = actor
        if request.method == "POST":
            try:
                form = await request.post()
            except web.HTTPRequestEntityTooLarge:
                # Nothing was read or done; say what the limit is rather than answer problem+json.
                context = _refusal_context(request, "too_large")
                context["limit_kib"] = request.app[settings_key].api.max_body_bytes // 1024
                return _render(request, "error.html", context, 413)
            submitted = form.get(CSRF_FIELD)
            if not codec.csrf_ok(token, submitted if isinstance(submitted, str) else None):
                return _render(request, "error.html", _refusal_context(request, "csrf"), 403)
        try:
            response = await handler(request, actor)
        except Forbidden as error:
            reason = error.decision.reason or "forbidden"
            return _render(request, "error.html", _refusal_context(request, reason), 403)
        except NotFound:
            return _render(request, "error.html", _refusal_context(request, "not_found"), 404)
        if response.status < 300 and not response.prepared:  # a streamed download: headers are sent
            _set_cookie(request, response, SESSION_COOKIE, codec.seal(token, _now(request)), f"{PREFIX}/")
        return response

    return wrapped


def _refusal_context(request: web.Request, reason: str) -> dict[str, Any]:
    return {"title": "Not allowed", "reason": reason, **base_context(request)}


def base_context(request: web.Request) -> dict[str, Any]:
    actor: Actor | None = request.get(console_actor_key)
    return {
        "actor": actor,
        "csrf_field": CSRF_FIELD,
        "csrf_token": request.get(console_csrf_key, ""),
        "prefix": PREFIX,
    }


# --- sign-in and sign-out --------------------------------------------------------------------------


async def login_form(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    codec = request.app[console_codec_key]
    nonce = request.cookies.get(LOGIN_COOKIE) or codec.new_nonce()
    context = {
        "title": "Sign in",
        "error": error,
        "login_csrf": codec.csrf_for(nonce),
        **base_context(request),
    }
    response = _render(request, "login.html", context, status)
    _set_cookie(request, response, LOGIN_COOKIE, nonce, f"{PREFIX}/login")
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    if await _session_actor(request) is not None:
        raise web.HTTPSeeOther(f"{PREFIX}/")
    return await login_form(request)


async def login(request: web.Request) -> web.StreamResponse:
    codec = request.app[console_codec_key]
    form = await request.post()
    submitted = form.get(CSRF_FIELD)
    if not codec.csrf_ok(
        request.cookies.get(LOGIN_COOKIE), submitted if isinstance(submitted, str) else None
    ):
        return await login_form(request, error="The form expired; please sign in again.", status=403)
    email, password = form.get("email"), form.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        return await login_form(request, error="Enter your email and password.", status=422)
    try:  # read as the API reads them: an email with a NUL in it never reaches the database
        credentials = LoginRequest.model_validate({"email": email, "password": password})
    except ValidationError:
        return await login_form(request, error="Enter a valid email address and password.", status=422)
    svc = services(request)
    try:
        session = await identity.login(
            svc,
            credentials.email,
            credentials.password,
            request_id=request[request_id_key],
            source_address=client_address(request),
        )
    except TooManyRequests:
        return await login_form(request, error="Too many attempts; wait a moment and try again.", status=429)
    except Forbidden:
        return await login_form(request, error="This account awaits an administrator's approval.", status=403)
    except (Unauthenticated, InvalidInput):
        return await login_form(request, error="Email or password is not correct.", status=401)
    verified = svc.tokens.verify(session.token.token)
    actor = Actor(
        user_id=verified.user_id,
        role=verified.role,
        organization_id=verified.organization_id,
        request_id=request[request_id_key],
        source_address=client_address(request),
        issued_at=verified.issued_at,
    )
    try:
        await console.enter_console(svc, actor)
    except Forbidden:
        return await login_form(
            request, error="The console is for compliance officers and auditors.", status=403
        )
    response = web.HTTPSeeOther(f"{PREFIX}/")
    sealed = codec.seal(session.token.token, _now(request))
    _set_cookie(request, response, SESSION_COOKIE, sealed, f"{PREFIX}/")
    response.del_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
    raise response


async def logout(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Sign out: the account's sessions end on the server (``auth.logout``), the cookie goes."""
    await accounts.logout(services(request), actor)
    response = web.HTTPSeeOther(f"{PREFIX}/login")
    response.del_cookie(SESSION_COOKIE, path=f"{PREFIX}/")
    raise response


# --- pages -----------------------------------------------------------------------------------------


#: The home page's links: (path under the console, title, the workflow that decides who sees it).
#: A link shows to a role the policy lets run that workflow; the page itself decides again.
HOME_PAGES = (
    ("/policy", "The policy in words", "console.policy.read"),
    ("/policy/tests", "The policy's test tables", "console.policy.tests"),
    ("/policy/what-if", "What if: try an edited policy file", "console.policy.what_if"),
    ("/audit", "Audit search", "audit.read"),
    ("/audit/chain", "The audit chain: verify, anchors", "audit.chain.read"),
    ("/break-glass", "Break-glass review", "break_glass.list"),
    ("/disclosures", "A patient's accounting of disclosures", "patient.disclosures"),
    ("/consents", "Consents", "consent.list"),
    ("/policy/changes", "Policy changes (four eyes)", "policy.change.list"),
    ("/audit/charts", "The audit trail in charts", "audit.read"),
    ("/legal-holds", "Legal holds, and the legal record of a recalled message", "legal_hold.list"),
)


async def home(request: web.Request, actor: Actor) -> web.StreamResponse:
    policy = request.app[services_key].policy.current
    pages = [
        (f"{PREFIX}{path}", title, policy.role_may(actor.role.value, workflow))
        for path, title, workflow in HOME_PAGES
    ]
    return _render(request, "home.html", {"title": "Console", "pages": pages, **base_context(request)})


async def policy_page(request: web.Request, actor: Actor) -> web.StreamResponse:
    policy = await console.read_policy_in_words(services(request), actor)
    context = {
        "title": "The policy in words",
        "version": policy.version,
        "workflows": policy_in_words(policy),
        "facts": facts_explained(policy),
        **base_context(request),
    }
    return _render(request, "policy.html", context)


async def policy_tests(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await policy_pages.tests_context(request, actor)
    return _render(
        request,
        "policy_tests.html",
        {"title": "The policy's test tables", **context, **base_context(request)},
    )


async def what_if_form(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await policy_pages.form_context(request, actor)
    return _render(request, "what_if.html", {"title": "What if", **context, **base_context(request)})


async def what_if(request: web.Request, actor: Actor) -> web.StreamResponse:
    """A what-if's report on the page that asked for it (nothing is stored, so nothing to redirect to)."""
    status, context = await policy_pages.try_edit(request, actor)
    return _render(request, "what_if.html", {"title": "What if", **context, **base_context(request)}, status)


async def audit(request: web.Request, actor: Actor) -> web.StreamResponse:
    try:
        context = await audit_page.search(request, actor)
        status = 200
    except InvalidInput as error:
        context = audit_page.form_context(request, error)
        status = 422
    return _render(
        request, "audit.html", {"title": "Audit search", **context, **base_context(request)}, status
    )


async def audit_record(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await audit_page.record_context(request, actor)
    title = f"Audit record {context['record'].id}"
    return _render(request, "audit_record.html", {"title": title, **context, **base_context(request)})


async def audit_export(request: web.Request, actor: Actor) -> web.StreamResponse:
    """The search's records as a streamed download; bad filters show the search form again."""
    try:
        return await audit_page.export(
            request, actor, request.app[audit_chain_key], {**SECURITY_HEADERS, "Server": SERVER_NAME}
        )
    except InvalidInput as error:
        context = audit_page.form_context(request, error)
        return _render(
            request, "audit.html", {"title": "Audit search", **context, **base_context(request)}, 422
        )


async def audit_chain(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await chain_page.status_context(request, actor, request.app[audit_chain_key])
    return _render(request, "chain.html", {"title": "The audit chain", **context, **base_context(request)})


async def audit_verify(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Start a verification (or join the one running): to its page, which follows its progress."""
    run = await chain_page.start(request, actor, request.app[audit_chain_key])
    raise web.HTTPSeeOther(f"{PREFIX}/audit/chain/runs/{run.id}")


async def audit_verification(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await chain_page.run_context(request, actor, request.app[audit_chain_key])
    return _render(
        request, "chain_run.html", {"title": "Verifying the audit chain", **context, **base_context(request)}
    )


async def audit_anchor(request: web.Request, actor: Actor) -> web.StreamResponse:
    anchor_id = await chain_page.create_anchor(request, actor, request.app[audit_chain_key])
    raise web.HTTPSeeOther(f"{PREFIX}/audit/chain?anchored={anchor_id}")


async def audit_anchor_download(request: web.Request, actor: Actor) -> web.StreamResponse:
    return await chain_page.anchor_download(request, actor, request.app[audit_chain_key])


async def audit_charts(request: web.Request, actor: Actor) -> web.StreamResponse:
    status, context = await charts_page.charts(request, actor)
    return _render(
        request,
        "charts.html",
        {"title": "The audit trail in charts", **context, **base_context(request)},
        status,
    )


async def break_glass_list(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await break_glass_page.list_context(request, actor)
    return _render(
        request, "break_glass.html", {"title": "Break-glass review", **context, **base_context(request)}
    )


async def break_glass_session(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await break_glass_page.detail_context(request, actor, PREFIX)
    return _render(
        request,
        "break_glass_session.html",
        {"title": f"Break-glass session {context['session'].id}", **context, **base_context(request)},
    )


async def break_glass_review(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Mark reviewed: back to the session's page (POST-redirect-GET), or the form again with the
    error next to the note."""
    status, note, error = await break_glass_page.review(request, actor)
    if error is None:
        raise web.HTTPSeeOther(f"{PREFIX}/break-glass/{break_glass_page.session_id(request)}?reviewed=1")
    context = await break_glass_page.detail_context(request, actor, PREFIX, note=note, error=error)
    return _render(
        request,
        "break_glass_session.html",
        {"title": f"Break-glass session {context['session'].id}", **context, **base_context(request)},
        status,
    )


async def disclosures(request: web.Request, actor: Actor) -> web.StreamResponse:
    status, context = await disclosures_page.accounting(request, actor)
    return _render(
        request,
        "disclosures.html",
        {"title": "Accounting of disclosures", **context, **base_context(request)},
        status,
    )


def _consents_page(request: web.Request, context: dict[str, Any], status: int) -> web.Response:
    return _render(
        request, "consents.html", {"title": "Consents", **context, **base_context(request)}, status
    )


async def consents_list(request: web.Request, actor: Actor) -> web.StreamResponse:
    status, context = await consents_page.listing(request, actor, request.query.get("patientId"))
    if request.query.get("done") in {"recorded", "revoked"}:
        context["message"] = f"The consent was {request.query['done']}."
    return _consents_page(request, context, status)


async def consent_record(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Record a consent: back to the patient's consents (POST-redirect-GET), or the form again with
    each error next to its field."""
    try:
        patient_id, status, state = await consents_page.record(request, actor)
    except InvalidInput:
        _, context = await consents_page.listing(request, actor, None)
        context["patient_error"] = "Search for the patient first."
        return _consents_page(request, context, 422)
    if status == 303:
        raise web.HTTPSeeOther(f"{PREFIX}/consents?patientId={patient_id}&done=recorded")
    _, context = await consents_page.listing(request, actor, str(patient_id))
    context["record"] = state
    return _consents_page(request, context, status)


async def consent_revoke(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Revoke a consent with a reason: back to the patient's consents, or the list again with the
    error next to that consent's reason."""
    try:
        consent_id, status, error = await consents_page.revoke(request, actor)
    except InvalidInput as invalid:
        raise NotFound("consent") from invalid
    form = await request.post()
    patient_raw = form.get("patientId")
    patient = patient_raw if isinstance(patient_raw, str) and patient_raw.isascii() else None
    if error is None:
        where = f"patientId={patient}&" if patient and patient.isdigit() else ""
        raise web.HTTPSeeOther(f"{PREFIX}/consents?{where}done=revoked")
    _, context = await consents_page.listing(request, actor, patient)
    context["revoke_errors"] = {consent_id: error}
    return _consents_page(request, context, status)


def _groups_page(request: web.Request, context: dict[str, Any], status: int) -> web.Response:
    return _render(
        request,
        "compliance_groups.html",
        {"title": "Compliance groups", **context, **base_context(request)},
        status,
    )


async def groups_list(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await groups_page.listing(request, actor)
    if request.query.get("done") in {"created", "shared"}:
        context["message"] = f"The group was {request.query['done']}."
    return _groups_page(request, context, 200)


async def group_create(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Create a group: back to the list (POST-redirect-GET), or the form again with each error next
    to its field and what was typed kept."""
    status, state = await groups_page.create(request, actor)
    if status == 303:
        raise web.HTTPSeeOther(f"{PREFIX}/compliance-groups?done=created")
    context = await groups_page.listing(request, actor)
    context["create"] = state
    return _groups_page(request, context, status)


async def group_share(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Share a group: back to the list, or the list again with the error next to that group's choice."""
    group_id, status, error = await groups_page.share(request, actor)
    if error is None:
        raise web.HTTPSeeOther(f"{PREFIX}/compliance-groups?done=shared")
    context = await groups_page.listing(request, actor)
    context["share_errors"] = {group_id: error}
    return _groups_page(request, context, status)


def _holds_page(request: web.Request, context: dict[str, Any], status: int) -> web.Response:
    return _render(
        request, "legal_holds.html", {"title": "Legal holds", **context, **base_context(request)}, status
    )


async def holds_list(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await legal_holds_page.listing(request, actor)
    if request.query.get("done") in {"placed", "lifted"}:
        context["message"] = f"The hold was {request.query['done']}."
    return _holds_page(request, context, 200)


async def hold_place(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Place a hold: back to the list (POST-redirect-GET), or the form again with each error next
    to its field and what was typed kept."""
    status, state = await legal_holds_page.place(request, actor)
    if status == 303:
        raise web.HTTPSeeOther(f"{PREFIX}/legal-holds?done=placed")
    context = await legal_holds_page.listing(request, actor)
    context["place"] = state
    return _holds_page(request, context, status)


async def hold_lift(request: web.Request, actor: Actor) -> web.StreamResponse:
    """Lift a hold with a reason: back to the list, or the list again with the error next to that
    hold's reason."""
    hold_id, status, error = await legal_holds_page.lift(request, actor)
    if error is None:
        raise web.HTTPSeeOther(f"{PREFIX}/legal-holds?done=lifted")
    context = await legal_holds_page.listing(request, actor)
    context["lift_errors"] = {hold_id: error}
    return _holds_page(request, context, status)


async def legal_record_open(request: web.Request, actor: Actor) -> web.StreamResponse:
    """The "open a legal record" form: to the message's record, or the holds page again with the
    error next to the message id."""
    message_id, error = legal_holds_page.record_to_open(request)
    if message_id is not None:
        raise web.HTTPSeeOther(f"{PREFIX}/messages/{message_id}/legal-record")
    context = await legal_holds_page.listing(request, actor)
    context["record_value"] = request.query.get("messageId", "")
    context["record_error"] = error
    return _holds_page(request, context, 422)


async def legal_record(request: web.Request, actor: Actor) -> web.StreamResponse:
    context = await legal_record_page.record_context(request, actor)
    title = f"Legal record of message {context['record'].message_id}"
    return _render(request, "legal_record.html", {"title": title, **context, **base_context(request)})


async def legal_record_file(request: web.Request, actor: Actor) -> web.StreamResponse:
    return await legal_record_page.attachment(request, actor)


async def stylesheet(request: web.Request) -> web.Response:
    css = resources.files("handlers.console").joinpath("static/console.css").read_text()
    return web.Response(text=css, content_type="text/css")


async def to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{PREFIX}/")


#: (method, path, handler, name): every route the console serves, none of them in the API's table.
ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], str]] = [
    ("GET", PREFIX, to_console, "console-root"),
    ("GET", f"{PREFIX}/", page(home), "console-home"),
    ("GET", f"{PREFIX}/login", login_page, "console-login-form"),
    ("POST", f"{PREFIX}/login", login, "console-login"),
    ("POST", f"{PREFIX}/logout", page(logout), "console-logout"),
    ("GET", f"{PREFIX}/policy", page(policy_page), "console-policy"),
    ("GET", f"{PREFIX}/policy/tests", page(policy_tests), "console-policy-tests"),
    ("GET", f"{PREFIX}/policy/what-if", page(what_if_form), "console-whatif-form"),
    ("POST", f"{PREFIX}/policy/what-if", page(what_if), "console-whatif"),
    ("GET", f"{PREFIX}/audit", page(audit), "console-audit"),
    ("GET", f"{PREFIX}/audit/{{record_id:[0-9]+}}", page(audit_record), "console-audit-record"),
    ("GET", f"{PREFIX}/audit/export", page(audit_export), "console-audit-export"),
    ("GET", f"{PREFIX}/audit/chain", page(audit_chain), "console-audit-chain"),
    ("POST", f"{PREFIX}/audit/chain/runs", page(audit_verify), "console-audit-verify"),
    ("GET", f"{PREFIX}/audit/chain/runs/{{run_id}}", page(audit_verification), "console-audit-verification"),
    ("POST", f"{PREFIX}/audit/chain/anchors", page(audit_anchor), "console-audit-anchor"),
    (
        "GET",
        f"{PREFIX}/audit/chain/anchors/{{anchor_id}}",
        page(audit_anchor_download),
        "console-audit-anchor-download",
    ),
    ("GET", f"{PREFIX}/audit/charts", page(audit_charts), "console-audit-charts"),
    ("GET", f"{PREFIX}/break-glass", page(break_glass_list), "console-emergencies"),
    ("GET", f"{PREFIX}/break-glass/{{session_id}}", page(break_glass_session), "console-emergency"),
    ("POST", f"{PREFIX}/break-glass/{{session_id}}/review", page(break_glass_review), "console-reviewed"),
    ("GET", f"{PREFIX}/disclosures", page(disclosures), "console-disclosures"),
    ("GET", f"{PREFIX}/consents", page(consents_list), "console-consents"),
    ("POST", f"{PREFIX}/consents", page(consent_record), "console-consent-record"),
    ("POST", f"{PREFIX}/consents/{{consent_id}}/revoke", page(consent_revoke), "console-consent-revoke"),
    *policy_changes_page.routes(page, _render, base_context, PREFIX),
    ("GET", f"{PREFIX}/compliance-groups", page(groups_list), "console-groups"),
    ("POST", f"{PREFIX}/compliance-groups", page(group_create), "console-group-create"),
    ("POST", f"{PREFIX}/compliance-groups/{{group_id}}/shares", page(group_share), "console-group-share"),
    ("GET", f"{PREFIX}/legal-holds", page(holds_list), "console-legal-holds"),
    ("POST", f"{PREFIX}/legal-holds", page(hold_place), "console-legal-hold-place"),
    ("POST", f"{PREFIX}/legal-holds/{{hold_id}}/lift", page(hold_lift), "console-legal-hold-lift"),
    ("GET", f"{PREFIX}/legal-record", page(legal_record_open), "console-legal-record-open"),
    ("GET", f"{PREFIX}/messages/{{message_id}}/legal-record", page(legal_record), "console-legal-record"),
    (
        "GET",
        f"{PREFIX}/messages/{{message_id}}/legal-record/attachments/{{attachment_id}}",
        page(legal_record_file),
        "console-legal-record-file",
    ),
    ("GET", f"{PREFIX}/console.css", stylesheet, "console-stylesheet"),
]
#: The routes' canonical paths (a ``{name:regex}`` placeholder is ``{name}`` there).
PATHS = frozenset(re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path) for _, path, _, _ in ROUTES)


def setup(app: web.Application) -> None:
    """Add the console's routes and templates to ``app`` (the composition root calls this)."""
    console_settings = app[settings_key].console
    app[console_codec_key] = SessionCodec(
        app[settings_key].auth.jwt_secret,
        idle_seconds=console_settings.idle_timeout_seconds,
        absolute_seconds=console_settings.absolute_timeout_seconds,
    )
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("handlers.console", "templates"), autoescape=True)
    for method, path, handler, name in ROUTES:
        # Named "console-...": pages, not API operations, so not in the OpenAPI document.
        app.router.add_route(method, path, handler, name=name)
