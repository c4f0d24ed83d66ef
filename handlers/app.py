"""The composition root: ``create_app(settings)`` builds every resource inside ``cleanup_ctx``.

Nothing is built at import time. One cleanup context per resource, started in this order (and
stopped in the reverse one); each stores what it built under its key in ``handlers/keys.py``
(``messaging_key`` is in ``handlers/api_messaging.py``, next to the resources type it holds):

1. ``_database``: the engine, the session factory and the send path's pool; the account directory.
2. ``chat``: the Sendbird client, or the loopback emulator (``handlers/app_messaging.py``).
3. ``_consent_index``: the in-memory consent index, loaded before the first request.
4. ``_policy``: the policy files, loaded once; ``_live_policy`` reloads them.
5. ``messaging``: the SMS gateway, the idempotency store, the webhook keys (``handlers/app_messaging.py``).
6. ``_relay``: the outbox relays that deliver what workflows asked for, and the on-call hand-offs.
7. ``_services``: the engine's services, which every handler calls.
8. ``webhook_processor``, ``_audit_sealer``, ``_audit_chain``, ``schedules.consent_expiry``,
   ``schedules.retention_sweep``, ``_rejection_summaries``: background work
   (``handlers/schedules.py`` holds what runs on a timetable).
9. ``_operations``: hands ``/metrics`` and ``/ready`` what they read.

Longer than 400 lines because it is the composition root: every resource's cleanup context is here,
in the order they start, so the order can be read top to bottom in one place; what a job does lives
in its own module (``handlers/schedules.py``, ``integrations/relay/`` ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from engine.audit_chain import IdentifierHasher
from engine.consent_index import ConsentIndex
from engine.login_throttle import REGISTRATION_BACKOFF, Backoff, once_per
from engine.policy import PolicyHolder
from engine.services import EngineSettings, Services, utc_now
from handlers import (
    api_attachments,
    api_audit,
    api_consents,
    api_contacts,
    api_conversations,
    api_docs,
    api_identity,
    api_messaging,
    api_patients,
    api_policy,
    api_policy_changes,
    api_retention,
    api_rosters,
    console,
    metrics,
    schedules,
)
from handlers.api_messaging import messaging_key
from handlers.app_messaging import chat, escalation, messaging, webhook_processor
from handlers.keys import (
    accounts_key,
    audit_chain_key,
    audit_sealer_key,
    chat_key,
    clock_key,
    consent_index_key,
    consent_sync_key,
    database_key,
    endpoints_key,
    openapi_body_key,
    operations_key,
    policy_files_key,
    policy_key,
    policy_reloader_key,
    rejections_key,
    relay_key,
    services_key,
    sessions_key,
    settings_key,
    sms_rules_key,
    upload_limit_key,
)
from handlers.middleware import authenticate, request_context, security_headers
from handlers.proxies import forwarded_client
from handlers.ratelimit import add_limit_headers, rate_limit, upload_limit
from handlers.rejections import RejectionSummaries
from handlers.requests import route
from handlers.routing import Endpoint
from handlers.settings import Settings
from handlers.telemetry import Metrics, Operations
from integrations.audit_archive import AuditArchive
from integrations.audit_chain_keeper import ChainKeeper
from integrations.audit_sealer import AuditSealer
from integrations.consent_sync import ConsentSync
from integrations.db.identity import CachedAccountDirectory, SqlAccountDirectory
from integrations.db.migrate import head_revisions
from integrations.db.resources import DatabaseProbe, ensure_organization, is_unavailable, open_database
from integrations.effects.attachments import PostAttachmentExecutor
from integrations.effects.break_glass import BreakGlassAlertExecutor
from integrations.effects.channels import InviteMembersExecutor, RemoveMembersExecutor
from integrations.effects.executor import Executor
from integrations.effects.messages import PostMessageExecutor
from integrations.effects.recalls import RecallExecutor
from integrations.passwords import LoggingAccountNotifier, ZxcvbnPasswordStrength
from integrations.policy_edits import EditablePolicyDirectory
from integrations.policy_files import load_policy
from integrations.policy_reload import FilePolicyReloader, install_sighup, remove_sighup
from integrations.relay import TEXT_KINDS, OutboxRelay, Relays, RelaySettings
from integrations.relay.handoffs import OnCallHandoffs
from integrations.security import Argon2Passwords, JwtTokens

log = structlog.get_logger("caremsg.app")


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _database(app: web.Application) -> AsyncIterator[None]:
    """The database (integrations/db/resources.py), and the account directory that every bearer
    token's account is re-checked against."""
    settings = app[settings_key]
    db = settings.database
    async with open_database(
        db.url,
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        statement_timeout_ms=db.statement_timeout_ms,
    ) as database:
        app[database_key] = database
        app[sessions_key] = database.sessions
        app[accounts_key] = CachedAccountDirectory(
            SqlAccountDirectory(database.sessions), ttl=settings.auth.account_recheck_seconds
        )
        yield


#: How long start-up waits for the first full load of the consent index before giving up.
CONSENT_INDEX_START_TIMEOUT = 60.0


async def _consent_index(app: web.Application) -> AsyncIterator[None]:
    """The in-memory consent index, loaded before the first request and followed via LISTEN/NOTIFY."""
    index = ConsentIndex()
    sync = ConsentSync(index, app[settings_key].database.url, clock=app[clock_key])
    app[consent_index_key] = index
    app[consent_sync_key] = sync
    task = asyncio.create_task(sync.run(), name="consent-sync")
    try:
        async with asyncio.timeout(CONSENT_INDEX_START_TIMEOUT):  # never wait_for: see woken_or_after
            await sync.ready.wait()
    except TimeoutError:
        task.cancel()
        raise
    yield
    await _stop(task)


async def _policy(app: web.Application) -> AsyncIterator[None]:
    """The policy from policies/ (a broken one stops start-up; ``caremsg serve`` names each problem)."""
    app[policy_key] = PolicyHolder(load_policy(app[settings_key].policy.path()))
    yield


async def _live_policy(app: web.Application) -> AsyncIterator[None]:
    """Reload the policy on file change, SIGHUP, the admin API, or another instance's notice."""
    settings = app[settings_key]
    reloader = FilePolicyReloader(app[policy_key], settings.policy.path(), settings.database.url)
    app[policy_reloader_key] = reloader
    app[policy_files_key] = EditablePolicyDirectory(settings.policy.path(), reloader)
    tasks = [
        asyncio.create_task(reloader.watch(settings.policy.watch_interval_seconds), name="policy-watch"),
        asyncio.create_task(reloader.listen(), name="policy-listen"),
    ]
    sighup = settings.policy.reload_on_sighup and install_sighup(reloader)
    yield
    if sighup:
        remove_sighup()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _relay(app: web.Application) -> AsyncIterator[None]:
    """The outbox relays: chat effects and texts are claimed and delivered by relays of their own, each
    with its own rate budget, so a backlog of texts never holds chat posts up (integrations/relay/)."""
    outbox = app[settings_key].outbox
    relay_settings = RelaySettings(
        poll_interval=outbox.poll_interval_seconds,
        base_backoff=outbox.base_backoff_seconds,
        max_backoff=outbox.max_backoff_seconds,
        max_attempts=outbox.max_attempts,
        batch_size=outbox.batch_size,
        lease_seconds=outbox.lease_seconds,
        concurrency=outbox.concurrency,
    )
    executors: list[Executor[Any]] = [
        RemoveMembersExecutor(),
        InviteMembersExecutor(),
        BreakGlassAlertExecutor(),
        RecallExecutor(),
        # Message and file posts carry the 42 CFR 2.32 notice of the policy in force (reloads swap it).
        PostAttachmentExecutor(lambda: app[policy_key].current.part2_notice, app[clock_key]),
        PostMessageExecutor(lambda: app[policy_key].current.part2_notice, app[clock_key]),
        *app[messaging_key].outbox_kinds,
    ]
    sessions, gateway = app[sessions_key], app[chat_key]
    metrics = app[operations_key].metrics
    retried, refused_credentials = metrics.relay_retried, metrics.provider_credentials_rejected
    relay = Relays(
        [
            OutboxRelay(
                sessions,
                gateway,
                dataclasses.replace(relay_settings, skip_kinds=TEXT_KINDS),
                executors=executors,
                on_retry=retried,
                on_credentials_rejected=refused_credentials,
            ),
            OutboxRelay(
                sessions,
                gateway,
                dataclasses.replace(relay_settings, claim_kinds=TEXT_KINDS),
                executors=executors,
                on_retry=retried,
                on_credentials_rejected=refused_credentials,
            ),
        ]
    )
    app[relay_key] = relay
    task = asyncio.create_task(relay.run(), name="outbox-relay")
    # Conversations routed to a care team's on-call role change hands at shift boundaries; the
    # effects of a hand-off go out through this relay.
    handoffs = OnCallHandoffs(
        sessions, clock=app[clock_key], poll_interval=outbox.poll_interval_seconds, wake=relay.wake
    )
    handoff_task = asyncio.create_task(handoffs.run(), name="on-call-handoffs")
    yield
    await _stop(handoff_task)
    await _stop(task)


async def _services(app: web.Application) -> AsyncIterator[None]:
    """The engine's services: every workflow's ports, built from the resources started before."""
    settings = app[settings_key]
    database = app[database_key]
    auth = settings.auth
    app[services_key] = Services(
        uow=database.unit_of_work,
        send_uow=database.send_unit_of_work,
        patient_reads=database.patient_read_unit_of_work,
        policy=app[policy_key],
        clock=app[clock_key],
        passwords=Argon2Passwords(
            time_cost=auth.argon2_time_cost,
            memory_kib=auth.argon2_memory_kib,
            concurrency=auth.argon2_concurrency,
        ),
        tokens=_tokens(settings),
        delivery=app[relay_key],
        settings=EngineSettings(
            self_registration=auth.self_registration,
            default_organization=auth.default_organization,
            default_page_size=settings.api.default_page_size,
            max_page_size=settings.api.max_page_size,
            break_glass_minutes=settings.policy.break_glass_minutes,
            governing_organization=settings.policy.governing_organization or auth.default_organization,
            **_account_settings(settings),
        ),
        password_strength=ZxcvbnPasswordStrength(min_score=auth.password_min_score),
        notifier=LoggingAccountNotifier(),
        consents=app[consent_index_key],
        identifiers=IdentifierHasher(settings.audit.identifier_key.encode()),
        sms=app[sms_rules_key],
        on_decision=app[operations_key].metrics.observe_decision,
        on_sessions_ended=app[accounts_key].forget,
    )
    if settings.service.environment == "development" and auth.self_registration:
        # The development walkthrough registers into this organization straight away.
        await ensure_organization(database.sessions, auth.default_organization, self_registration=True)
    log.info(
        "app.started",
        policy_version=app[policy_key].current.version,
        environment=settings.service.environment,
    )
    yield


def _account_settings(settings: Settings) -> dict[str, Any]:
    """The accounts part of the engine's settings (login throttle, approval, password length)."""
    auth = settings.auth
    window = timedelta(minutes=auth.login_failure_window_minutes)
    base, most = auth.login_backoff_base_seconds, auth.login_backoff_max_seconds
    return {
        "require_approval": auth.approval_required(settings.service.environment),
        "password_min_length": auth.password_min_length,
        "account_backoff": Backoff(
            auth.login_account_free_failures, base, most, window, lock_after=auth.lockout_failures or None
        ),
        "address_backoff": Backoff(auth.login_address_free_failures, base, most, window),
        "registration_backoff": dataclasses.replace(
            REGISTRATION_BACKOFF, free_failures=auth.registration_source_free
        ),
        "notice_backoff": once_per(timedelta(minutes=auth.registration_notice_minutes)),
    }


def _tokens(settings: Settings) -> JwtTokens:
    auth = settings.auth
    return JwtTokens(
        auth.jwt_secret,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
        lifetime_seconds=auth.access_token_minutes * 60,
    )


# --- operations: /metrics, /health, /ready (handlers/metrics.py) ---------------------------------------


def _new_operations(settings: Settings, shared_metrics: str | None) -> Operations:
    service = settings.service
    return Operations(
        Metrics(shared_dir=shared_metrics),
        metrics_token=service.metrics_token,
        metrics_open=service.environment != "production",
        sealer_enabled=settings.audit.sealer_enabled,
        max_sealer_lag_seconds=service.ready_max_sealer_lag_seconds,
        expected_revisions=head_revisions(),
    )


async def _operations(app: web.Application) -> AsyncIterator[None]:
    """Hand the operations endpoints the resources they read, once those have started."""
    ops = app[operations_key]
    ops.probe = DatabaseProbe(app[database_key].engine)
    ops.policy, ops.consents = app[policy_key], app[consent_index_key]
    yield


async def _audit_sealer(app: web.Application) -> AsyncIterator[None]:
    """Hash-chain committed audit events in the background (integrations/audit_sealer.py): requests
    never wait on the chain. Safe with several instances; switched off by audit.sealer_enabled."""
    audit = app[settings_key].audit
    sealer = AuditSealer(
        app[database_key].engine, batch_size=audit.seal_batch_size, interval=audit.seal_interval_seconds
    )
    app[audit_sealer_key] = sealer
    task = asyncio.create_task(sealer.run(), name="audit-sealer") if audit.sealer_enabled else None
    yield
    if task is not None:
        await _stop(task)


async def _audit_chain(app: web.Application) -> AsyncIterator[None]:
    """The chain's status, anchors, exports and verification runs (for the console)."""
    audit = app[settings_key].audit
    keeper = ChainKeeper(
        AuditArchive(app[database_key].engine, seal_batch_size=audit.seal_batch_size), audit.signing_key
    )
    app[audit_chain_key] = keeper
    yield
    await keeper.close()


async def _rejection_summaries(app: web.Application) -> AsyncIterator[None]:
    """Refused tokens, audited as one summary per source and window (handlers/rejections.py)."""
    summaries = RejectionSummaries(
        lambda: app[services_key], window_seconds=app[settings_key].ratelimit.rejection_summary_seconds
    )
    app[rejections_key] = summaries
    task = asyncio.create_task(summaries.run(), name="rejection-summaries")
    yield
    await _stop(task)
    await summaries.flush()


PUBLIC_PATHS = (
    frozenset({"/api/openapi.json", api_docs.DOCS_ASSETS, "/api/docs/start.js"}) | metrics.PUBLIC_PATHS
)


def default_endpoints() -> list[Endpoint]:
    """Every endpoint the service serves (and documents in its OpenAPI document)."""
    return [
        *api_identity.ENDPOINTS,
        *api_consents.ENDPOINTS,
        *api_patients.ENDPOINTS,
        *api_conversations.ENDPOINTS,
        *api_attachments.ENDPOINTS,
        *api_policy.ENDPOINTS,
        *api_policy_changes.ENDPOINTS,
        *api_messaging.ENDPOINTS,
        *api_audit.ENDPOINTS,
        *api_contacts.ENDPOINTS,
        *api_rosters.ENDPOINTS,
        *api_retention.ENDPOINTS,
        *api_docs.ENDPOINTS,
        *metrics.ENDPOINTS,
    ]


def for_serving(app: web.Application) -> web.Application:
    """``app`` as a serving process runs it (``caremsg serve``, each worker of ``--workers``, and
    the benches that stand in for them): once everything has started, what the start built is moved
    out of the garbage collector's way (``gc.freeze``).

    What a start builds (the modules, SQLAlchemy's metadata, the policy, the pools: ~190,000
    objects) lives as long as the process, yet every full collection walked all of it: a pause of
    ~80 ms in the middle of requests, which every request in flight then waited out (the patient
    read bench's p99). Frozen, a full collection walks only what was made since. The price: a
    reference cycle among frozen objects is never collected, so what the start built and a policy
    reload later drops stays in memory (a policy's rules, once per reload).

    Tests leave it out: a test process starts hundreds of apps, and each would freeze the last
    one's leftovers."""
    app.on_startup.append(_freeze_heap)
    return app


async def _freeze_heap(app: web.Application) -> None:
    # After the cleanup contexts: aiohttp runs them as the first startup handler.
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "serve.heap_frozen", objects=gc.get_freeze_count(), seconds=round(time.perf_counter() - started, 3)
    )


def create_app(
    settings: Settings,
    *,
    endpoints: list[Endpoint] | None = None,
    clock: Callable[[], datetime] = utc_now,
    shared_metrics: str | None = None,
    shared_rate_limits: str | None = None,
) -> web.Application:
    """The aiohttp application for these settings; resources start with the app and stop with it.

    ``clock`` is the app's wall clock: the engine's "now" (consent expiry, break-glass windows, what
    a listing calls expired) and the console's session times. Tests move it instead of waiting.
    ``shared_metrics`` is the metrics directory the ``--workers`` of one service share (see
    handlers/telemetry.py); None: the app's metrics are its own. ``shared_rate_limits`` likewise
    holds the rate limits' buckets (handlers/ratelimit.py); None: the app's buckets are its own."""
    if endpoints is None:
        endpoints = default_endpoints()
    # The console (/console/) authenticates by its own session cookie, not a bearer token.
    public = PUBLIC_PATHS | console.PATHS | {ep.path for ep in endpoints if ep.public}
    # Without trusted proxies every peer is its client (handlers/proxies.py): no middleware to ask.
    proxies = settings.service.trusted_proxies
    app = web.Application(
        middlewares=[
            security_headers(
                hsts_max_age=settings.service.hsts_max_age_seconds,
                trust_forwarded_proto=settings.service.trust_forwarded_proto,
                trusted_proxies=proxies,
            ),
            request_context(is_unavailable),
            *([forwarded_client(proxies)] if proxies else []),
            rate_limit(
                settings.ratelimit,
                shared=shared_rate_limits,
                signed=frozenset(ep.path for ep in endpoints if ep.security is not None),
            ),
            # The directory needs the database, which starts with the app: look it up per request.
            authenticate(_tokens(settings), lambda: app[accounts_key], frozenset(public)),
        ],
        client_max_size=settings.api.max_body_bytes,
    )
    app[settings_key] = settings
    app[clock_key] = clock
    app[endpoints_key] = endpoints
    app[openapi_body_key] = {}
    app[operations_key] = _new_operations(settings, shared_metrics)
    app[upload_limit_key] = upload_limit(settings.ratelimit, shared=shared_rate_limits)
    app.on_response_prepare.append(add_limit_headers)
    app.cleanup_ctx.extend(
        [
            _database,
            chat,
            _consent_index,
            _policy,
            _live_policy,
            messaging,
            _relay,
            _services,
            escalation,
            webhook_processor,
            _audit_sealer,
            schedules.consent_expiry,
            schedules.retention_sweep,
            _audit_chain,
            _rejection_summaries,
            _operations,
        ]
    )
    for ep in endpoints:
        app.router.add_route(ep.method, ep.path, route(ep), name=ep.operation_id)
    api_docs.add_asset_routes(app)
    console.setup(app)
    return app
