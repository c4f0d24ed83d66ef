"""The composition root: ``create_app(settings)`` builds every resource inside ``cleanup_ctx``.

Nothing is built at import time. Resources, in start order: the database engine, the chat gateway
(Sendbird, or the loopback emulator in development), the policy, the services and the outbox relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

import httpx
import structlog
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from engine.policy import PolicyHolder
from engine.ports import ChatGateway
from engine.services import EngineSettings, Services
from handlers import api, api_audit, api_messaging, api_policy
from handlers.keys import endpoints_key, policy_key, services_key, settings_key
from handlers.middleware import authenticate, request_context
from handlers.openapi import build_openapi
from handlers.routing import Endpoint
from handlers.settings import Settings
from integrations.db.repositories import SqlAccountDirectory
from integrations.db.uow import SqlUnitOfWork
from integrations.policy_files import load_policy
from integrations.relay import OutboxRelay, RelaySettings
from integrations.security import Argon2Passwords, JwtTokens
from integrations.sendbird import RateLimits, SendbirdChatGateway, SendbirdClient
from integrations.sendbird_emulator import RunningEmulator, start_emulator

log = structlog.get_logger("caremsg.app")

engine_key: web.AppKey[AsyncEngine] = web.AppKey("engine_key", AsyncEngine)
sessions_key: web.AppKey[async_sessionmaker[AsyncSession]] = web.AppKey("sessions_key")
chat_key: web.AppKey[ChatGateway] = web.AppKey("chat_key")
relay_key: web.AppKey[OutboxRelay] = web.AppKey("relay_key", OutboxRelay)
emulator_key: web.AppKey[RunningEmulator] = web.AppKey("emulator_key", RunningEmulator)


def _version() -> str:
    try:
        return version("caremsg")
    except PackageNotFoundError:
        return "0.0.0"


def create_engine(settings: Settings) -> AsyncEngine:
    db = settings.database
    if not db.url:
        raise ValueError("database.url is empty: resolve the embedded server first (caremsg serve does)")
    return create_async_engine(
        db.url,
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        pool_pre_ping=True,  # a PostgreSQL restart leaves dead pooled connections; ping before use
        pool_recycle=1800,
        connect_args={"server_settings": {"statement_timeout": str(db.statement_timeout_ms)}, "timeout": 5},
    )


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[settings_key])
    app[engine_key] = engine
    app[sessions_key] = async_sessionmaker(engine, expire_on_commit=False)
    yield
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
    holder = PolicyHolder(load_policy(settings.policy.path()))
    app[policy_key] = holder
    outbox = settings.outbox
    relay = OutboxRelay(
        sessions,
        app[chat_key],
        RelaySettings(
            poll_interval=outbox.poll_interval_seconds,
            base_backoff=outbox.base_backoff_seconds,
            max_backoff=outbox.max_backoff_seconds,
            max_attempts=outbox.max_attempts,
            batch_size=outbox.batch_size,
        ),
    )
    app[relay_key] = relay
    auth = settings.auth
    app[services_key] = Services(
        uow=lambda: SqlUnitOfWork(sessions),
        policy=holder,
        passwords=Argon2Passwords(),
        tokens=_tokens(settings),
        delivery=relay,
        settings=EngineSettings(
            self_registration=auth.self_registration,
            default_organization=auth.default_organization,
            default_page_size=settings.api.default_page_size,
            max_page_size=settings.api.max_page_size,
        ),
    )
    if settings.service.environment == "development" and auth.self_registration:
        await _ensure_default_organization(sessions, auth.default_organization)
    task = asyncio.create_task(relay.run(), name="outbox-relay")
    log.info("app.started", policy_version=holder.current.version, environment=settings.service.environment)
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


def _tokens(settings: Settings) -> JwtTokens:
    auth = settings.auth
    return JwtTokens(
        auth.jwt_secret,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
        lifetime_seconds=auth.access_token_minutes * 60,
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app[endpoints_key], version=_version()))


async def health(request: web.Request) -> web.Response:
    """Liveness plus a database round trip: 503 while PostgreSQL is unreachable."""
    try:
        async with request.app[engine_key].connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ok", "policyVersion": request.app[policy_key].current.version})


PUBLIC_PATHS = frozenset({"/health", "/api/openapi.json"})


def create_app(settings: Settings, *, endpoints: list[Endpoint] | None = None) -> web.Application:
    """The aiohttp application for these settings; resources start with the app and stop with it."""
    if endpoints is None:
        endpoints = [*api.ENDPOINTS, *api_policy.ENDPOINTS, *api_messaging.ENDPOINTS, *api_audit.ENDPOINTS]
    public = PUBLIC_PATHS | {ep.path for ep in endpoints if ep.public}
    app = web.Application(
        middlewares=[
            request_context,
            # The directory needs the database, which starts with the app: look it up per request.
            authenticate(
                _tokens(settings), lambda: SqlAccountDirectory(app[sessions_key]), frozenset(public)
            ),
        ],
        client_max_size=settings.api.max_body_bytes,
    )
    app[settings_key] = settings
    app[endpoints_key] = endpoints
    app.cleanup_ctx.extend([_database, _chat, _services])
    for ep in endpoints:
        app.router.add_route(ep.method, ep.path, ep.aiohttp_handler(), name=ep.operation_id)
    app.router.add_get("/api/openapi.json", openapi, name="openapi")
    app.router.add_get("/health", health, name="health")
    return app
