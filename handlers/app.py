"""The composition root: ``create_app(settings)`` builds every resource inside ``cleanup_ctx``.

Nothing is built at import time. Resources, in start order: the database engine, the chat gateway
(Sendbird, or the loopback emulator in development), the policy, the services and the outbox relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import structlog
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from engine.audit_chain import IdentifierHasher
from engine.consent_index import ConsentIndex
from engine.login_throttle import Backoff
from engine.policy import PolicyHolder
from engine.ports import ChatGateway, SmsGateway
from engine.services import EngineSettings, Services
from engine.sms import SmsRules
from handlers import api, api_audit, api_contacts, api_docs, api_messaging, api_policy, metrics
from handlers.api_messaging import MessagingResources, messaging_key
from handlers.api_policy import consent_index_key, consent_sync_key, policy_reloader_key
from handlers.keys import (
    endpoints_key,
    operations_key,
    policy_key,
    rejections_key,
    services_key,
    settings_key,
)
from handlers.logs import show_emulator_credentials
from handlers.metrics import Metrics, Operations
from handlers.middleware import authenticate, request_context, security_headers
from handlers.ratelimit import add_limit_headers, rate_limit
from handlers.rejections import RejectionSummaries
from handlers.routing import Endpoint
from handlers.settings import Settings
from integrations.audit_sealer import AuditSealer
from integrations.break_glass_alerts import NotifyBreakGlass
from integrations.consent_sync import ConsentSync, RemoveMembers, asyncpg_connect_args
from integrations.db.migrate import head_revisions
from integrations.db.repositories import CachedAccountDirectory, SqlAccountDirectory
from integrations.db.send_uow import PgSendUnitOfWork, SendPool, create_send_pool
from integrations.db.uow import SqlUnitOfWork
from integrations.idempotency import IdempotencyStore
from integrations.passwords import LoggingAccountNotifier, ZxcvbnPasswordStrength
from integrations.policy_files import load_policy
from integrations.policy_reload import FilePolicyReloader, install_sighup, remove_sighup
from integrations.relay import TEXT_KINDS, OutboxKind, OutboxRelay, Relays, RelaySettings
from integrations.security import Argon2Passwords, JwtTokens
from integrations.sendbird import RateLimits, SendbirdChatGateway, SendbirdClient
from integrations.sendbird_emulator import RunningEmulator, start_emulator
from integrations.sms import PostSmsReply, SendbirdSmsGateway, SendSms
from integrations.twilio import TwilioSmsGateway, TwilioWebhookCheck
from integrations.twilio_emulator import RunningTwilioEmulator, start_twilio_emulator
from integrations.webhooks import WebhookProcessor

log = structlog.get_logger("caremsg.app")

engine_key: web.AppKey[AsyncEngine] = web.AppKey("engine_key", AsyncEngine)
sessions_key: web.AppKey[async_sessionmaker[AsyncSession]] = web.AppKey("sessions_key")
send_pool_key: web.AppKey[SendPool] = web.AppKey("send_pool_key", SendPool)
accounts_key: web.AppKey[CachedAccountDirectory] = web.AppKey("accounts_key", CachedAccountDirectory)
chat_key: web.AppKey[ChatGateway] = web.AppKey("chat_key")
relay_key: web.AppKey[Relays] = web.AppKey("relay_key", Relays)
emulator_key: web.AppKey[RunningEmulator] = web.AppKey("emulator_key", RunningEmulator)
twilio_emulator_key: web.AppKey[RunningTwilioEmulator] = web.AppKey(
    "twilio_emulator_key", RunningTwilioEmulator
)


def create_engine(settings: Settings) -> AsyncEngine:
    db = settings.database
    if not db.url:
        raise ValueError("database.url is empty: resolve the embedded server first (caremsg serve does)")
    return create_async_engine(
        db.url,
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        # No pre-ping (a round trip per checkout): a connection a PostgreSQL restart killed fails its
        # request with 503, and SQLAlchemy then invalidates the whole pool, so the next one works.
        pool_recycle=1800,
        connect_args={"server_settings": {"statement_timeout": str(db.statement_timeout_ms)}, "timeout": 5},
    )


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[settings_key])
    app[engine_key] = engine
    app[sessions_key] = async_sessionmaker(engine, expire_on_commit=False)
    app[accounts_key] = CachedAccountDirectory(
        SqlAccountDirectory(app[sessions_key]), ttl=app[settings_key].auth.account_recheck_seconds
    )
    db = app[settings_key].database
    # The send path's own asyncpg pool (integrations/db/send_uow.py): no SQLAlchemy on the busiest path.
    app[send_pool_key] = await create_send_pool(
        asyncpg_connect_args(db.url), max_size=db.pool_size, statement_timeout_ms=db.statement_timeout_ms
    )
    try:
        yield
    finally:
        await app[send_pool_key].close()
        await engine.dispose()


async def _chat(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key].sendbird
    emulator = None
    if settings.use_emulator:
        # The settings refuse this in production; here it is the development and test default.
        token = secrets.token_hex(20)
        emulator = await start_emulator(api_token=token)
        base_url, api_token = emulator.base_url, token
        app[emulator_key] = emulator
        log.warning("sendbird.emulator_in_use", base_url=base_url, development_only=True)
        show_emulator_credentials(
            app[settings_key].service.environment,
            base_url=base_url,
            app_id=emulator.state.app_id,
            api_token=token,
        )
    else:
        base_url, api_token = settings.resolved_base_url, settings.api_token
    async with httpx.AsyncClient() as http:
        client = SendbirdClient(
            http,
            base_url=base_url,
            api_token=api_token,
            timeout=settings.timeout_seconds,
            rate_limits=RateLimits(
                get_per_second=settings.get_per_second, write_per_second=settings.write_per_second
            ),
        )
        app[chat_key] = SendbirdChatGateway(client)
        try:
            yield
        finally:
            if emulator is not None:
                await emulator.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    sessions = app[sessions_key]
    send_pool = app[send_pool_key]
    holder = PolicyHolder(load_policy(settings.policy.path()))
    app[policy_key] = holder
    outbox = settings.outbox
    relay_settings = RelaySettings(
        poll_interval=outbox.poll_interval_seconds,
        base_backoff=outbox.base_backoff_seconds,
        max_backoff=outbox.max_backoff_seconds,
        max_attempts=outbox.max_attempts,
        batch_size=outbox.batch_size,
        lease_seconds=outbox.lease_seconds,
        concurrency=outbox.concurrency,
    )
    kinds: list[OutboxKind] = [RemoveMembers(), NotifyBreakGlass(), *app[messaging_key].outbox_kinds]
    # Chat effects and texts are claimed and delivered by relays of their own, each with its own rate
    # budget, so a backlog of texts never holds chat posts up (integrations/relay.py).
    relay = Relays(
        [
            OutboxRelay(
                sessions,
                app[chat_key],
                dataclasses.replace(relay_settings, skip_kinds=TEXT_KINDS),
                kinds=kinds,
            ),
            OutboxRelay(
                sessions,
                app[chat_key],
                dataclasses.replace(relay_settings, claim_kinds=TEXT_KINDS),
                kinds=kinds,
            ),
        ]
    )
    app[relay_key] = relay
    auth = settings.auth
    # Workflows enter the general pool in arrival order, at most as many at once as it has
    # connections (SqlUnitOfWork), so they seldom wait in the pool's own, unfair queue.
    uow_gate = asyncio.Semaphore(settings.database.pool_size + settings.database.max_overflow)
    app[services_key] = Services(
        uow=lambda: SqlUnitOfWork(sessions, gate=uow_gate),
        send_uow=lambda: PgSendUnitOfWork(send_pool),
        policy=holder,
        passwords=Argon2Passwords(time_cost=auth.argon2_time_cost, memory_kib=auth.argon2_memory_kib),
        tokens=_tokens(settings),
        delivery=relay,
        settings=EngineSettings(
            self_registration=auth.self_registration,
            default_organization=auth.default_organization,
            default_page_size=settings.api.default_page_size,
            max_page_size=settings.api.max_page_size,
            break_glass_minutes=settings.policy.break_glass_minutes,
            **_account_settings(settings),
        ),
        password_strength=ZxcvbnPasswordStrength(min_score=auth.password_min_score),
        notifier=LoggingAccountNotifier(),
        consents=app[consent_index_key],
        identifiers=IdentifierHasher(settings.audit.identifier_key.encode()),
        sms=app[sms_rules_key],
        on_decision=app[operations_key].metrics.observe_decision,
    )
    if settings.service.environment == "development" and auth.self_registration:
        await _ensure_default_organization(sessions, auth.default_organization)
    task = asyncio.create_task(relay.run(), name="outbox-relay")
    log.info("app.started", policy_version=holder.current.version, environment=settings.service.environment)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- consent index and live policy (issue 4) -----------------------------------------------------

#: How long start-up waits for the first full load of the consent index before giving up.
CONSENT_INDEX_START_TIMEOUT = 60.0


async def _consent_index(app: web.Application) -> AsyncIterator[None]:
    """The in-memory consent index, loaded before the first request and followed via LISTEN/NOTIFY."""
    index = ConsentIndex()
    sync = ConsentSync(index, app[settings_key].database.url)
    app[consent_index_key] = index
    app[consent_sync_key] = sync
    task = asyncio.create_task(sync.run(), name="consent-sync")
    try:
        await asyncio.wait_for(sync.ready.wait(), CONSENT_INDEX_START_TIMEOUT)
    except TimeoutError:
        task.cancel()
        raise
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _live_policy(app: web.Application) -> AsyncIterator[None]:
    """Reload the policy on file change, SIGHUP, the admin API, or another instance's notice."""
    settings = app[settings_key]
    reloader = FilePolicyReloader(app[policy_key], settings.policy.path(), settings.database.url)
    app[policy_reloader_key] = reloader
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


# --- messaging: SMS, idempotency keys, webhooks (issue 3) -----------------------------------------

sms_rules_key: web.AppKey[SmsRules] = web.AppKey("sms_rules_key", SmsRules)


async def _messaging(app: web.Application) -> AsyncIterator[None]:
    """The SMS gateway and its outbox kinds, the idempotency store, the webhook signing keys.

    ``messaging.sms_provider`` picks the SMS adapter: Twilio (two-way; its emulator plays the carrier
    in development) or Sendbird Business Messaging (outbound only: no text goes out unless
    ``messaging.accept_outbound_only_sms``). With the Sendbird emulator, its webhooks are pointed at
    this service's own ``/api/webhooks/sendbird`` (``messaging.webhook_base_url``, else host and port).
    """
    settings = app[settings_key]
    m = settings.messaging
    emulator = app.get(emulator_key)
    # Which compliance groups get full text is policy (policies/sms.toml, in the Policy itself).
    rules = SmsRules(
        notification_text=m.sms_notification_text,
        help_text=m.sms_help_text,
        stop_text=m.sms_stop_text,
        start_text=m.sms_start_text,
    )
    app[sms_rules_key] = rules
    base = settings.webhook_base_url()
    if emulator is not None:
        webhook_token = emulator.state.api_token
        emulator.set_webhook_urls(f"{base}/api/webhooks/sendbird")
    else:
        webhook_token = settings.sendbird.webhook_token
    twilio_emulator = None
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient())
        gateway: SmsGateway
        twilio_check = None
        if m.sms_provider == "twilio":
            sid, token, sender, service, twilio_base = (
                m.twilio_account_sid,
                m.twilio_auth_token,
                m.twilio_from_number,
                m.twilio_messaging_service_sid,
                m.twilio_base_url,
            )
            if m.use_twilio_emulator:
                # The settings refuse this in production; here it is the development and test default.
                twilio_emulator = await start_twilio_emulator()
                stack.push_async_callback(twilio_emulator.close)
                twilio_emulator.set_webhook_url(f"{base}/api/webhooks/twilio")
                app[twilio_emulator_key] = twilio_emulator
                state = twilio_emulator.state
                sid, token, service, twilio_base = (
                    state.account_sid,
                    state.auth_token,
                    state.messaging_service_sid,
                    twilio_emulator.base_url,
                )
                # Its credentials are random, development-only values: shown so a developer can sign
                # an incoming-message webhook by hand (integrations.twilio.sign_request).
                log.warning(
                    "twilio.emulator_in_use",
                    base_url=twilio_base,
                    account_sid=sid,
                    auth_token=token,
                    development_only=True,
                )
            gateway = TwilioSmsGateway(
                http,
                account_sid=sid,
                auth_token=token,
                from_number=sender,
                messaging_service_sid=service,
                base_url=twilio_base,
                timeout=settings.sendbird.timeout_seconds,
                per_second=m.sms_per_second,
            )
            twilio_check = TwilioWebhookCheck(sid, token, m.twilio_webhook_url)
        else:
            if emulator is not None:
                # The Sendbird emulator plays Business Messaging too; its one token stands in for both.
                bm_base, bm_token = emulator.base_url, emulator.state.api_token
            elif not m.bm_api_token:
                raise ValueError("messaging.bm_api_token: set the Business Messaging token for SMS")
            else:
                bm_base = (
                    m.bm_base_url or f"https://api-{settings.sendbird.app_id}.notifications.sendbird.com"
                )
                bm_token = m.bm_api_token
            gateway = SendbirdSmsGateway(
                http,
                base_url=bm_base,
                api_token=bm_token,
                template_key=m.sms_template_key,
                send_path=m.bm_send_path,
                timeout=settings.sendbird.timeout_seconds,
                per_second=m.sms_per_second,
            )
            # sendbird-api.md §8: Business Messaging has no inbound SMS event.
            log.warning(
                "sms.outbound_only",
                provider=m.sms_provider,
                detail="SMS replies and STOP/START/HELP cannot arrive through this provider",
                texts_sent=m.accept_outbound_only_sms,
            )
        sessions = app[sessions_key]
        app[messaging_key] = MessagingResources(
            sessions=sessions,
            idempotency=IdempotencyStore(
                sessions,
                ttl=timedelta(hours=m.idempotency_ttl_hours),
                lease=timedelta(seconds=m.idempotency_lease_seconds),
            ),
            webhook_token=webhook_token,
            # The policy in force at each text (built later, by _services; reloads swap it).
            outbox_kinds=[
                SendSms(
                    gateway,
                    rules,
                    lambda: app[policy_key].current,
                    two_way=twilio_check is not None,
                    accept_outbound_only=m.accept_outbound_only_sms,
                ),
                PostSmsReply(),
            ],
            twilio=twilio_check,
        )
        yield


async def _webhook_processor(app: web.Application) -> AsyncIterator[None]:
    """Process stored webhook events in the background (after the services exist)."""
    resources = app[messaging_key]
    processor = WebhookProcessor(
        resources.sessions,
        app[services_key],
        poll_interval=app[settings_key].messaging.webhook_poll_interval_seconds,
    )
    resources.processor = processor
    task = asyncio.create_task(processor.run(), name="webhook-processor")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _ensure_default_organization(sessions: async_sessionmaker[AsyncSession], name: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO organizations (name, self_registration) VALUES (:name, true)"
                " ON CONFLICT (name) DO NOTHING"
            ),
            {"name": name},
        )


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


def _new_operations(settings: Settings) -> Operations:
    service = settings.service
    return Operations(
        Metrics(),
        metrics_token=service.metrics_token,
        metrics_open=service.environment != "production",
        sealer_enabled=settings.audit.sealer_enabled,
        max_sealer_lag_seconds=service.ready_max_sealer_lag_seconds,
        expected_revisions=head_revisions(),
    )


async def _operations(app: web.Application) -> AsyncIterator[None]:
    """Hand the operations endpoints the resources they read, once those have started."""
    ops = app[operations_key]
    ops.engine, ops.policy, ops.consents = app[engine_key], app[policy_key], app[consent_index_key]
    relay = app[relay_key]
    ops.metrics.count_from(
        "caremsg_relay_retries", "Outbox deliveries put back for another attempt.", lambda: relay.retries
    )
    yield


# --- the audit chain sealer (issue 5) --------------------------------------------------------------

audit_sealer_key: web.AppKey[AuditSealer] = web.AppKey("audit_sealer_key", AuditSealer)


async def _audit_sealer(app: web.Application) -> AsyncIterator[None]:
    """Hash-chain committed audit events in the background (integrations/audit_sealer.py): requests
    never wait on the chain. Safe with several instances; switched off by audit.sealer_enabled."""
    audit = app[settings_key].audit
    sealer = AuditSealer(
        app[engine_key], batch_size=audit.seal_batch_size, interval=audit.seal_interval_seconds
    )
    app[audit_sealer_key] = sealer
    task = asyncio.create_task(sealer.run(), name="audit-sealer") if audit.sealer_enabled else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _rejection_summaries(app: web.Application) -> AsyncIterator[None]:
    """Refused tokens, audited as one summary per source and window (handlers/rejections.py)."""
    summaries = RejectionSummaries(
        lambda: app[services_key], window_seconds=app[settings_key].ratelimit.rejection_summary_seconds
    )
    app[rejections_key] = summaries
    task = asyncio.create_task(summaries.run(), name="rejection-summaries")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await summaries.flush()


PUBLIC_PATHS = (
    frozenset({"/api/openapi.json", api_docs.DOCS_ASSETS, "/api/docs/start.js"}) | metrics.PUBLIC_PATHS
)


def default_endpoints() -> list[Endpoint]:
    """Every endpoint the service serves (and documents in its OpenAPI document)."""
    return [
        *api.ENDPOINTS,
        *api_policy.ENDPOINTS,
        *api_messaging.ENDPOINTS,
        *api_audit.ENDPOINTS,
        *api_contacts.ENDPOINTS,
        *api_docs.ENDPOINTS,
        *metrics.ENDPOINTS,
    ]


def create_app(settings: Settings, *, endpoints: list[Endpoint] | None = None) -> web.Application:
    """The aiohttp application for these settings; resources start with the app and stop with it."""
    if endpoints is None:
        endpoints = default_endpoints()
    public = PUBLIC_PATHS | {ep.path for ep in endpoints if ep.public}
    app = web.Application(
        middlewares=[
            security_headers(
                hsts_max_age=settings.service.hsts_max_age_seconds,
                trust_forwarded_proto=settings.service.trust_forwarded_proto,
            ),
            request_context,
            rate_limit(settings.ratelimit),
            # The directory needs the database, which starts with the app: look it up per request.
            authenticate(_tokens(settings), lambda: app[accounts_key], frozenset(public)),
        ],
        client_max_size=settings.api.max_body_bytes,
    )
    app[settings_key] = settings
    app[endpoints_key] = endpoints
    app[operations_key] = _new_operations(settings)
    app.on_response_prepare.append(add_limit_headers)
    app.cleanup_ctx.extend([_database, _chat, _consent_index, _messaging, _services, _live_policy])
    app.cleanup_ctx.append(_webhook_processor)
    app.cleanup_ctx.append(_audit_sealer)
    app.cleanup_ctx.append(_rejection_summaries)
    app.cleanup_ctx.append(_operations)
    for ep in endpoints:
        app.router.add_route(ep.method, ep.path, ep.aiohttp_handler(), name=ep.operation_id)
    api_docs.add_asset_routes(app)
    return app
