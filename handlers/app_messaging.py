"""The composition root's messaging part: the chat gateway (Sendbird, or its emulator in
development), the SMS gateway (Twilio or Sendbird Business Messaging, or the Twilio emulator), the
resources the messaging endpoints use, and the webhook processor. ``handlers/app.py`` puts these
cleanup contexts in its start order; each builds one resource and stores it under its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from aiohttp import web

from engine.inbound import handle_inbound
from engine.ports import SmsGateway
from engine.sms import SmsRules
from handlers.api_messaging import MessagingResources, messaging_key
from handlers.keys import (
    chat_key,
    clock_key,
    emulator_key,
    escalation_key,
    policy_key,
    relay_key,
    services_key,
    sessions_key,
    settings_key,
    sms_rules_key,
    twilio_emulator_key,
)
from handlers.logs import show_emulator_credentials
from integrations.effects.sms_replies import DeleteSmsReplyExecutor, PostSmsReplyExecutor
from integrations.effects.texts import TextExecutor
from integrations.effects.urgent import UrgentAlertExecutor
from integrations.escalation import EscalationScheduler
from integrations.http_clients import http_client
from integrations.idempotency import IdempotencyStore
from integrations.sendbird import RateLimits, SendbirdChatGateway, SendbirdClient
from integrations.sendbird_emulator import start_emulator
from integrations.sms import SendbirdSmsGateway
from integrations.twilio import TwilioSmsGateway, TwilioWebhookCheck
from integrations.twilio_emulator import start_twilio_emulator
from integrations.webhooks import WebhookInbox, WebhookProcessor

log = structlog.get_logger("caremsg.app")


async def chat(app: web.Application) -> AsyncIterator[None]:
    """The chat gateway: Sendbird over one httpx client, or the loopback emulator when configured."""
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
    async with http_client() as http:
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


async def messaging(app: web.Application) -> AsyncIterator[None]:
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
        http = await stack.enter_async_context(http_client())
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
            inbox=WebhookInbox(sessions),
            idempotency=IdempotencyStore(
                sessions,
                ttl=timedelta(hours=m.idempotency_ttl_hours),
                lease=timedelta(seconds=m.idempotency_lease_seconds),
            ),
            webhook_token=webhook_token,
            # The policy in force at each text (built later, by _services; reloads swap it).
            outbox_kinds=[
                TextExecutor(
                    gateway,
                    rules,
                    lambda: app[policy_key].current,
                    app[clock_key],
                    two_way=twilio_check is not None,
                    accept_outbound_only=m.accept_outbound_only_sms,
                ),
                PostSmsReplyExecutor(),
                DeleteSmsReplyExecutor(),
                # Escalation steps of urgent messages: chat alerts, and texts to staff phones.
                UrgentAlertExecutor(gateway),
            ],
            twilio=twilio_check,
        )
        yield


async def escalation(app: web.Application) -> AsyncIterator[None]:
    """The escalation scheduler of urgent messages, beside the relay it queues steps for (safe with
    several instances: integrations/escalation.py)."""
    outbox, services = app[settings_key].outbox, app[services_key]
    scheduler = EscalationScheduler(
        app[sessions_key],
        lambda: app[policy_key].current,
        services.consents,
        clock=services.clock,
        wake=app[relay_key].wake,
        interval=outbox.escalation_interval_seconds,
        batch_size=outbox.escalation_batch_size,
    )
    app[escalation_key] = scheduler
    task = asyncio.create_task(scheduler.run(), name="escalation-scheduler")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def webhook_processor(app: web.Application) -> AsyncIterator[None]:
    """Process stored webhook events in the background (after the services exist): the engine
    decides which workflow each event runs (engine/inbound.py)."""
    resources = app[messaging_key]
    services = app[services_key]
    processor = WebhookProcessor(
        app[sessions_key],
        functools.partial(handle_inbound, services),
        poll_interval=app[settings_key].messaging.webhook_poll_interval_seconds,
    )
    resources.processor = processor
    task = asyncio.create_task(processor.run(), name="webhook-processor")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
