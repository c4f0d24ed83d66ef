"""The wire format: Sendbird's error codes and bodies, JSON as Sendbird writes it, request
parameters with Sendbird's parameter errors, and the reply shapes of users, channels and messages
(sendbird-api.md §2-§5).

Every name here without a leading underscore is shared by the resource modules (``users``,
``channels``, ``messages``, ``metadata``, ``business_messaging``) and ``app``: one place that knows
how Sendbird spells an error, a parameter or a reply.
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
CHANNEL_URL = re.compile(r"[A-Za-z0-9_]{4,100}")  # §2: own channel_url, 4-100 letters/digits/underscores
E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # §3: phone_number in E.164 with country code

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


def json_response(value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A reply with a body written the way Sendbird writes JSON (:func:`sendbird_json`)."""
    return web.Response(
        body=sendbird_json(value), status=status, headers=headers, content_type="application/json"
    )


def error_response(
    code: int, message: str, *, status: int = 400, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Sendbird's error body (§2): ``{"error": true, "code": ..., "message": ...}``."""
    return json_response({"error": True, "code": code, "message": message}, status=status, headers=headers)


class ApiError(Exception):
    """Raised by a handler; the middleware turns it into Sendbird's error body (§2)."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------------------
# Request parameters
# --------------------------------------------------------------------------------------------------


class Params:
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
                raise ApiError(MISSING_PARAMETER, f'"{key}" is required.')
            return default
        if not isinstance(value, str):
            raise ApiError(STRING_EXPECTED, f'"{key}" must be a string.')
        if max_length is not None and len(value) > max_length:
            raise ApiError(VALUE_TOO_LONG, f'"{key}" is longer than {max_length} characters.')
        return value

    def flag(self, key: str, *, default: bool | None = None) -> bool:
        value = self._data.get(key)
        if value is None:
            if default is None:
                raise ApiError(MISSING_PARAMETER, f'"{key}" is required.')
            return default
        if not isinstance(value, bool):
            raise ApiError(BOOLEAN_EXPECTED, f'"{key}" must be a boolean.')
        return value

    def text_list(self, key: str) -> list[str]:
        value = self._data.get(key)
        if value is None:
            raise ApiError(MISSING_PARAMETER, f'"{key}" is required.')
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ApiError(LIST_EXPECTED, f'"{key}" must be a list of strings.')
        return list(dict.fromkeys(value))

    def text_map(self, key: str) -> dict[str, str]:
        value = self._data.get(key)
        if value is None:
            raise ApiError(MISSING_PARAMETER, f'"{key}" is required.')
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ApiError(JSON_EXPECTED, f'"{key}" must be an object of strings.')
        return dict(value)


async def read_params(request: web.Request) -> Params:
    """The request's JSON object body as :class:`Params`; anything else is Sendbird's 400103."""
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        raise ApiError(JSON_EXPECTED, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(JSON_EXPECTED, "The body must be a JSON object.")
    return Params(data)


def query_int(
    request: web.Request, key: str, *, default: int | None = None, low: int, high: int
) -> int | None:
    """A query integer within ``low..high``: 400101 if not a number, 400111 if out of range."""
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(NUMBER_EXPECTED, f'"{key}" must be a number.') from None
    if not low <= value <= high:
        raise ApiError(INVALID_VALUE, f'"{key}" must be within {low}..{high}.')
    return value


def query_flag(request: web.Request, key: str, default: bool) -> bool:
    """A query boolean, ``true`` or ``false`` in any case (400104 otherwise)."""
    raw = request.query.get(key)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise ApiError(BOOLEAN_EXPECTED, f'"{key}" must be true or false.')
    return raw.lower() == "true"


def query_list(request: web.Request, key: str) -> list[str]:
    """A comma-separated query list (empty items dropped)."""
    raw = request.query.get(key, "")
    return [item for item in raw.split(",") if item]


# --------------------------------------------------------------------------------------------------
# Reply shapes (§3, §4, §5)
# --------------------------------------------------------------------------------------------------


def user_json(user: EmulatedUser) -> dict[str, Any]:
    """A user as the users endpoints reply with it (§3)."""
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


def sender_json(user: EmulatedUser) -> dict[str, Any]:
    """A message's ``user`` object: the sender as a message carries it (§5)."""
    return {
        "user_id": user.user_id,
        "nickname": user.nickname,
        "profile_url": user.profile_url,
        "metadata": dict(user.metadata),
    }


def message_json(state: EmulatorState, message: EmulatedMessage) -> dict[str, Any]:
    """A message as the message endpoints reply with it (§5)."""
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
    if message.file is not None:
        # UNCERTAIN (sendbird-api.md §5 lists only ``files`` in the response): the FILE message's
        # file as the older docs describe it, one object; its url is the emulator's own.
        reply["file"] = {
            "name": message.file.name,
            "type": message.file.type,
            "size": len(message.file.content),
            "url": f"/emulator/files/{message.message_id}",
        }
    sender = state.users.get(message.sender_id) if message.sender_id else None
    if sender is not None:  # admin messages have no "user"
        reply["user"] = sender_json(sender)
    return reply


def channel_json(
    state: EmulatorState,
    channel: EmulatedChannel,
    *,
    show_member: bool = True,
    show_read_receipt: bool = False,
) -> dict[str, Any]:
    """A group channel as the channel endpoints reply with it (§4)."""
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
        "operators": [sender_json(state.users[u]) for u in channel.operators if u in state.users],
        "freeze": channel.frozen,
        "is_distinct": channel.is_distinct,
        "is_public": channel.is_public,
        "is_super": False,
        "is_ephemeral": channel.is_ephemeral,
        "last_message": message_json(state, last) if last else None,
        "unread_message_count": 0,
    }
    if show_member:
        reply["members"] = [member_json(state, channel, u) for u in channel.members if u in state.users]
    if show_read_receipt:
        reply["read_receipt"] = dict(channel.read_ts)
    return reply


def member_json(state: EmulatorState, channel: EmulatedChannel, user_id: str) -> dict[str, Any]:
    """One member of a channel as the members list replies with it (§4)."""
    user = state.users[user_id]
    return {
        **sender_json(user),
        "state": "joined",
        "role": "operator" if user_id in channel.operators else "",
        "is_online": False,
        "push_enabled": False,
        "read_ts": channel.read_ts.get(user_id, 0),
        "unread_message_count": total_unread(state, user_id),
        "channel_unread_message_count": unread_count(channel, user_id),
    }


def unread_count(channel: EmulatedChannel, user_id: str) -> int:
    """Messages in ``channel`` others sent after the user's read mark (removed ones not counted)."""
    read_ts = channel.read_ts.get(user_id, 0)
    return sum(
        1 for m in channel.messages if not m.is_removed and m.sender_id != user_id and m.created_at > read_ts
    )


def total_unread(state: EmulatorState, user_id: str) -> int:
    """Unread messages over every channel the user is a member of."""
    return sum(unread_count(c, user_id) for c in state.channels.values() if user_id in c.members)


def webhook_channel_json(channel: EmulatedChannel) -> dict[str, Any]:
    """The ``channel`` object of a webhook event (§7), shorter than the API's."""
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


def metadata_changes(p: Params, current: Mapping[str, str]) -> dict[str, str]:
    """The ``metadata`` of a PUT; without ``upsert`` every key must exist already (§4)."""
    changes = p.text_map("metadata")
    if not p.flag("upsert", default=False) and any(key not in current for key in changes):
        raise ApiError(NOT_FOUND_CODE, "Metadata key not found.")
    return changes
