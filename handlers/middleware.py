"""Request middlewares: request id and log context, problem+json errors, bearer authentication."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from engine.errors import CaremsgError, FieldError, InvalidInput, ServiceUnavailable, Unauthenticated
from engine.model import Purpose
from engine.ports import AccountDirectory, TokenService
from engine.workflows.audit import record_rejected_token
from handlers.keys import actor_key, request_id_key, services_key
from handlers.problems import problem_for, problem_response, simple_problem
from handlers.routing import Contract, Endpoint, Header, Status, declares
from integrations.db.uow import is_unavailable

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
            f"{_REQUEST_ID_DOC} Optional: 8-64 of A-Z a-z 0-9 . _ - (anything else is replaced).",
            {"type": "string", "pattern": _REQUEST_ID.pattern, "minLength": 8, "maxLength": 64},
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


@web.middleware
@declares(REQUEST_CONTEXT, CHALLENGE, BODY_LIMIT)
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the client's X-Request-ID if well-formed), bind it to the logs, and
    turn every error into problem+json."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    rid = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    request[request_id_key] = rid
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    try:
        response = await _with_problems(request, handler, rid)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers[REQUEST_ID_HEADER] = rid
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    log.info(
        "http.request",
        request_id=rid,
        method=request.method,
        route=route,
        status=response.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


async def _with_problems(request: web.Request, handler: Handler, rid: str) -> web.StreamResponse:
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
        return problem_response(problem_for(error, rid), headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, title, detail = _HTTP_CODES.get(exc.status, ("http_error", exc.reason, exc.reason))
        return problem_response(simple_problem(exc.status, code, title, detail, rid))
    except Exception as exc:
        if is_unavailable(exc):  # e.g. the account check during a PostgreSQL restart (issue 3)
            log.warning("http.dependency_unavailable", request_id=rid, error=type(exc).__name__)
            unavailable = ServiceUnavailable.database()
            return problem_response(problem_for(unavailable, rid), {RETRY_AFTER.name: "2"})
        log.exception("http.unhandled_error", request_id=rid)
        return problem_response(
            simple_problem(500, "internal_error", "Internal error", "Something went wrong on our side.", rid)
        )


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
            await _audit_rejection(request, "token_missing")
            raise Unauthenticated("Send an access token: Authorization: Bearer <token>.")
        try:
            actor = tokens.verify(token.strip())
        except Unauthenticated:
            log.info("auth.token_rejected", request_id=request[request_id_key])
            await _audit_rejection(request, "token_invalid")
            raise
        if not await accounts().current(actor):
            log.info("auth.account_not_current", request_id=request[request_id_key], actor_id=actor.user_id)
            await _audit_rejection(request, "account_not_current", actor.user_id)
            raise Unauthenticated("This account is disabled or has changed; log in again.")
        request[actor_key] = type(actor)(
            user_id=actor.user_id,
            role=actor.role,
            organization_id=actor.organization_id,
            request_id=request[request_id_key],
            source_address=request.remote,
            purpose_of_use=_purpose_of_use(request),
        )
        structlog.contextvars.bind_contextvars(actor_id=actor.user_id)
        return await handler(request)

    return middleware


async def _audit_rejection(request: web.Request, reason: str, actor_id: int | None = None) -> None:
    """Put a refused token on the audit record (issue 5). The request is refused either way: if the
    record cannot be written, the refusal stands and the log says the record is missing."""
    try:
        await record_rejected_token(
            request.app[services_key],
            reason=reason,
            request_id=request[request_id_key],
            source_address=request.remote,
            route=request.match_info.route.resource.canonical if request.match_info.route.resource else "",
            actor_id=actor_id,
        )
    except Exception as error:
        log.error(
            "auth.rejection_not_audited", request_id=request[request_id_key], error=type(error).__name__
        )
