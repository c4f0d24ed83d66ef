"""Operations endpoints: ``GET /metrics`` (Prometheus text format), ``GET /health`` (alive) and
``GET /ready`` (able to serve: database, schema, policy, audit sealer).

What they report (the metrics, the readiness checks, the resources they read) is in
``handlers/telemetry.py``.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import Field

from engine.errors import Unauthenticated
from handlers.keys import operations_key
from handlers.requests import route
from handlers.routing import Endpoint
from handlers.schemas import Response
from handlers.telemetry import Operations, readiness


def _operations(request: web.Request) -> Operations:
    return request.app[operations_key]


async def health(request: web.Request) -> web.Response:
    """Alive: the process answers. No dependency is checked (that is ``/ready``), so a database
    outage never gets a healthy instance restarted."""
    policy = _operations(request).policy
    return web.json_response({"status": "ok", "policyVersion": policy.current.version if policy else None})


async def ready(request: web.Request) -> web.Response:
    """Ready to serve: database reachable, schema at the migrations' head, policy loaded, audit
    sealer within its lag bound. 503 with every check's result when one fails."""
    ops = _operations(request)
    if ops.probe is None:
        return web.json_response({"status": "starting", "checks": {}}, status=503)
    checks = await readiness(
        ops.probe,
        ops.policy,
        expected_revisions=ops.expected_revisions,
        sealer_enabled=ops.sealer_enabled,
        max_sealer_lag_seconds=ops.max_sealer_lag_seconds,
    )
    ok = all(check.ok for check in checks.values())
    body = {"status": "ready" if ok else "not_ready", "checks": {k: c.public() for k, c in checks.items()}}
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text exposition of this instance's metrics."""
    ops = _operations(request)
    if ops.metrics_token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), ops.metrics_token.encode()
        ):
            raise Unauthenticated("Send the metrics token: Authorization: Bearer <token>.")
    elif not ops.metrics_open:
        raise web.HTTPNotFound()
    if ops.probe is not None:
        await ops.metrics.refresh(ops.probe, ops.consents)
    response = web.Response(body=ops.metrics.render())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


class HealthPublic(Response):
    status: str = Field(description="Always `ok`: the process answers.")
    policy_version: str | None = Field(description="The policy version in force.")


class ReadinessPublic(Response):
    status: str = Field(description="`ready`, `not_ready` (a check failed) or `starting`.")
    checks: dict[str, dict[str, Any]] = Field(
        description="Each check (database, migrations, policy, sealer) by name: `ok` and what it found."
    )


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/health",
        health,
        "getHealth",
        "Alive: the process answers (no dependency is checked)",
        "service",
        response=HealthPublic,
        public=True,
        errors=(),
    ),
    Endpoint(
        "GET",
        "/ready",
        ready,
        "getReadiness",
        "Ready to serve: database, migrations at head, policy loaded, audit sealer lag",
        "service",
        response=ReadinessPublic,
        public=True,
        errors=(503,),
        error_bodies=((503, ReadinessPublic),),
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "getMetrics",
        "This instance's metrics in the Prometheus text format",
        "service",
        public=True,
        errors=(401, 404),
        media_type="text/plain",
        description=(
            "With `service.metrics_token` set, send it as `Authorization: Bearer <token>` (401 otherwise);"
            " without one, served in development and test and 404 in production."
        ),
    ),
]


def add_routes(app: web.Application) -> None:
    """The operations routes alone, for an app built without the route table (tests)."""
    for ep in ENDPOINTS:
        app.router.add_route(ep.method, ep.path, route(ep), name=ep.operation_id)


#: Answer without a bearer token (``/metrics`` checks its own).
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})
