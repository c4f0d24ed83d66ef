"""Operations: GET /metrics (Prometheus), GET /health (alive) and GET /ready (able to serve).

The metrics are read back with prometheus-client's own parser, so a test fails on a malformed
exposition as well as on a wrong number.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from engine.consent_index import ConsentIndex, IndexedConsent
from engine.model import RecipientType
from handlers.app import create_app
from handlers.keys import audit_sealer_key, operations_key
from handlers.metrics import add_routes
from handlers.middleware import request_context
from handlers.settings import Settings
from handlers.telemetry import Metrics, Operations
from tests.api.conftest import Api
from tests.support.messaging import care_team, emulator, send, settled_deliveries

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


NOW = datetime(2030, 1, 1, tzinfo=UTC)


def parse(exposition: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels`` (0 if there is none)."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


async def scrape(client: TestClient[Any, Any], **kw: Any) -> Samples:
    resp = await client.get("/metrics", **kw)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(await resp.text())


# --- /metrics ---------------------------------------------------------------------------------------


async def test_request_latency_is_counted_by_canonical_route_and_status_never_by_raw_path(api: Api) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)
    for _ in range(3):
        await api.call("GET", f"/api/patients/{patient_id}", peer)
    await api.call("GET", "/api/patients/2147483646", peer)

    resp = await api.client.get("/metrics")
    text = await resp.text()
    samples = parse(text)

    count = "caremsg_http_request_duration_seconds_count"
    assert value(samples, count, route="/api/patients/{id}", method="GET", status="200") == 3
    assert value(samples, count, route="/api/patients/{id}", method="GET", status="404") == 1
    assert value(samples, count, route="/api/patients", method="POST", status="201") == 1
    assert f"/api/patients/{patient_id}" not in text
    assert "2147483646" not in text


async def test_an_unknown_path_is_counted_as_unmatched(api: Api) -> None:
    await api.client.get("/no/such/path/4711")

    samples = await scrape(api.client)

    count = "caremsg_http_request_duration_seconds_count"
    assert value(samples, count, route="unmatched", status="404") >= 1
    assert not [labels for (_, labels) in samples if ("route", "/no/such/path/4711") in labels]


async def test_decisions_are_counted_by_workflow_outcome_and_reason(api: Api) -> None:
    org, other = await api.organization(), await api.organization()
    peer, stranger = await api.person("peer_support", org), await api.person("peer_support", other)
    patient_id = await api.patient(peer)
    status, _ = await api.call("GET", f"/api/patients/{patient_id}", stranger)
    assert status in (403, 404)

    samples = await scrape(api.client)

    decisions = "caremsg_policy_decisions_total"
    assert value(samples, decisions, workflow="patient.create", outcome="allow") >= 1
    denied = [
        dict(labels)
        for (name, labels), v in samples.items()
        if name == decisions and ("outcome", "deny") in labels and v >= 1
    ]
    assert denied, samples
    assert all(d["reason"] for d in denied)


async def test_outbox_deliveries_and_relay_retries_are_exposed(api: Api) -> None:
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])

    samples = await scrape(api.client)

    assert value(samples, "caremsg_deliveries", state="sent") >= 1
    for state in ("queued", "delivered", "failed"):
        assert ("caremsg_deliveries", frozenset({("state", state)})) in samples
    assert value(samples, "caremsg_outbox_pending") >= 0
    assert value(samples, "caremsg_outbox_oldest_age_seconds") >= 0
    assert ("caremsg_relay_retries_total", frozenset()) in samples


async def test_a_post_the_relay_tries_again_counts_one_retry(api: Api) -> None:
    team = await care_team(api)
    before = value(await scrape(api.client), "caremsg_relay_retries_total")
    emulator(api).faults.fail_next(1)  # Sendbird answers the next call 503
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted
    assert {d["state"] for d in await settled_deliveries(api, team.peer, accepted["id"])} == {"sent"}
    assert value(await scrape(api.client), "caremsg_relay_retries_total") == before + 1


async def test_sealer_lag_and_the_consent_index_are_exposed(api: Api) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    patient_id = await api.patient(peer)
    await api.consent(officer, patient_id, organizationId=await api.organization())
    await api.app[audit_sealer_key].seal_pending()

    samples = await scrape(api.client)

    assert value(samples, "caremsg_consent_index_consents") >= 1
    assert ("caremsg_consent_index_changes_behind", frozenset()) in samples
    assert 0 <= value(samples, "caremsg_consent_last_change_age_seconds") < 3600
    assert ("caremsg_audit_sealer_lag_events", frozenset()) in samples
    assert ("caremsg_audit_sealer_lag_seconds", frozenset()) in samples


async def test_rate_limit_refusals_are_counted_through_the_apps_metrics(api: Api) -> None:
    metrics = api.app[operations_key].metrics

    metrics.rate_limit_refused("login_per_account")
    metrics.rate_limit_refused("login_per_account")
    metrics.rate_limit_refused("api_per_token")

    samples = await scrape(api.client)
    refusals = "caremsg_rate_limit_refusals_total"
    assert value(samples, refusals, limit="login_per_account") == 2
    assert value(samples, refusals, limit="api_per_token") == 1


def test_each_app_counts_in_its_own_registry() -> None:
    first, second = Metrics(), Metrics()

    first.rate_limit_refused("x")

    assert value(parse(first.render().decode()), "caremsg_rate_limit_refusals_total", limit="x") == 1
    assert value(parse(second.render().decode()), "caremsg_rate_limit_refusals_total", limit="x") == 0


def test_shared_metrics_refuse_a_process_that_keeps_its_counts_in_memory(tmp_path: Path) -> None:
    """A worker whose prometheus-client was imported before ``PROMETHEUS_MULTIPROC_DIR`` was set
    would count in memory and merge nobody's files: a scrape would show zeros. It refuses to start
    (this test process is such a process); handlers/workers.py sets the variable first."""
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(shared_dir=str(tmp_path))


class _DatabaseDown:
    async def stored_state(self) -> Any:
        raise ConnectionRefusedError


async def test_a_scrape_without_the_database_counts_a_failure_and_still_reports_the_consent_index() -> None:
    metrics, index = Metrics(), ConsentIndex()
    index.put(
        IndexedConsent(1, 7, RecipientType.ORGANIZATION, 100, frozenset({"read"}), "treatment", NOW, None),
        NOW,
    )

    await metrics.refresh(_DatabaseDown(), index)  # type: ignore[arg-type]

    samples = parse(metrics.render().decode())
    assert value(samples, "caremsg_metrics_database_probe_failures_total") == 1
    assert value(samples, "caremsg_consent_index_consents") == 1


@pytest.fixture
def with_metrics_token(settings: Settings) -> Settings:
    service = settings.service.model_copy(update={"metrics_token": "scrape-me-0123456789"})
    return settings.model_copy(update={"service": service})


async def test_with_a_metrics_token_a_scrape_needs_it(
    aiohttp_client: Any, with_metrics_token: Settings
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(with_metrics_token))

    without = await client.get("/metrics")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    samples = await scrape(client, headers={"Authorization": "Bearer scrape-me-0123456789"})

    assert (without.status, wrong.status) == (401, 401)
    assert without.headers["Content-Type"].startswith("application/problem+json")
    assert "caremsg_http_request_duration_seconds_count" in {name for name, _ in samples}


async def test_without_a_token_production_does_not_serve_metrics(aiohttp_client: Any) -> None:
    app = web.Application(middlewares=[request_context(lambda exc: False)])
    app[operations_key] = Operations(Metrics(), metrics_open=False)
    add_routes(app)
    client: TestClient[Any, Any] = await aiohttp_client(app)

    resp = await client.get("/metrics")

    assert resp.status == 404


# --- /health and /ready -----------------------------------------------------------------------------


async def test_health_says_alive_without_a_token(api: Api) -> None:
    status, body = await api.call("GET", "/health")

    assert status == 200
    assert body["status"] == "ok"


async def test_ready_reports_each_check_when_everything_is_in_order(api: Api) -> None:
    await api.app[audit_sealer_key].seal_pending()

    status, body = await api.call("GET", "/ready")

    assert status == 200, body
    assert body["status"] == "ready"
    checks = body["checks"]
    assert set(checks) == {"database", "migrations", "policy", "sealer"}
    assert all(check["ok"] for check in checks.values()), checks
    assert checks["migrations"]["at"] == checks["migrations"]["head"]
    assert len(checks["policy"]["version"]) == 16


@pytest.fixture
def slow_sealer(settings: Settings) -> Settings:
    """A sealer that runs once at start and then not for an hour, and a lag bound of a microsecond."""
    audit = settings.audit.model_copy(update={"seal_interval_seconds": 3600.0})
    service = settings.service.model_copy(update={"ready_max_sealer_lag_seconds": 1e-6})
    return settings.model_copy(update={"audit": audit, "service": service})


async def test_ready_is_a_503_naming_the_sealer_while_it_lags(
    aiohttp_client: Any, slow_sealer: Settings
) -> None:
    api = Api(await aiohttp_client(create_app(slow_sealer)))
    peer = await api.person("peer_support", await api.organization())
    await api.patient(peer)  # an audited decision the sealer will not seal for an hour

    status, body = await api.call("GET", "/ready")
    await api.app[audit_sealer_key].seal_pending()
    status_after, after = await api.call("GET", "/ready")

    assert status == 503, body
    assert body["status"] == "not_ready"
    assert body["checks"]["sealer"]["ok"] is False
    assert body["checks"]["sealer"]["lagEvents"] >= 1
    assert body["checks"]["database"]["ok"] is True
    assert status_after == 200, after
