"""The wire format: Sendbird's error codes and bodies, JSON as Sendbird writes it, request
parameters with Sendbird's parameter errors, and the reply shapes of users, channels and messages
(sendbird-api.md §2-§5).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from integrations.sendbird import NOT_FOUND_CODE
from integrations.sendbird_emulator.state import (
    EmulatedChannel,
    EmulatedMessage,
    EmulatedUser,
    EmulatorState,
)

# Error codes (§2). Only codes the Platform API documents are answered (§8: 900020/900050 are Chat
# SDK websocket codes, not Platform API answers).
STRING_EXPECTED: Final = 400100
NUMBER_EXPECTED: Final = 400101
LIST_EXPECTED: Final = 400102
JSON_EXPECTED: Final = 400103
BOOLEAN_EXPECTED: Final = 400104
MISSING_PARAMETER: Final = 400105
VALUE_TOO_LONG: Final = 400110
INVALID_VALUE: Final = 400111
# UNDOCUMENTED BEHAVIOUR: which code Sendbird answers a post by a non-member or into a frozen channel
# is not documented (§5, §10 uncertainty 1). The emulator answers the documented generic
# "unauthorized request (not allowed to access resource)".
NOT_ALLOWED: Final = 400108
# UNDOCUMENTED BEHAVIOUR: the body of an injected 5xx; the real body of a 5xx is not documented.
INTERNAL_ERROR: Final = 500901

MAX_MEMBERS_PER_CALL: Final = 100  # §4: user_ids, max 100 per call
MAX_MESSAGE_PAGE: Final = 200  # §2: prev_limit/next_limit 0..200
_CHANNEL_URL = re.compile(r"[A-Za-z0-9_]{4,100}")  # §2: own channel_url, 4-100 letters/digits/underscores
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # §3: phone_number in E.164 with country code

BM_SEND_PATH: Final = "/v1/notifications"  # §8: the documented path (a v2 variant is uncertain)
WEBHOOK_ATTEMPTS: Final = 3  # §7: Sendbird sends the same POST up to 3 times
WEBHOOK_TIMEOUT_S: Final = 5.0  # §7: and waits 5 seconds for each answer


# --------------------------------------------------------------------------------------------------
# JSON the way Sendbird writes it
# --------------------------------------------------------------------------------------------------


def sendbird_json(value: Any) -> bytes:
    """Compact JSON with non-ASCII as ``\\uXXXX`` and ``/`` as ``\\/``, like the real service (§7).

    After ``ensure_ascii`` a ``/`` can only stand inside a string, where ``\\/`` is a valid escape
    for it, so the replacement never changes the value, only the bytes a signature covers.
    """
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def _json_response(
    value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=sendbird_json(value), status=status, headers=headers, content_type="application/json"
    )


def _error_response(
    code: int, message: str, *, status: int = 400, headers: Mapping[str, str] | None = None
) -> web.Response:
    return _json_response({"error": True, "code": code, "message": message}, status=status, headers=headers)


class _ApiError(Exception):
    """Raised by a handler; the middleware turns it into Sendbird's error body (§2)."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------------------
# Request parameters
# --------------------------------------------------------------------------------------------------


class _Params:
    """Typed access to a JSON request body, failing with Sendbird's parameter error codes."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        return self._data.get(key)

    def text(self, key: str, *, default: str | None = None, max_length: int | None = None) -> str:
        value = self._data.get(key)
        if value is None:
            if default is None:
                raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
            return default
        if not isinstance(value, str):
            raise _ApiError(STRING_EXPECTED, f'"{key}" must be a string.')
        if max_length is not None and len(value) > max_length:
            raise _ApiError(VALUE_TOO_LONG, f'"{key}" is longer than {max_length} characters.')
        return value

    def flag(self, key: str, *, default: bool | None = None) -> bool:
        value = self._data.get(key)
        if value is None:
            if default is None:
                raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
            return default
        if not isinstance(value, bool):
            raise _ApiError(BOOLEAN_EXPECTED, f'"{key}" must be a boolean.')
        return value

    def text_list(self, key: str) -> list[str]:
        value = self._data.get(key)
        if value is None:
            raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _ApiError(LIST_EXPECTED, f'"{key}" must be a list of strings.')
        return list(dict.fromkeys(value))

    def text_map(self, key: str) -> dict[str, str]:
        value = self._data.get(key)
        if value is None:
            raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _ApiError(JSON_EXPECTED, f'"{key}" must be an object of strings.')
        return dict(value)


async def _params(request: web.Request) -> _Params:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        raise _ApiError(JSON_EXPECTED, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise _ApiError(JSON_EXPECTED, "The body must be a JSON object.")
    return _Params(data)


def _query_int(
    request: web.Request, key: str, *, default: int | None = None, low: int, high: int
) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(NUMBER_EXPECTED, f'"{key}" must be a number.') from None
    if not low <= value <= high:
        raise _ApiError(INVALID_VALUE, f'"{key}" must be within {low}..{high}.')
    return value


def _query_flag(request: web.Request, key: str, default: bool) -> bool:
    raw = request.query.get(key)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise _ApiError(BOOLEAN_EXPECTED, f'"{key}" must be true or false.')
    return raw.lower() == "true"


def _query_list(request: web.Request, key: str) -> list[str]:
    raw = request.query.get(key, "")
    return [item for item in raw.split(",") if item]


# --------------------------------------------------------------------------------------------------
# Reply shapes (§3, §4, §5)
# --------------------------------------------------------------------------------------------------


def _user_json(user: EmulatedUser) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "nickname": user.nickname,
        "profile_url": user.profile_url,
        "access_token": "",
        "is_active": user.is_active,
        "is_online": False,
        "last_seen_at": 0,
        "created_at": user.created_at,
        "metadata": dict(user.metadata),
        "phone_number": user.phone_number,
    }


def _sender_json(user: EmulatedUser) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "nickname": user.nickname,
        "profile_url": user.profile_url,
        "metadata": dict(user.metadata),
    }


def _message_json(state: EmulatorState, message: EmulatedMessage) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "message_id": message.message_id,
        "type": message.type,
        "message": message.message,
        "custom_type": message.custom_type,
        "data": message.data,
        "channel_url": message.channel_url,
        "channel_type": "group",
        "created_at": message.created_at,
        "updated_at": 0,
        "mention_type": "users",
        "mentioned_users": [],
        "is_removed": message.is_removed,
        "silent": message.silent,
        "translations": {},
        "sorted_metaarray": [],
        "message_survival_seconds": -1,
    }
    sender = state.users.get(message.sender_id) if message.sender_id else None
    if sender is not None:  # admin messages have no "user"
        reply["user"] = _sender_json(sender)
    return reply


def _channel_json(
    state: EmulatorState,
    channel: EmulatedChannel,
    *,
    show_member: bool = True,
    show_read_receipt: bool = False,
) -> dict[str, Any]:
    last = next((m for m in reversed(channel.messages) if not m.is_removed), None)
    reply: dict[str, Any] = {
        "channel_url": channel.channel_url,
        "name": channel.name,
        "custom_type": channel.custom_type,
        "data": channel.data,
        "cover_url": "",
        "created_at": channel.created_at,
        "member_count": len(channel.members),
        "joined_member_count": len(channel.members),
        "operators": [_sender_json(state.users[u]) for u in channel.operators if u in state.users],
        "freeze": channel.frozen,
        "is_distinct": channel.is_distinct,
        "is_public": channel.is_public,
        "is_super": False,
        "is_ephemeral": channel.is_ephemeral,
        "last_message": _message_json(state, last) if last else None,
        "unread_message_count": 0,
    }
    if show_member:
        reply["members"] = [_member_json(state, channel, u) for u in channel.members if u in state.users]
    if show_read_receipt:
        reply["read_receipt"] = dict(channel.read_ts)
    return reply


def _member_json(state: EmulatorState, channel: EmulatedChannel, user_id: str) -> dict[str, Any]:
    user = state.users[user_id]
    return {
        **_sender_json(user),
        "state": "joined",
        "role": "operator" if user_id in channel.operators else "",
        "is_online": False,
        "push_enabled": False,
        "read_ts": channel.read_ts.get(user_id, 0),
        "unread_message_count": _total_unread(state, user_id),
        "channel_unread_message_count": _unread(channel, user_id),
    }


def _unread(channel: EmulatedChannel, user_id: str) -> int:
    read_ts = channel.read_ts.get(user_id, 0)
    return sum(
        1 for m in channel.messages if not m.is_removed and m.sender_id != user_id and m.created_at > read_ts
    )


def _total_unread(state: EmulatorState, user_id: str) -> int:
    return sum(_unread(c, user_id) for c in state.channels.values() if user_id in c.members)


def _webhook_channel_json(channel: EmulatedChannel) -> dict[str, Any]:
    return {
        "channel_url": channel.channel_url,
        "name": channel.name,
        "custom_type": channel.custom_type,
        "data": channel.data,
        "is_distinct": channel.is_distinct,
        "is_public": channel.is_public,
        "is_super": False,
        "is_ephemeral": channel.is_ephemeral,
        "is_discoverable": channel.is_public,
    }


def _metadata_changes(p: _Params, current: Mapping[str, str]) -> dict[str, str]:
    """The ``metadata`` of a PUT; without ``upsert`` every key must exist already (§4)."""
    changes = p.text_map("metadata")
    if not p.flag("upsert", default=False) and any(key not in current for key in changes):
        raise _ApiError(NOT_FOUND_CODE, "Metadata key not found.")
    return changes
