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

With ``--workers N`` a scrape reaches whichever worker accepts the connection, yet must count what
every worker did: the workers run in prometheus-client's multiprocess mode (handlers/workers.py
sets its directory before the app is imported), each writing its counters and histograms to files
there, and a scrape merges every worker's files (``shared_dir``). The stored-state gauges are the
scraping worker's fresh reading (mode ``mostrecent``); what describes one process (its consent
index, its frozen heap) is the answering process's own, reported by :class:`_ThisProcess`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from engine.consent_index import ConsentIndex
from engine.decisions import Decision
from engine.policy import PolicyHolder
from integrations.db.resources import DatabaseProbe


class _ThisProcess(Collector):
    """What describes the answering process rather than the service: its consent index (as of the
    scrape's refresh) and its frozen heap. Read at collection, never written to shared files."""

    def __init__(self) -> None:
        self.consents: int | None = None
        self.changes_behind = 0

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "caremsg_gc_frozen_objects",
            "Objects the garbage collector no longer walks: what the start built, once a serving "
            "process has frozen it (0 before, and in processes that do not, such as tests).",
            value=gc.get_freeze_count(),
        )
        if self.consents is not None:
            yield GaugeMetricFamily(
                "caremsg_consent_index_consents",
                "Consents held by this instance's consent index.",
                value=self.consents,
            )
            yield GaugeMetricFamily(
                "caremsg_consent_index_changes_behind",
                "Consent changes in the database this instance's index has not applied yet.",
                value=self.changes_behind,
            )


#: How the gauges read from PostgreSQL at scrape time merge over workers: the latest reading.
STORED: Final = "mostrecent"


@dataclass
class Metrics:
    """The app's metrics. ``rate_limit_refused``, ``observe_decision``, ``unparseable_request``,
    ``relay_retried`` and ``provider_credentials_rejected`` are the hooks other parts of caremsg
    call; everything else is filled here.

    ``shared_dir``: the multiprocess directory of ``--workers`` (see the module docstring); None in
    one process, where the app's own registry is what a scrape shows."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    shared_dir: str | None = None

    def __post_init__(self) -> None:
        if self.shared_dir is not None and issubclass(values.ValueClass, values.MutexValue):
            raise RuntimeError(
                "shared metrics need PROMETHEUS_MULTIPROC_DIR set before prometheus_client is imported"
            )
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
            "caremsg_outbox_pending",
            "Outbox entries waiting to be delivered.",
            registry=r,
            multiprocess_mode=STORED,
        )
        self.outbox_oldest = Gauge(
            "caremsg_outbox_oldest_age_seconds",
            "Age of the oldest pending outbox entry (0: none).",
            registry=r,
            multiprocess_mode=STORED,
        )
        self.deliveries = Gauge(
            "caremsg_deliveries",
            "Per-recipient message deliveries by state.",
            ["state"],
            registry=r,
            multiprocess_mode=STORED,
        )
        self.sealer_lag_events = Gauge(
            "caremsg_audit_sealer_lag_events",
            "Committed audit events not yet sealed in the chain.",
            registry=r,
            multiprocess_mode=STORED,
        )
        self.sealer_lag_seconds = Gauge(
            "caremsg_audit_sealer_lag_seconds",
            "Age of the oldest audit event not yet sealed (0: none).",
            registry=r,
            multiprocess_mode=STORED,
        )
        self.consent_last_change_age = Gauge(
            "caremsg_consent_last_change_age_seconds",
            "Time since the newest consent change was recorded (0: none yet).",
            registry=r,
            multiprocess_mode=STORED,
        )
        self.scrape_failures = Counter(
            "caremsg_metrics_database_probe_failures",
            "Scrapes whose database gauges could not be read (the gauges keep their last values).",
            registry=r,
        )
        self.relay_retries = Counter(
            "caremsg_relay_retries", "Outbox deliveries put back for another attempt.", registry=r
        )
        self.credential_failures = Counter(
            "caremsg_provider_credential_failures",
            "Outbox deliveries a provider refused for caremsg's own credentials (held, not failed),"
            " by provider and its error code (else the HTTP status).",
            ["provider", "code"],
            registry=r,
        )
        self._this_process = _ThisProcess()
        r.register(self._this_process)
        self._exposed = r
        if self.shared_dir is not None:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=self.shared_dir)  # type: ignore[no-untyped-call]
            self._exposed.register(self._this_process)
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

    def relay_retried(self) -> None:
        """Count one outbox delivery put back for another attempt (the relay calls this)."""
        self.relay_retries.inc()

    def provider_credentials_rejected(self, provider: str, code: int | None) -> None:
        """Count one delivery ``provider`` refused for caremsg's credentials (the relay calls this).
        Both labels are small fixed sets: the providers caremsg talks to, the codes that mean this."""
        self.credential_failures.labels(provider, "" if code is None else str(code)).inc()

    async def refresh(self, probe: DatabaseProbe, consents: ConsentIndex | None) -> None:
        """Read the stored-state gauges from PostgreSQL (a probe that fails counts a scrape failure)."""
        if consents is not None:  # the index's size needs no database
            self._this_process.consents = len(consents)
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
            self._this_process.changes_behind = max(0, consent_log.seq - consents.seq)

    def render(self) -> bytes:
        return generate_latest(self._exposed)


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
