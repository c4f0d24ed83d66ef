"""Sendbird's wire format: the error codes that matter, replies as small typed values, and the one
rule that turns an HTTP reply into its JSON body or the typed error it stands for (§2).

Shared by the chat client and the Business Messaging (SMS) gateway, which answer alike.
No exception message carries a provider message or a request value: those may be PHI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from engine.errors import (
    ChatAlreadyExists,
    ChatCredentialsRejected,
    ChatGatewayError,
    ChatInvalidRequest,
    ChatNotFound,
    ChatRateLimited,
    ChatUnavailable,
)

# Sendbird error codes that change what we do (§2 "Codes that matter").
NOT_FOUND_CODE: Final = 400201
ALREADY_EXISTS_CODE: Final = 400202
INVALID_TOKEN_CODE: Final = 400401
UNAUTHORIZED_CODE: Final = 400108
RATE_LIMITED_CODE: Final = 500910

RETRY_AFTER_HEADER: Final = "X-RateLimit-RetryAfter"

#: The HTTP statuses that, with no Sendbird error code in the body, say who we are is refused (a
#: gateway or proxy in front of the API answering for it), never what we asked.
_CREDENTIAL_STATUSES: Final = frozenset({401, 403})


@dataclass(frozen=True)
class SendbirdUser:
    """A Sendbird user as the API last reported it. ``phone_number`` is kept out of ``repr``."""

    user_id: str
    nickname: str
    profile_url: str
    phone_number: str | None = field(repr=False)
    metadata: Mapping[str, str]
    is_active: bool
    created_at_ms: int


@dataclass(frozen=True)
class SendbirdGroupChannel:
    """A group channel. ``member_ids`` is empty when the reply did not list members."""

    channel_url: str
    name: str
    custom_type: str
    data: str = field(repr=False)
    member_ids: tuple[str, ...]
    operator_ids: tuple[str, ...]
    is_frozen: bool
    member_count: int
    created_at_ms: int


@dataclass(frozen=True)
class SendbirdMessage:
    """One message. ``sender_id`` is ``None`` for admin (ADMM) messages; text and data stay out of repr."""

    message_id: int
    channel_url: str
    message_type: str
    message: str = field(repr=False)
    custom_type: str
    data: str = field(repr=False)
    sender_id: str | None
    created_at_ms: int
    is_removed: bool


def reply_body(operation: str, response: httpx.Response, *, provider: str = "sendbird") -> Any:
    """The JSON body of a successful reply, or the typed error the reply stands for. ``provider``
    names the API (and so the token) a credentials error is about: the chat API's ``sendbird`` or
    ``sendbird_business_messaging``."""
    status = response.status_code
    body = _json_or_none(response)
    code = _provider_code(body, status)
    if status == 429 or code == RATE_LIMITED_CODE:
        raise ChatRateLimited(
            f"Sendbird {operation} was rate limited",
            retry_after=_retry_after(response, body),
            provider_code=code,
            status=status,
        )
    if code == INVALID_TOKEN_CODE or (code is None and status in _CREDENTIAL_STATUSES):
        # Our token is wrong (rotated badly, revoked, mistyped): Sendbird refused us before looking
        # at the request, so it says nothing about this entry. An outage for caremsg, not a refusal.
        raise ChatCredentialsRejected(
            f"Sendbird {operation} rejected our credentials (code {code}, HTTP {status})",
            provider=provider,
            provider_code=code,
            status=status,
        )
    if code is not None:
        raise _error_for_code(operation, code, status)
    if status >= 500 or body is None:
        # A 5xx, or any body that is not JSON (a proxy's HTML page, a truncated reply).
        raise ChatUnavailable(f"Sendbird {operation} failed (HTTP {status})", status=status)
    if status >= 400:
        raise ChatInvalidRequest(f"Sendbird {operation} was refused (HTTP {status})", status=status)
    return body


def _error_for_code(operation: str, code: int, status: int) -> ChatGatewayError:
    """Map a Sendbird error code (not the HTTP status, §2) to our error tree."""
    detail = f"Sendbird {operation} failed (code {code})"
    if code == NOT_FOUND_CODE:
        return ChatNotFound(detail, provider_code=code, status=status)
    if code == ALREADY_EXISTS_CODE:
        return ChatAlreadyExists(detail, provider_code=code, status=status)
    if 500000 <= code < 600000:
        return ChatUnavailable(detail, provider_code=code, status=status)
    if 400000 <= code < 500000:
        # 4001xx parameter errors and the rest of the client-error family: retrying fails the same way.
        # 400108 (UNAUTHORIZED_CODE, "not allowed to access resource") is one of them: it answers a
        # token Sendbird accepted, about the resource asked for (the emulator: a sender not in the
        # channel, a frozen channel), so it refuses this entry only. Held as an outage it would stop
        # the entry's conversation behind it for ever; a bad token is 400401, above.
        return ChatInvalidRequest(detail, provider_code=code, status=status)
    # A code outside the documented families (the frozen-channel or non-member codes are not known,
    # §10 uncertainty 1): the HTTP status is the only remaining hint.
    if status >= 500:
        return ChatUnavailable(detail, provider_code=code, status=status)
    return ChatInvalidRequest(detail, provider_code=code, status=status)


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return {}  # DELETE and some PUTs may answer with an empty body instead of ``{}``
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from ValueError
        return None


def _provider_code(body: Any, status: int) -> int | None:
    """The ``code`` of an error body; a 2xx only counts as an error when it says ``"error": true``."""
    if not isinstance(body, dict) or (status < 400 and body.get("error") is not True):
        return None
    code = body.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _retry_after(response: httpx.Response, body: Any) -> float | None:
    """Seconds to wait: the ``X-RateLimit-RetryAfter`` header (§2), else the body's ``retry_after``.

    The body field's unit is not documented (C-RATE); seconds, like the header, is assumed.
    """
    from_header = _seconds(response.headers.get(RETRY_AFTER_HEADER))
    if from_header is not None:
        return from_header
    return _seconds(body.get("retry_after")) if isinstance(body, dict) else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# ---- reply parsing -------------------------------------------------------------------------------


def user_from(reply: Any) -> SendbirdUser:
    obj = _object(reply, "user")
    return SendbirdUser(
        user_id=_required_str(obj, "user_id"),
        nickname=_str(obj, "nickname"),
        profile_url=_str(obj, "profile_url"),
        phone_number=_str(obj, "phone_number") or None,
        metadata=str_map(obj.get("metadata")),
        is_active=obj.get("is_active") is not False,
        created_at_ms=_int(obj, "created_at"),
    )


def channel_from(reply: Any) -> SendbirdGroupChannel:
    obj = _object(reply, "channel")
    return SendbirdGroupChannel(
        channel_url=_required_str(obj, "channel_url"),
        name=_str(obj, "name"),
        custom_type=_str(obj, "custom_type"),
        data=_str(obj, "data"),
        member_ids=_user_ids(obj.get("members")),
        operator_ids=_user_ids(obj.get("operators")),
        is_frozen=obj.get("freeze") is True,
        member_count=_int(obj, "member_count"),
        created_at_ms=_int(obj, "created_at"),
    )


def message_from(reply: Any) -> SendbirdMessage:
    obj = _object(reply, "message")
    message_id = obj.get("message_id")
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ChatUnavailable("Sendbird reply has no valid message_id")
    sender = obj.get("user")
    sender_id = sender.get("user_id") if isinstance(sender, dict) else None
    return SendbirdMessage(
        message_id=message_id,
        channel_url=_required_str(obj, "channel_url"),
        message_type=_str(obj, "type"),
        message=_str(obj, "message"),
        custom_type=_str(obj, "custom_type"),
        data=_str(obj, "data"),
        sender_id=sender_id if isinstance(sender_id, str) and sender_id else None,
        created_at_ms=_int(obj, "created_at"),
        is_removed=obj.get("is_removed") is True,
    )


def _object(reply: Any, what: str) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise ChatUnavailable(f"Sendbird reply is not a {what} object")
    return reply


def _required_str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ChatUnavailable(f"Sendbird reply has no valid {key}")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _user_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        item["user_id"] for item in value if isinstance(item, dict) and isinstance(item.get("user_id"), str)
    )
