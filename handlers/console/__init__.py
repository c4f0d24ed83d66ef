"""The web console at /console/: server-rendered pages for compliance officers and auditors.

Same engine, same decisions, same audit trail as the API: signing in is the login workflow (and its
throttle), then ``console.sign_in``; each page calls one engine workflow (``console.policy.read``,
the API's ``audit.read`` search). The session lives in a signed cookie over the login's access token
(``handlers/console/session.py``); every POST form carries a CSRF token. Pages are Jinja2 templates
with autoescaping (``handlers/console/templates``) and one stylesheet; no script.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from engine.errors import Forbidden, InvalidInput, NotFound, TooManyRequests, Unauthenticated
from engine.model import Actor
from engine.workflows import accounts, console, identity
from handlers.console import audit_page, break_glass_page, consents_page, disclosures_page
from handlers.console.session import CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE, SessionCodec
from handlers.console.words import facts_explained, policy_in_words
from handlers.keys import (
    accounts_key,
    clock_key,
    console_actor_key,
    console_codec_key,
    console_csrf_key,
    request_id_key,
    services_key,
    settings_key,
)
from handlers.requests import services

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
            source_address=request.remote,
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
            form = await request.post()
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
        if response.status < 300:
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
    svc = services(request)
    try:
        session = await identity.login(
            svc, email, password, request_id=request[request_id_key], source_address=request.remote
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
        source_address=request.remote,
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


async def home(request: web.Request, actor: Actor) -> web.StreamResponse:
    policy = request.app[services_key].policy.current
    pages = [
        (f"{PREFIX}/policy", "The policy in words", policy.role_may(actor.role.value, "console.policy.read")),
        (f"{PREFIX}/audit", "Audit search", policy.role_may(actor.role.value, "audit.read")),
        (
            f"{PREFIX}/break-glass",
            "Break-glass review",
            policy.role_may(actor.role.value, "break_glass.list"),
        ),
        (
            f"{PREFIX}/disclosures",
            "A patient's accounting of disclosures",
            policy.role_may(actor.role.value, "patient.disclosures"),
        ),
        (f"{PREFIX}/consents", "Consents", policy.role_may(actor.role.value, "consent.list")),
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
    ("GET", f"{PREFIX}/audit", page(audit), "console-audit"),
    ("GET", f"{PREFIX}/break-glass", page(break_glass_list), "console-emergencies"),
    ("GET", f"{PREFIX}/break-glass/{{session_id}}", page(break_glass_session), "console-emergency"),
    ("POST", f"{PREFIX}/break-glass/{{session_id}}/review", page(break_glass_review), "console-reviewed"),
    ("GET", f"{PREFIX}/disclosures", page(disclosures), "console-disclosures"),
    ("GET", f"{PREFIX}/consents", page(consents_list), "console-consents"),
    ("POST", f"{PREFIX}/consents", page(consent_record), "console-consent-record"),
    ("POST", f"{PREFIX}/consents/{{consent_id}}/revoke", page(consent_revoke), "console-consent-revoke"),
    ("GET", f"{PREFIX}/console.css", stylesheet, "console-stylesheet"),
]
PATHS = frozenset(path for _, path, _, _ in ROUTES)


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
