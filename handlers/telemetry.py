"""What the operations endpoints report (handlers/metrics.py serves them): the app's
Prometheus :class:`Metrics`, the :func:`readiness` checks, and :class:`Operations`, the resources
they read, which the composition root fills in as they start.

Every app has its own :class:`Metrics` with its own ``CollectorRegistry`` (no module-level
collectors: two apps in one process, as in tests, never share counts). Counters and histograms are
filled as things happen (the request middleware, the policy decider, the rate limiter); the
gauges of what is stored (outbox, deliveries, sealer lag, consent log) are read from PostgreSQL at
scrape time, through :class:`integrations.db.resources.DatabaseProbe`. Labels are bounded sets: the
canonical route (``/api/patients/{id}``, never the raw path), the status code, the workflow and the
reason code the policy declares. Nothing here names a person.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.consent_index import ConsentIndex
from engine.decisions import Decision
from engine.policy import PolicyHolder
from integrations.db.resources import DatabaseProbe


class _Callbacks(Collector):
    """Counters that live elsewhere (the outbox relay's retries), read when scraped."""

    def __init__(self) -> None:
        self.counters: list[tuple[str, str, Callable[[], float]]] = []

    def collect(self) -> Iterable[Metric]:
        for name, documentation, read in self.counters:
            yield CounterMetricFamily(name, documentation, value=read())


@dataclass
class Metrics:
    """The app's metrics. ``rate_limit_refused``, ``observe_decision`` and ``unparseable_request``
    are the hooks other parts of caremsg call; everything else is filled here."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Histogram(
            "caremsg_http_request_duration_seconds",
            "Time to answer an HTTP request, by canonical route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "caremsg_policy_decisions",
            "Policy decisions by workflow, outcome (allow, deny) and reason code.",
            ["workflow", "outcome", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "caremsg_rate_limit_refusals",
            "Requests refused by a rate limit (429), by the limit that refused them.",
            ["limit"],
            registry=r,
        )
        self.unparseable = Counter(
            "caremsg_http_unparseable_requests",
            "Requests answered 400 before routing because they are not well-formed HTTP.",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "caremsg_outbox_pending", "Outbox entries waiting to be delivered.", registry=r
        )
        self.outbox_oldest = Gauge(
            "caremsg_outbox_oldest_age_seconds",
            "Age of the oldest pending outbox entry (0: none).",
            registry=r,
        )
        self.deliveries = Gauge(
            "caremsg_deliveries", "Per-recipient message deliveries by state.", ["state"], registry=r
        )
        self.sealer_lag_events = Gauge(
            "caremsg_audit_sealer_lag_events",
            "Committed audit events not yet sealed in the chain.",
            registry=r,
        )
        self.sealer_lag_seconds = Gauge(
            "caremsg_audit_sealer_lag_seconds",
            "Age of the oldest audit event not yet sealed (0: none).",
            registry=r,
        )
        self.consent_index_entries = Gauge(
            "caremsg_consent_index_consents", "Consents held by this instance's consent index.", registry=r
        )
        self.consent_index_behind = Gauge(
            "caremsg_consent_index_changes_behind",
            "Consent changes in the database this instance's index has not applied yet.",
            registry=r,
        )
        self.consent_last_change_age = Gauge(
            "caremsg_consent_last_change_age_seconds",
            "Time since the newest consent change was recorded (0: none yet).",
            registry=r,
        )
        self.scrape_failures = Counter(
            "caremsg_metrics_database_probe_failures",
            "Scrapes whose database gauges could not be read (the gauges keep their last values).",
            registry=r,
        )
        self.frozen_objects = Gauge(
            "caremsg_gc_frozen_objects",
            "Objects the garbage collector no longer walks: what the start built, once a serving "
            "process has frozen it (0 before, and in processes that do not, such as tests).",
            registry=r,
        )
        self.frozen_objects.set_function(gc.get_freeze_count)
        self._callbacks = _Callbacks()
        r.register(self._callbacks)
        # The labelled series already used (labels are bounded sets, see the module docstring).
        self._request_series: dict[tuple[str, str, int], Any] = {}
        self._decision_series: dict[tuple[str, bool, str | None], Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        series = self._request_series.get(key)
        if series is None:  # labels() takes a lock and builds the key each time: once per series
            series = self._request_series[key] = self.requests.labels(route, method, str(status))
        series.observe(seconds)

    def observe_decision(self, decision: Decision) -> None:
        """Count one policy decision (the engine's decider calls this for every decision)."""
        key = (decision.workflow, decision.allowed, decision.reason)
        series = self._decision_series.get(key)
        if series is None:
            outcome = "allow" if decision.allowed else "deny"
            series = self._decision_series[key] = self.decisions.labels(
                decision.workflow, outcome, decision.reason or ""
            )
        series.inc()

    def rate_limit_refused(self, limit: str) -> None:
        """Count one request a rate limit refused; ``limit`` names the limit (a small fixed set)."""
        self.rate_limited.labels(limit).inc()

    def unparseable_request(self) -> None:
        """Count one request the connection refused before routing (handlers/serving.py)."""
        self.unparseable.inc()

    def count_from(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """Expose a counter kept by another component (read at scrape time)."""
        self._callbacks.counters.append((name, documentation, read))

    async def refresh(self, probe: DatabaseProbe, consents: ConsentIndex | None) -> None:
        """Read the stored-state gauges from PostgreSQL (a probe that fails counts a scrape failure)."""
        try:
            stored = await probe.stored_state()
        except Exception:
            self.scrape_failures.inc()
            return
        outbox, deliveries, lag, consent_log = (
            stored.outbox,
            stored.deliveries,
            stored.sealer_lag,
            stored.consent_log,
        )
        self.outbox_pending.set(outbox.count)
        self.outbox_oldest.set(outbox.oldest_seconds)
        for state in ("queued", "sent", "delivered", "failed", *deliveries):
            self.deliveries.labels(state).set(deliveries.get(state, 0))
        self.sealer_lag_events.set(lag.count)
        self.sealer_lag_seconds.set(lag.oldest_seconds)
        self.consent_last_change_age.set(consent_log.age_seconds)
        if consents is not None:
            self.consent_index_entries.set(len(consents))
            self.consent_index_behind.set(max(0, consent_log.seq - consents.seq))

    def render(self) -> bytes:
        return generate_latest(self.registry)


# --- readiness ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail}


async def readiness(
    probe: DatabaseProbe,
    policy: PolicyHolder | None,
    *,
    expected_revisions: frozenset[str],
    sealer_enabled: bool,
    max_sealer_lag_seconds: float,
) -> dict[str, Check]:
    """Each check's result; the instance is ready when every one is ``ok``."""
    checks: dict[str, Check] = {}
    started = time.perf_counter()
    try:
        schema = await probe.schema_state(sealer_enabled=sealer_enabled)
        revisions, lag = schema.revisions, schema.sealer_lag
    except Exception as exc:
        checks["database"] = Check(False, {"error": type(exc).__name__})
        checks["migrations"] = Check(False, {"error": "database_unreachable"})
        checks["sealer"] = Check(not sealer_enabled, {"error": "database_unreachable"})
    else:
        checks["database"] = Check(True, {"seconds": round(time.perf_counter() - started, 4)})
        checks["migrations"] = Check(
            revisions == expected_revisions, {"at": sorted(revisions), "head": sorted(expected_revisions)}
        )
        if lag is None:
            checks["sealer"] = Check(True, {"enabled": False})
        else:
            checks["sealer"] = Check(
                lag.oldest_seconds <= max_sealer_lag_seconds,
                {
                    "lagEvents": lag.count,
                    "lagSeconds": round(lag.oldest_seconds, 3),
                    "maxLagSeconds": max_sealer_lag_seconds,
                },
            )
    checks["policy"] = (
        Check(True, {"version": policy.current.version})
        if policy is not None
        else Check(False, {"error": "not_loaded"})
    )
    return checks


@dataclass
class Operations:
    """What the operations endpoints read; the composition root fills in the resources as they start."""

    metrics: Metrics
    metrics_token: str = field(default="", repr=False)
    #: Without a token: served in development and test, not in production.
    metrics_open: bool = True
    sealer_enabled: bool = True
    max_sealer_lag_seconds: float = 300.0
    expected_revisions: frozenset[str] = frozenset()
    #: The database's probe, once the database is open (until then ``/ready`` answers ``starting``).
    probe: DatabaseProbe | None = None
    policy: PolicyHolder | None = None
    consents: ConsentIndex | None = None
