"""Abuse limits on the whole API: token buckets per source address and per access token.

Every request takes one token from its address's bucket and, when it carries a bearer token, one
from that token's bucket (keyed by a hash of the token as sent: a flood of made-up tokens is still
held by the address limit). A bucket holds ``burst`` and refills at ``per_second``. A refused
request gets 429 problem+json with ``Retry-After``; every response carries the IETF draft
``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers) for the
bucket nearest to empty.

The limits are the service's, whichever process answers: with ``caremsg serve --workers N`` the
workers share their buckets through a file the parent made (handlers/buckets.py), since the kernel
spreads connections, not clients, over the workers. Several instances of the service on several
hosts each count their own; a front proxy can limit across them.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from engine.errors import CaremsgError, TooManyRequests
from engine.sources import counted_source
from handlers.buckets import Buckets, SharedTokenBuckets, TokenBuckets, Verdict
from handlers.keys import operations_key, rate_limit_headers_key, request_id_key, upload_limit_key
from handlers.problems import problem_for, problem_response, status_of
from handlers.proxies import client_address
from handlers.routing import Contract, Header, Status, declares
from handlers.settings import RateLimitSettings

log = structlog.get_logger("caremsg.http")

#: Routes never limited: probes of the service's own health.
EXEMPT_ROUTES = frozenset({"/health", "/ready", "/metrics"})


def _token_key(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()


def _headers(verdicts: list[Verdict]) -> dict[str, str]:
    tightest = min(verdicts, key=lambda v: v.remaining / v.quota)
    return {
        "RateLimit-Policy": ", ".join(f'"{v.policy}";q={v.quota};w={v.window}' for v in verdicts),
        "RateLimit": f'"{tightest.policy}";r={tightest.remaining};t={tightest.reset}',
    }


#: The fields every limited answer carries (IETF draft httpapi-ratelimit-headers).
LIMIT_HEADERS = (
    Header(
        "RateLimit-Policy",
        'The limits that apply: `"address";q=QUOTA;w=WINDOW` (and `"token";...` with a bearer token).',
    ),
    Header("RateLimit", 'What is left of the tightest limit: `"NAME";r=REMAINING;t=SECONDS_TO_RESET`.'),
)
RATE_LIMIT_CONTRACT = Contract(
    "rate limits",
    applies=lambda endpoint: endpoint.path not in EXEMPT_ROUTES,
    statuses=(
        Status(
            429,
            "Too many requests: a rate limit or the login back-off refused it",
            (Header("Retry-After", "Seconds to wait before trying again.", {"type": "integer"}),),
        ),
    ),
)
LIMIT_HEADERS_CONTRACT = Contract(
    "rate limit fields",
    applies=lambda endpoint: endpoint.path not in EXEMPT_ROUTES,
    response_headers=LIMIT_HEADERS,
)


#: The limits, by the name the ``RateLimit`` fields give them (and their shared files are named).
LIMITS = ("address", "token", "upload")


def _buckets(
    name: str, per_second: float, burst: int, *, clock: Callable[[], float], shared: str | Path | None
) -> Buckets:
    if shared is None:
        return TokenBuckets(name, per_second, burst, clock=clock)
    return SharedTokenBuckets(shared, name, per_second, burst, clock=clock)


def upload_limit(
    settings: RateLimitSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    shared: str | Path | None = None,
) -> Buckets:
    """The attachments each account may upload (``uploads_per_hour`` up to ``uploads_burst``), by
    ``user:<id>``: the request limits count requests, and an upload is up to
    ``messaging.attachment_max_bytes`` stored in PostgreSQL (one account at the token limit could
    write ~100 MB a second, more with more logins). Shared by the workers like the others."""
    return _buckets(
        "upload", settings.uploads_per_hour / 3600, settings.uploads_burst, clock=clock, shared=shared
    )


def take_upload(request: web.Request, user_id: int) -> None:
    """Spend one of the account's uploads, before its body is read; else 429 with ``Retry-After``
    (logged and counted as the other limits are)."""
    verdict = request.app[upload_limit_key].take(f"user:{user_id}")
    if verdict.allowed:
        return
    log.warning(
        "http.rate_limited", request_id=request[request_id_key], policy=verdict.policy, user_id=user_id
    )
    operations = request.app.get(operations_key)
    if operations is not None:
        operations.metrics.rate_limit_refused("api_per_upload")
    raise TooManyRequests(
        "Too many uploads from this account; try again later.", retry_after=verdict.retry_after
    )


def rate_limit(
    settings: RateLimitSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    shared: str | Path | None = None,
    signed: frozenset[str] = frozenset(),
) -> Middleware:
    """The middleware; put it after ``request_context`` (for the request id) and before
    authentication (so unauthenticated floods are limited too). ``shared`` is the directory whose
    files (``LIMITS``, made by :func:`create_shared_limits`) hold the buckets every worker of the
    service shares; None: this process's own.

    ``signed`` are the routes authenticated by a signature over the body (the providers'
    webhooks): a delivery that proves itself spends nothing, since a busy clinic's Sendbird may
    well send more events a second than one client's budget, and an event refused is an event lost
    after its retries. A request refused for its own fault (a failed signature first of all) spends
    a token of its source's bucket, and a source whose bucket is empty is refused before its body is
    read, as anywhere else."""

    by_address = _buckets(
        "address", settings.per_address_per_second, settings.per_address_burst, clock=clock, shared=shared
    )
    by_token = _buckets(
        "token", settings.per_token_per_second, settings.per_token_burst, clock=clock, shared=shared
    )

    @web.middleware
    @declares(RATE_LIMIT_CONTRACT)
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        if route in EXEMPT_ROUTES:
            return await handler(request)
        source = counted_source(client_address(request) or "unknown")
        if route in signed:
            return await _charged_on_failure(request, handler, by_address, source)
        verdicts = [by_address.take(source)]
        token = _token_key(request)
        if token is not None:
            verdicts.append(by_token.take(token))
        headers = _headers(verdicts)
        refused = [v for v in verdicts if not v.allowed]
        if refused:
            return _refusal(request, refused, headers)
        request[rate_limit_headers_key] = headers
        return await handler(request)

    return middleware


async def _charged_on_failure(
    request: web.Request, handler: Handler, by_address: Buckets, source: str
) -> web.StreamResponse:
    """A signed route's request: refused if its source has nothing left, charged only if it is
    refused for its own fault (a failed signature, an unreadable event, a receiver not configured
    here): never for a delivery accepted, nor for the service's own trouble (503)."""
    verdict = by_address.peek(source)
    headers = _headers([verdict])
    if not verdict.allowed:
        return _refusal(request, [verdict], headers)
    request[rate_limit_headers_key] = headers
    try:
        response = await handler(request)
    except CaremsgError as error:  # answered further out (request_context), with this status
        if _senders_fault(status_of(error)):
            by_address.take(source)
        raise
    if _senders_fault(response.status):
        by_address.take(source)
    return response


def _senders_fault(status: int) -> bool:
    return HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR


def _refusal(request: web.Request, refused: list[Verdict], headers: dict[str, str]) -> web.StreamResponse:
    wait = max(v.retry_after for v in refused)
    log.warning(
        "http.rate_limited",
        request_id=request[request_id_key],
        policy=refused[0].policy,
        source_address=client_address(request),
    )
    operations = request.app.get(operations_key)
    if operations is not None:  # the caremsg_rate_limit_refusals_total metric, by limit
        for verdict in refused:
            operations.metrics.rate_limit_refused(f"api_per_{verdict.policy}")
    error = TooManyRequests("Too many requests; slow down.", retry_after=wait)
    headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return problem_response(problem_for(error, request[request_id_key]), headers)


def create_shared_limits(directory: str | Path) -> None:
    """Make the files of the buckets the workers will share (the parent, before any worker starts)."""
    for name in LIMITS:
        SharedTokenBuckets.create(directory, name)


@declares(LIMIT_HEADERS_CONTRACT)
async def add_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the limit fields on every answer, errors included."""
    headers = request.get(rate_limit_headers_key)
    if headers:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
