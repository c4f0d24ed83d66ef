"""``SmsGateway`` on Sendbird Business Messaging (Sendbird's Business Messaging API documentation).

A text goes out as a Business Messaging notification on the SMS channel: ``POST {bm_base}{send_path}``
with the separate Business Messaging token, a dashboard template (``template.key``) whose one
variable ``message`` carries the text, and the recipient's Sendbird ``user_id`` as the only target
(``mode: realtime``). The recipient must be a Sendbird user carrying ``phone_number`` (E.164); the
outbox relay creates external participants that way before anything is texted.

**The path is uncertain** (§8 / §10.3): the documented one is ``/v1/notifications``; some v2 pages
show ``/v1/notifications/messages``. It is configurable (``messaging.bm_send_path``): confirm it
against the live docs before production. The reply shape is undocumented too; we keep whatever id
it carries (``request_id``, ``notification_id`` or ``id``) for the delivery row.

The API has no dedup key, so delivery is at least once: a retry after a timeout may text twice.
Errors map like the chat API's (same ``{"error": true, "code": ...}`` body, §2).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from engine.errors import ChatUnavailable
from integrations.sendbird.rate import TokenBucket
from integrations.sendbird.wire import reply_body

DEFAULT_SEND_PATH = "/v1/notifications"


class SendbirdSmsGateway:
    """:class:`engine.ports.SmsGateway` over Business Messaging, on an injected ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_token: str,
        template_key: str,
        send_path: str = DEFAULT_SEND_PATH,
        timeout: float = 5.0,
        per_second: float = 5.0,
    ) -> None:
        if not base_url or not api_token or not template_key:
            raise ValueError("base_url, api_token and template_key are required")
        self._http = http
        self._url = base_url.rstrip("/") + "/" + send_path.lstrip("/")
        self._headers = {"Api-Token": api_token, "Accept": "application/json"}
        self._template_key = template_key
        self._timeout = timeout
        self._bucket = TokenBucket(per_second)

    async def send_sms(self, *, recipient_user_id: str, phone_number: str, text: str) -> str:
        """Send one realtime notification; ``phone_number`` is on the Sendbird user, not in the request."""
        body = {
            "mode": "realtime",
            "template": {
                "key": self._template_key,
                "variables": {recipient_user_id: {"message": text}},
            },
            "targets": [recipient_user_id],
        }
        await self._bucket.acquire()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(
                    self._url, json=body, headers=self._headers, timeout=self._timeout
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChatUnavailable("Business Messaging send timed out") from exc
        except httpx.HTTPError as exc:
            raise ChatUnavailable(f"Business Messaging send failed: {type(exc).__name__}") from exc
        reply: Any = reply_body("send_sms", response, provider="sendbird_business_messaging")
        if isinstance(reply, dict):
            for key in ("request_id", "notification_id", "id", "message_id"):
                value = reply.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    return str(value)
        return ""
