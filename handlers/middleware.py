"""Request middlewares: request id and log context, problem+json errors, bearer authentication."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler, Middleware

from engine.errors import (
    CaremsgError,
    FieldError,
    InvalidInput,
    MalformedRequest,
    ServiceUnavailable,
    TooManyRequests,
    Unauthenticated,
)
from engine.model import Purpose
from engine.ports import AccountDirectory, TokenService
from engine.sources import counted_source
from handlers.keys import actor_key, operations_key, rejections_key, request_id_key
from handlers.problems import internal_error, problem_for, problem_response, simple_problem
from handlers.proxies import Network, client_address, is_trusted_peer
from handlers.routing import Contract, Endpoint, Header, Status, declares

log = structlog.get_logger("caremsg.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")

_HTTP_CODES = {
    404: ("not_found", "Not found", "No such endpoint."),
    405: ("method_not_allowed", "Method not allowed", "This endpoint does not accept that method."),
    413: ("payload_too_large", "Payload too large", "The request body is too large."),
}


REQUEST_ID_HEADER = "X-Request-ID"
WWW_AUTHENTICATE = "WWW-Authenticate"
RETRY_AFTER = Header("Retry-After", "Seconds to wait before retrying.", {"type": "integer", "minimum": 0})
_REQUEST_ID_DOC = "Ties this request to its log lines and audit events."

REQUEST_CONTEXT = Contract(
    "request context",
    request_headers=(
        Header(
            REQUEST_ID_HEADER,
            f"{_REQUEST_ID_DOC} Optional. Kept when it is 8-64 of A-Z a-z 0-9 . _ -; any other value"
            " is replaced by one the service makes, never refused (so the schema does not constrain it).",
            {"type": "string"},
        ),
    ),
    response_headers=(
        Header(
            REQUEST_ID_HEADER,
            f"The request's id (the client's if well-formed). {_REQUEST_ID_DOC}",
            required=True,
        ),
    ),
    statuses=(
        # Answered by the connection before the request is routed (handlers/serving.py).
        Status(400, "Not well-formed HTTP (the request line, a header, or the body's framing)"),
        Status(500, "Unexpected error (no details; see the request id)"),
        Status(503, "A dependency (the database) is unavailable; retry later", (RETRY_AFTER,)),
    ),
)
CHALLENGE = Contract(
    "authentication challenge",
    applies=lambda endpoint: endpoint.security is None and (not endpoint.public or 401 in endpoint.errors),
    statuses=(
        Status(
            401,
            "Not authenticated",
            (Header(WWW_AUTHENTICATE, "`Bearer`: send an access token.", required=True),),
        ),
    ),
)
BODY_LIMIT = Contract(
    "body size limit",
    applies=lambda endpoint: endpoint.reads_body,
    statuses=(Status(413, "The body is larger than api.max_body_bytes"),),
)


def request_context(unavailable: Callable[[BaseException], bool]) -> Middleware:
    """Give every request an id (the client's X-Request-ID if well-formed), bind it to the logs, and
    turn every error into problem+json.

    ``unavailable`` says which unexpected errors mean a dependency cannot be reached right now (the
    database adapter's ``is_unavailable``): those answer 503 with Retry-After, not 500.
    """

    @web.middleware
    @declares(REQUEST_CONTEXT, CHALLENGE, BODY_LIMIT)
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _in_context(request, handler, unavailable)

    return middleware


async def _in_context(
    request: web.Request, handler: Handler, unavailable: Callable[[BaseException], bool]
) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    rid = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    request[request_id_key] = rid
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    try:
        response = await _with_problems(request, handler, rid, unavailable)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers[REQUEST_ID_HEADER] = rid
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    seconds = time.perf_counter() - started
    log.info(
        "http.request",
        request_id=rid,
        method=request.method,
        route=route,
        status=response.status,
        duration_ms=round(seconds * 1000, 2),
    )
    operations = request.app.get(operations_key)
    if operations is not None:
        operations.metrics.observe_request(route, request.method, response.status, seconds)
    return response


async def _with_problems(
    request: web.Request, handler: Handler, rid: str, unavailable: Callable[[BaseException], bool]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except CaremsgError as error:
        headers = (
            {WWW_AUTHENTICATE: error.challenge}
            if isinstance(error, Unauthenticated) and error.challenge
            else None
        )
        if isinstance(error, ServiceUnavailable):
            headers = {RETRY_AFTER.name: "2"}
            log.warning("http.dependency_unavailable", request_id=rid)
        if isinstance(error, TooManyRequests) and error.retry_after is not None:
            headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
        return problem_response(problem_for(error, rid), headers)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect a console page raised: finished like any answer
            return _answered(exc)
        code, title, detail = _HTTP_CODES.get(exc.status, ("http_error", exc.reason, exc.reason))
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # 405 says what is
        return problem_response(simple_problem(exc.status, code, title, detail, rid), allow)
    except BadHttpMessage:
        # A body aiohttp's parser refuses while a handler reads it (a multipart part whose headers
        # are no headers, read as a form or an upload): the client's mistake, not a 500.
        unreadable = FieldError("body", "The request body cannot be read.", "body_unreadable")
        return problem_response(problem_for(MalformedRequest([unreadable]), rid))
    except Exception as exc:
        if unavailable(exc):  # e.g. the account check during a PostgreSQL restart
            log.warning("http.dependency_unavailable", request_id=rid, error=type(exc).__name__)
            problem = problem_for(ServiceUnavailable.database(), rid)
            return problem_response(problem, {RETRY_AFTER.name: "2"})
        log.exception("http.unhandled_error", request_id=rid)
        return problem_response(internal_error(rid))


def _answered(raised: web.HTTPException) -> web.Response:
    """A non-error a handler raised (the console's redirects), as a response: re-raised, it went past
    every middleware's work on the way out, so it had no security headers (aiohttp's own Server
    header, with its version, and no ``no-store`` on the sign-in's redirect that sets the session
    cookie), no request id and no log line or metric."""
    answer = web.Response(status=raised.status, body=raised.body, headers=raised.headers)
    for name, morsel in raised.cookies.items():
        answer.cookies[name] = morsel
    return answer


#: Set on every response (OWASP ASVS 5.0 ch. 3.4 and the Secure Headers Project): a JSON API is never
#: to be sniffed, framed, cached or referred from.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    # Every /api response may carry PHI: no browser, proxy or CDN keeps a copy.
    "Cache-Control": "no-store",
}
#: aiohttp would otherwise announce ``Python/3.11 aiohttp/3.14.5``: no versions to an attacker.
SERVER_NAME = "caremsg"


SECURITY_HEADERS_CONTRACT = Contract(
    "security headers",
    response_headers=(
        *(Header(name, f"`{value}`.", required=True) for name, value in SECURITY_HEADERS.items()),
        Header(
            "Strict-Transport-Security",
            "Over TLS only (directly, or behind a trusted proxy saying `X-Forwarded-Proto: https`).",
        ),
    ),
)


def security_headers(
    *, hsts_max_age: int, trust_forwarded_proto: bool, trusted_proxies: Sequence[Network] = ()
) -> Middleware:
    """Add the security headers to every response, once, here. HSTS only where the client reached
    us over TLS: directly, or through a proxy saying ``X-Forwarded-Proto: https`` when configured
    to trust it (``service.trust_forwarded_proto``); with ``service.trusted_proxies`` named, only a
    request from one of them is believed, as for ``X-Forwarded-For`` (handlers/proxies.py)."""
    hsts = f"max-age={hsts_max_age}; includeSubDomains"

    @web.middleware
    @declares(SECURITY_HEADERS_CONTRACT)
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        # A page that needs more than the API's "nothing at all" sets its own, stricter-than-default
        # policy (the API reference at /api/docs: its scripts and styles, from here only).
        own_policy = response.headers.get("Content-Security-Policy")
        response.headers.update(SECURITY_HEADERS)
        if own_policy is not None and "frame-ancestors 'none'" in own_policy:
            response.headers["Content-Security-Policy"] = own_policy
        response.headers["Server"] = SERVER_NAME
        forwarded = (
            trust_forwarded_proto
            and request.headers.get("X-Forwarded-Proto", "").lower() == "https"
            and (not trusted_proxies or is_trusted_peer(request.remote, trusted_proxies))
        )
        if hsts_max_age > 0 and (request.secure or forwarded):
            response.headers["Strict-Transport-Security"] = hsts
        return response

    return middleware


PURPOSE_HEADER = "X-Purpose-Of-Use"


def _bearer(endpoint: Endpoint) -> bool:
    return not endpoint.public


AUTHENTICATION = Contract(
    "bearer authentication",
    applies=_bearer,
    request_headers=(
        Header(
            PURPOSE_HEADER,
            "The purpose of use of this access (HIPAA / 42 CFR Part 2); recorded in its audit events.",
            {"$ref": "#/components/schemas/Purpose"},
        ),
    ),
    statuses=(
        Status(401, "Missing or invalid access token, or the account changed since it was issued"),
        Status(422, f"{PURPOSE_HEADER} is not one of the Purpose values"),
    ),
)


def _purpose_of_use(request: web.Request) -> str | None:
    """The purpose of use the client states (HIPAA / 42 CFR Part 2), recorded in every audit event."""
    stated = request.headers.get(PURPOSE_HEADER)
    if stated is None:
        return None
    if stated not in {p.value for p in Purpose}:
        raise InvalidInput(
            [FieldError(PURPOSE_HEADER, f"Must be one of: {', '.join(p.value for p in Purpose)}.", "enum")]
        )
    return stated


def authenticate(
    tokens: TokenService, accounts: Callable[[], AccountDirectory], public_paths: frozenset[str]
) -> Middleware:
    """Require a valid bearer token, for an account that is still as the token says, on everything
    but the public endpoints."""

    @web.middleware
    @declares(AUTHENTICATION)
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None or resource.canonical in public_paths or request.method == "OPTIONS":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            log.info("auth.token_missing", request_id=request[request_id_key])
            _count_rejection(request, "token_missing")
            raise Unauthenticated("Send an access token: Authorization: Bearer <token>.")
        try:
            actor = tokens.verify(token.strip())
        except Unauthenticated:
            log.info("auth.token_rejected", request_id=request[request_id_key])
            _count_rejection(request, "token_invalid")
            raise
        if not await accounts().current(actor):
            log.info("auth.account_not_current", request_id=request[request_id_key], actor_id=actor.user_id)
            _count_rejection(request, "account_not_current", actor.user_id)
            raise Unauthenticated("This account is disabled or has changed; log in again.")
        request[actor_key] = type(actor)(
            user_id=actor.user_id,
            role=actor.role,
            organization_id=actor.organization_id,
            request_id=request[request_id_key],
            source_address=client_address(request),
            purpose_of_use=_purpose_of_use(request),
            issued_at=actor.issued_at,
        )
        structlog.contextvars.bind_contextvars(actor_id=actor.user_id)
        return await handler(request)

    return middleware


def _count_rejection(request: web.Request, reason: str, actor_id: int | None = None) -> None:
    """Put a refused token on the audit record, as a count in its source's summary for the window
    (handlers/rejections.py): one row per source and window, however many requests. A source is
    counted as the limits count it (an IPv6 address by its /64), or rotating addresses would make
    a row per request."""
    summaries = request.app.get(rejections_key)
    if summaries is None:  # the app is still starting or already stopping: the log line remains
        return
    address = client_address(request)
    summaries.count(
        source_address=None if address is None else counted_source(address),
        actor_id=actor_id,
        reason=reason,
        request_id=request[request_id_key],
        route=request.match_info.route.resource.canonical if request.match_info.route.resource else "",
    )
