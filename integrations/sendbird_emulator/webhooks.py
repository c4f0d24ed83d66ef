"""Webhooks (§7): events posted from background tasks, signed, ``/`` escaped, up to 3 tries."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from integrations.background import BackgroundTasks
from integrations.sendbird import (
    SIGNATURE_HEADER,
    sign_webhook,
)
from integrations.sendbird_emulator.state import EmulatorState, WebhookDelivery
from integrations.sendbird_emulator.wire import WEBHOOK_ATTEMPTS, WEBHOOK_TIMEOUT_S, sendbird_json

_log = structlog.get_logger("integrations.sendbird_emulator")


class WebhookSender:
    """Posts webhook events from background tasks, so an API reply never waits for the receiver.

    Every attempt sends the same bytes and signature. An attempt fails on no answer within 5 s or
    a non-2xx answer (UNDOCUMENTED BEHAVIOUR: retrying on non-2xx too is the strict reading of §7,
    which only says
    "until it gets a response"); after 3 failed attempts the event is given up.
    """

    def __init__(
        self,
        state: EmulatorState,
        url: str | None,
        *,
        include_members: bool = False,
        retry_delay: float = 0.5,
    ) -> None:
        self._state = state
        self._url = url
        self.include_members = include_members
        self._retry_delay = retry_delay
        self._session: aiohttp.ClientSession | None = None
        self._tasks = BackgroundTasks()

    async def start(self) -> None:
        """Open the HTTP session (inside the running loop, never at import)."""
        if self._url is not None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))

    async def close(self) -> None:
        """Abandon deliveries still in flight and close the session."""
        await self._tasks.cancel()
        if self._session is not None:
            await self._session.close()

    async def drain(self) -> None:
        """Wait until every delivery started so far has succeeded or been given up."""
        await self._tasks.drain()

    def set_url(self, url: str | None) -> None:
        """Post future events to ``url`` (None: stop sending)."""
        self._url = url
        if url is not None and self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))

    def send(self, category: str, payload: Mapping[str, Any], *, url: str | None = None) -> None:
        """Schedule delivery of one event (does nothing when no webhook URL is configured)."""
        target = url or self._url
        if target is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))
        delivery = WebhookDelivery(category, sendbird_json(payload))
        self._state.webhook_deliveries.append(delivery)
        self._tasks.spawn(self._deliver(self._session, target, delivery))

    async def _deliver(self, session: aiohttp.ClientSession, url: str, delivery: WebhookDelivery) -> None:
        signature = sign_webhook(delivery.body, self._state.api_token)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SendBird",
            SIGNATURE_HEADER: signature,
            "x-signature": signature,  # seen next to x-sendbird-signature in a captured request (§7)
            "unicode-escaped": "true",
        }
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            status: int | None = None
            try:
                async with session.post(url, data=delivery.body, headers=headers) as response:
                    status = response.status
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                status = None
            delivery.statuses.append(status)
            if delivery.delivered:
                _log.info(
                    "sendbird_emulator.webhook_delivered",
                    category=delivery.category,
                    attempt=attempt,
                    development_only=True,
                )
                return
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(self._retry_delay)
        _log.warning(
            "sendbird_emulator.webhook_given_up",
            category=delivery.category,
            statuses=delivery.statuses,
            development_only=True,
        )
