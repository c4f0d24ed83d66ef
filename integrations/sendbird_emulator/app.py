"""The emulator app: request log and faults in a middleware, the resources' routes, and serving it."""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from integrations.sendbird import (
    INVALID_TOKEN_CODE,
    RATE_LIMITED_CODE,
    RETRY_AFTER_HEADER,
)
from integrations.sendbird_emulator.business_messaging import BusinessMessagingApi
from integrations.sendbird_emulator.channels import ChannelsApi
from integrations.sendbird_emulator.faults import FaultInjector
from integrations.sendbird_emulator.messages import MessagesApi
from integrations.sendbird_emulator.metadata import MetadataApi
from integrations.sendbird_emulator.state import (
    DEDUP_MODES,
    DedupMode,
    EmulatorState,
    ReceivedRequest,
    system_clock_ms,
)
from integrations.sendbird_emulator.users import UsersApi
from integrations.sendbird_emulator.webhooks import WebhookSender
from integrations.sendbird_emulator.wire import INTERNAL_ERROR, ApiError, error_response

_log = structlog.get_logger("integrations.sendbird_emulator")


emulator_state_key = web.AppKey("emulator_state", EmulatorState)
webhook_sender_key = web.AppKey("webhook_sender", WebhookSender)


def _api_middleware(state: EmulatorState) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(("/v3/", "/v1/")):
            return await handler(request)
        state.received.append(
            ReceivedRequest(request.method, request.path, dict(request.query), await _logged_body(request))
        )
        fault = state.faults.take(request.method)
        if fault is not None:
            _log.info(
                "sendbird_emulator.fault_applied", kind=fault.kind, path=request.path, development_only=True
            )
            if fault.kind == "error":
                return error_response(INTERNAL_ERROR, "Internal server error.", status=fault.status)
            if fault.kind == "rate_limit":
                return error_response(
                    RATE_LIMITED_CODE,
                    "Too many requests.",
                    status=429,
                    headers={RETRY_AFTER_HEADER: f"{fault.retry_after:g}"},
                )
            if fault.kind == "hang":
                await state.faults.hang(fault.hang_seconds)
        response = await _authorised(request, handler, state.api_token)
        if fault is not None and fault.kind == "drop" and request.transport is not None:
            # The effect has happened; closing now means the client never learns it did.
            request.transport.close()
        return response

    return middleware


async def _authorised(request: web.Request, handler: Handler, api_token: str) -> web.StreamResponse:
    given = request.headers.get("Api-Token", "")
    if not hmac.compare_digest(given.encode(), api_token.encode()):
        return error_response(INVALID_TOKEN_CODE, "Invalid API token.", status=401)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.code, exc.message, status=exc.status)


async def _logged_body(request: web.Request) -> Any:
    raw = await request.read()  # aiohttp keeps the bytes, so the handler can read them again
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


async def _faults_admin(request: web.Request) -> web.Response:
    """``GET`` lists the active faults, ``POST`` adds one (see ``add_from_json``), ``DELETE`` clears them."""
    faults = request.app[emulator_state_key].faults
    if request.method == "POST":
        try:
            fault = faults.add_from_json(await request.json())
        except ValueError as exc:  # includes a body that is not JSON
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"fault": dataclasses.asdict(fault)}, status=201)
    if request.method == "DELETE":
        faults.clear()
    return web.json_response({"faults": [dataclasses.asdict(f) for f in faults.pending()]})


def create_emulator_app(
    *,
    app_id: str,
    api_token: str,
    webhook_url: str | None = None,
    include_members: bool = False,
    webhook_retry_delay: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    wall_clock_ms: Callable[[], int] = system_clock_ms,
    dedup_mode: DedupMode = "original",
) -> web.Application:
    """A fresh emulator app with empty state, answering ``/v3/...`` for ``app_id`` and ``api_token``.

    ``clock`` drives fault time windows; ``wall_clock_ms`` stamps ``created_at``. With
    ``webhook_url`` set, message sends and mark-as-read post signed events there.
    """
    if not api_token:
        raise ValueError("the emulator needs an api_token to check and to sign webhooks with")
    if dedup_mode not in DEDUP_MODES:
        raise ValueError(f"dedup_mode must be one of {DEDUP_MODES}")
    state = EmulatorState(
        app_id, api_token, FaultInjector(clock), wall_clock_ms=wall_clock_ms, dedup_mode=dedup_mode
    )
    webhooks = WebhookSender(
        state, webhook_url, include_members=include_members, retry_delay=webhook_retry_delay
    )
    app = web.Application(middlewares=[_api_middleware(state)])
    app[emulator_state_key] = state
    app[webhook_sender_key] = webhooks
    for resource in (UsersApi, ChannelsApi, MessagesApi, MetadataApi, BusinessMessagingApi):
        app.add_routes(resource(state, webhooks).routes())
    for method in ("GET", "POST", "DELETE"):
        app.router.add_route(method, "/_emulator/faults", _faults_admin)

    async def webhook_session(app: web.Application) -> AsyncIterator[None]:
        await webhooks.start()
        yield
        await webhooks.close()

    app.cleanup_ctx.append(webhook_session)
    return app


@dataclass
class RunningEmulator:
    """An emulator serving on loopback. ``base_url`` is the origin; the client adds ``/v3``."""

    base_url: str
    state: EmulatorState
    _runner: web.AppRunner = field(repr=False)

    async def drain_webhooks(self) -> None:
        """Wait until every webhook started so far was delivered or given up."""
        await self._runner.app[webhook_sender_key].drain()

    def set_webhook_urls(self, chat_url: str | None) -> None:
        """Where chat events (signed, §7) go.

        Business Messaging has no inbound SMS event (§8), so this emulator plays no inbound SMS:
        replies and keywords come from an SMS provider that documents them (the Twilio emulator).
        """
        self._runner.app[webhook_sender_key].set_url(chat_url)

    async def close(self) -> None:
        """Stop serving: hung requests are released, webhooks still in flight are abandoned."""
        self.state.faults.release_hangs()
        await self._runner.cleanup()
        _log.info("sendbird_emulator.stopped", base_url=self.base_url, development_only=True)


async def start_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    app_id: str = "emulator",
    api_token: str,
    webhook_url: str | None = None,
    include_members: bool = False,
    webhook_retry_delay: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    wall_clock_ms: Callable[[], int] = system_clock_ms,
    dedup_mode: DedupMode = "original",
) -> RunningEmulator:
    """Serve a new emulator on ``host`` (loopback only, else ValueError); ``port`` 0 picks a free port."""
    if not is_loopback_host(host):
        raise ValueError("the emulator binds loopback addresses only")
    app = create_emulator_app(
        app_id=app_id,
        api_token=api_token,
        webhook_url=webhook_url,
        include_members=include_members,
        webhook_retry_delay=webhook_retry_delay,
        clock=clock,
        wall_clock_ms=wall_clock_ms,
        dedup_mode=dedup_mode,
    )
    # Hung requests are released on close, so a short shutdown grace is enough.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    url_host = f"[{host}]" if ":" in host else host
    running = RunningEmulator(f"http://{url_host}:{bound_port}", app[emulator_state_key], runner)
    _log.info(
        "sendbird_emulator.started",
        base_url=running.base_url,
        app_id=app_id,
        webhooks=webhook_url is not None,
        development_only=True,
    )
    return running


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: where the emulators agree to listen."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
