"""``SendbirdClient``: typed calls to the Sendbird Platform API (chat v3) over an injected httpx client.

Every call has a total time budget, passes a client-side token bucket first, retries only on rate
limiting (HTTP 429 / code 500910, where Sendbird has done nothing), and turns every failure into an
:class:`engine.errors.ChatGatewayError` subclass (:func:`integrations.sendbird.wire.reply_body`).

Longer than 400 lines because it is one method per Platform API call caremsg makes, over one
transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
import structlog

from engine.errors import ChatRateLimited, ChatUnavailable
from integrations.sendbird.rate import Clock, RateLimits, Sleep, TokenBucket
from integrations.sendbird.wire import (
    SendbirdGroupChannel,
    SendbirdMessage,
    SendbirdUser,
    channel_from,
    message_from,
    reply_body,
    str_map,
    user_from,
)

_log = structlog.get_logger("integrations.sendbird")

MessageType = Literal["MESG", "ADMM"]
#: The types list_messages can be limited to (§5): text, file and admin messages; one at a time.
ListedType = Literal["MESG", "FILE", "ADMM"]

# Sendbird caps list_messages' prev_limit/next_limit at 200 (§2 "Pagination").
_MAX_MESSAGE_PAGE: Final = 200


class SendbirdClient:
    """Typed calls to the Sendbird Platform API (chat v3, group channels).

    Guarantees for every method:

    - the request carries ``Api-Token`` and waits at most ``timeout`` seconds for the network
      (connect, send and reply together); waiting for the local rate limiter comes on top;
    - a 429 / 500910 reply is retried up to ``max_retries`` times after ``X-RateLimit-RetryAfter``
      seconds (else the body's ``retry_after``, else exponential backoff), each wait capped at
      ``max_retry_after``; then :class:`ChatRateLimited` is raised;
    - nothing else is retried here: a POST that timed out may have taken effect, so the caller
      (the outbox relay) decides, helped by ``dedup_id`` and the gateway's "exists" handling;
    - failures raise :class:`ChatNotFound`, :class:`ChatAlreadyExists`, :class:`ChatInvalidRequest`
      (never retryable: bad input), :class:`ChatCredentialsRejected` (a bad API token: retryable,
      an outage for caremsg), :class:`ChatRateLimited` or :class:`ChatUnavailable` (5xx, timeouts,
      dropped connections, unreadable replies).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_token: str,
        timeout: float = 5.0,
        rate_limits: RateLimits | None = None,
        max_retries: int = 3,
        max_retry_after: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not base_url or not api_token:
            raise ValueError("base_url and api_token are required")
        if not timeout > 0 or max_retries < 0 or max_retry_after < 0:
            raise ValueError("timeout must be positive; max_retries and max_retry_after non-negative")
        limits = rate_limits or RateLimits()
        self._http = http
        self._api_root = base_url.rstrip("/") + "/v3"
        self._headers = {"Api-Token": api_token, "Accept": "application/json"}
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._get_bucket = TokenBucket(limits.get_per_second, burst=limits.burst, clock=clock, sleep=sleep)
        self._write_bucket = TokenBucket(
            limits.write_per_second, burst=limits.burst, clock=clock, sleep=sleep
        )

    # ---- users ---------------------------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        *,
        nickname: str,
        profile_url: str = "",
        phone_number: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> SendbirdUser:
        """Create a user; :class:`ChatAlreadyExists` if ``user_id`` is taken. Use opaque ids, never PII."""
        body: dict[str, Any] = {"user_id": user_id, "nickname": nickname, "profile_url": profile_url}
        if phone_number is not None:
            body["phone_number"] = phone_number
        if metadata:
            body["metadata"] = dict(metadata)
        return user_from(await self._call("create_user", "POST", "/users", json=body))

    async def get_user(self, user_id: str) -> SendbirdUser:
        """Fetch one user; :class:`ChatNotFound` if there is none."""
        return user_from(await self._call("get_user", "GET", f"/users/{_seg(user_id)}"))

    async def update_user(
        self,
        user_id: str,
        *,
        nickname: str | None = None,
        profile_url: str | None = None,
        phone_number: str | None = None,
        is_active: bool | None = None,
    ) -> SendbirdUser:
        """Change only the given profile fields (``phone_number`` per §8, E.164)."""
        body: dict[str, Any] = {}
        if nickname is not None:
            body["nickname"] = nickname
        if profile_url is not None:
            body["profile_url"] = profile_url
        if phone_number is not None:
            body["phone_number"] = phone_number
        if is_active is not None:
            body["is_active"] = is_active
        return user_from(await self._call("update_user", "PUT", f"/users/{_seg(user_id)}", json=body))

    async def update_user_metadata(self, user_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """Set these metadata keys on a user, adding missing ones (upsert); other keys stay.

        A separate endpoint because ``PUT /v3/users/{user_id}`` takes no ``metadata`` (§3).
        """
        body = {"metadata": dict(metadata), "upsert": True}
        reply = await self._call("update_user_metadata", "PUT", f"/users/{_seg(user_id)}/metadata", json=body)
        return str_map(reply)

    # ---- group channels ------------------------------------------------------------------------

    async def create_group_channel(
        self,
        channel_url: str,
        *,
        name: str,
        user_ids: Sequence[str],
        custom_type: str = "",
        data: str = "",
        operator_ids: Sequence[str] = (),
    ) -> SendbirdGroupChannel:
        """Create a channel at our own ``channel_url``; :class:`ChatAlreadyExists` if it is taken.

        Sent with ``strict: true`` so an unknown user fails the call (400111 →
        :class:`ChatInvalidRequest`) instead of being silently left out of a care team's channel.
        """
        body: dict[str, Any] = {
            "channel_url": channel_url,
            "name": name,
            "user_ids": list(user_ids),
            "strict": True,
        }
        if custom_type:
            body["custom_type"] = custom_type
        if data:
            body["data"] = data
        if operator_ids:
            body["operator_ids"] = list(operator_ids)
        return channel_from(await self._call("create_group_channel", "POST", "/group_channels", json=body))

    async def get_group_channel(self, channel_url: str) -> SendbirdGroupChannel:
        """Fetch a channel with its member list; :class:`ChatNotFound` if there is none."""
        reply = await self._call(
            "get_group_channel",
            "GET",
            f"/group_channels/{_seg(channel_url)}",
            params={"show_member": "true"},
        )
        return channel_from(reply)

    async def update_group_channel(
        self,
        channel_url: str,
        *,
        name: str | None = None,
        custom_type: str | None = None,
        data: str | None = None,
    ) -> SendbirdGroupChannel:
        """Change only the given fields. Members change through invite/leave, never here (§4)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if custom_type is not None:
            body["custom_type"] = custom_type
        if data is not None:
            body["data"] = data
        path = f"/group_channels/{_seg(channel_url)}"
        return channel_from(await self._call("update_group_channel", "PUT", path, json=body))

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> SendbirdGroupChannel:
        """Add users to a channel (they join at once unless the app turned auto-accept off)."""
        path = f"/group_channels/{_seg(channel_url)}/invite"
        reply = await self._call("invite_members", "POST", path, json={"user_ids": list(user_ids)})
        return channel_from(reply)

    async def leave_members(
        self,
        channel_url: str,
        user_ids: Sequence[str],
        *,
        reason: str = "admin_removed",
    ) -> None:
        """Remove users from a channel (``PUT .../leave``)."""
        path = f"/group_channels/{_seg(channel_url)}/leave"
        await self._call("leave_members", "PUT", path, json={"user_ids": list(user_ids), "reason": reason})

    async def freeze_channel(self, channel_url: str, frozen: bool) -> SendbirdGroupChannel:
        """Freeze (only operators may post) or unfreeze a channel."""
        path = f"/group_channels/{_seg(channel_url)}/freeze"
        return channel_from(await self._call("freeze_channel", "PUT", path, json={"freeze": frozen}))

    # ---- messages ------------------------------------------------------------------------------

    async def send_message(
        self,
        channel_url: str,
        *,
        message: str,
        user_id: str | None = None,
        message_type: MessageType = "MESG",
        dedup_id: str | None = None,
        custom_type: str = "",
        data: str = "",
    ) -> SendbirdMessage:
        """Post a text (MESG, ``user_id`` required) or admin (ADMM, no sender) message.

        ``user_id`` is not sent for ADMM: the older docs say admin messages have no sender although
        the OAS marks the field required (§5, uncertainty 5). ``dedup_id`` asks Sendbird to drop a
        repeat; what a repeat returns is undocumented, see :meth:`SendbirdChatGateway.send_message`.
        """
        if message_type == "MESG" and not user_id:
            raise ValueError("a MESG message needs the sender's user_id")
        if message_type == "ADMM" and user_id is not None:
            raise ValueError("an ADMM message has no sender; leave user_id unset")
        body: dict[str, Any] = {"message_type": message_type, "message": message}
        if user_id is not None:
            body["user_id"] = user_id
        if dedup_id is not None:
            body["dedup_id"] = dedup_id
        if custom_type:
            body["custom_type"] = custom_type
        if data:
            body["data"] = data
        path = f"/group_channels/{_seg(channel_url)}/messages"
        return message_from(await self._call("send_message", "POST", path, json=body))

    async def send_file_message(
        self,
        channel_url: str,
        *,
        user_id: str,
        file: bytes,
        file_name: str,
        content_type: str,
        dedup_id: str | None = None,
        custom_type: str = "",
        data: str = "",
    ) -> SendbirdMessage:
        """Post a file message (FILE): the same endpoint as a text message, as multipart form data
        with the file in the part ``file`` (sendbird-api.md §1: multipart only when uploading files;
        §5: ``message_type`` FILE). The file's name is caremsg's own, never the uploader's."""
        form: dict[str, str] = {"message_type": "FILE", "user_id": user_id}
        if dedup_id is not None:
            form["dedup_id"] = dedup_id
        if custom_type:
            form["custom_type"] = custom_type
        if data:
            form["data"] = data
        path = f"/group_channels/{_seg(channel_url)}/messages"
        reply = await self._call(
            "send_file_message", "POST", path, form=form, files={"file": (file_name, file, content_type)}
        )
        return message_from(reply)

    async def list_messages(
        self,
        channel_url: str,
        *,
        message_ts: int | None = None,
        message_id: int | None = None,
        prev_limit: int = 15,
        next_limit: int = 15,
        include: bool = True,
        reverse: bool = False,
        sender_ids: Sequence[str] = (),
        custom_types: Sequence[str] = (),
        message_type: ListedType | None = None,
        including_removed: bool = False,
    ) -> list[SendbirdMessage]:
        """Messages around one anchor: exactly one of ``message_ts`` (ms) or ``message_id``.

        Up to ``prev_limit`` messages before and ``next_limit`` after the anchor (0-200 each), oldest
        first unless ``reverse``; the anchor itself only if ``include``. Not token-paginated (§2).
        ``message_type`` lists only messages of that type (a FILE message is not a MESG one); None
        lists every type.
        """
        if (message_ts is None) == (message_id is None):
            raise ValueError("pass exactly one of message_ts or message_id")
        if not (0 <= prev_limit <= _MAX_MESSAGE_PAGE and 0 <= next_limit <= _MAX_MESSAGE_PAGE):
            raise ValueError(f"prev_limit and next_limit must be within 0..{_MAX_MESSAGE_PAGE}")
        params: dict[str, str] = {
            "prev_limit": str(prev_limit),
            "next_limit": str(next_limit),
            "include": _flag(include),
            "reverse": _flag(reverse),
        }
        if message_ts is not None:
            params["message_ts"] = str(message_ts)
        if message_id is not None:
            params["message_id"] = str(message_id)
        if sender_ids:
            params["sender_ids"] = ",".join(sender_ids)
        if custom_types:
            params["custom_types"] = ",".join(custom_types)
        if message_type is not None:
            params["message_type"] = message_type
        if including_removed:
            params["including_removed"] = "true"
        path = f"/group_channels/{_seg(channel_url)}/messages"
        reply = await self._call("list_messages", "GET", path, params=params)
        items = reply.get("messages") if isinstance(reply, dict) else None
        if not isinstance(items, list):
            raise ChatUnavailable("Sendbird list_messages reply has no message list")
        return [message_from(item) for item in items]

    async def delete_message(self, channel_url: str, message_id: int) -> None:
        """Remove a message (it stays listable only with ``including_removed``)."""
        path = f"/group_channels/{_seg(channel_url)}/messages/{message_id}"
        await self._call("delete_message", "DELETE", path)

    async def mark_as_read(self, channel_url: str, user_id: str) -> None:
        """Mark every message in the channel as read by ``user_id``."""
        path = f"/group_channels/{_seg(channel_url)}/messages/mark_as_read"
        await self._call("mark_as_read", "PUT", path, json={"user_id": user_id})

    # ---- channel metadata ----------------------------------------------------------------------

    async def create_channel_metadata(self, channel_url: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """Add new metadata keys; :class:`ChatAlreadyExists` if one of them is already set."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        reply = await self._call("create_channel_metadata", "POST", path, json={"metadata": dict(metadata)})
        # §8: this call answers {"metadata": {...}, "include_ts": ...}, not a flat map.
        return str_map(reply.get("metadata") if isinstance(reply, dict) else None)

    async def update_channel_metadata(
        self,
        channel_url: str,
        metadata: Mapping[str, str],
        *,
        upsert: bool = True,
    ) -> dict[str, str]:
        """Set metadata keys; with ``upsert`` missing keys are added, else they are :class:`ChatNotFound`."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        body = {"metadata": dict(metadata), "upsert": upsert}
        return str_map(await self._call("update_channel_metadata", "PUT", path, json=body))

    async def get_channel_metadata(self, channel_url: str, keys: Sequence[str] = ()) -> dict[str, str]:
        """All metadata of a channel, or only ``keys``."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        params = {"keys": ",".join(keys)} if keys else None
        return str_map(await self._call("get_channel_metadata", "GET", path, params=params))

    async def delete_channel_metadata(self, channel_url: str, key: str | None = None) -> None:
        """Delete one metadata key (:class:`ChatNotFound` if unset), or all of them when ``key`` is None."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        if key is not None:
            path = f"{path}/{_seg(key)}"
        await self._call("delete_channel_metadata", "DELETE", path)

    # ---- transport -----------------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> Any:
        """One API call with rate limiting, the time budget and 429 retries; returns the JSON body."""
        bucket = self._get_bucket if method == "GET" else self._write_bucket
        for attempt in range(self._max_retries + 1):
            await bucket.acquire()
            response = await self._send(
                operation, method, path, json=json, params=params, form=form, files=files
            )
            try:
                return reply_body(operation, response)
            except ChatRateLimited as exc:
                if attempt == self._max_retries:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else 2.0**attempt
                wait = min(wait, self._max_retry_after)
                _log.warning("sendbird.rate_limited", operation=operation, attempt=attempt + 1, wait_s=wait)
                await self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        form: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> httpx.Response:
        # httpx's timeout applies per phase (connect, write, each read); the asyncio deadline around
        # it makes ``timeout`` a bound on the whole exchange, whatever the injected client's defaults.
        try:
            async with asyncio.timeout(self._timeout):
                return await self._http.request(
                    method,
                    self._api_root + path,
                    json=json,
                    params=params,
                    data=form,
                    files=files,
                    headers=self._headers,
                    timeout=self._timeout,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChatUnavailable(f"Sendbird {operation} timed out") from exc
        except httpx.HTTPError as exc:
            raise ChatUnavailable(f"Sendbird {operation} failed: {type(exc).__name__}") from exc


def _seg(value: str) -> str:
    """One URL path segment: user ids may hold any character, including ``/``."""
    return quote(value, safe="")


def _flag(value: bool) -> str:
    return "true" if value else "false"
