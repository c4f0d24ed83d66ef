"""Group channels (§4, §6): create, view, update, invite, leave, freeze."""

from __future__ import annotations

import secrets

from aiohttp import web

from integrations.sendbird import (
    ALREADY_EXISTS_CODE,
)
from integrations.sendbird_emulator.resource import Resource
from integrations.sendbird_emulator.state import (
    EmulatedChannel,
)
from integrations.sendbird_emulator.wire import (
    CHANNEL_URL,
    INVALID_VALUE,
    LIST_EXPECTED,
    MAX_MEMBERS_PER_CALL,
    MISSING_PARAMETER,
    ApiError,
    Params,
    channel_json,
    json_response,
    query_flag,
    read_params,
)

CHANNEL = "/v3/group_channels/{channel_url}"


class ChannelsApi(Resource):
    """Group channels (§4, §6): create, view, update, invite, leave, freeze."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v3/group_channels", self.create_channel),
            web.get(CHANNEL, self.get_channel),
            web.put(CHANNEL, self.update_channel),
            web.post(f"{CHANNEL}/invite", self.invite),
            web.put(f"{CHANNEL}/leave", self.leave),
            web.put(f"{CHANNEL}/freeze", self.freeze),
        ]

    async def create_channel(self, request: web.Request) -> web.Response:
        p = await read_params(request)
        user_ids = _member_ids(p)
        channel_url = p.text("channel_url", default="") or f"sendbird_group_channel_{secrets.token_hex(12)}"
        if not CHANNEL_URL.fullmatch(channel_url):
            raise ApiError(INVALID_VALUE, '"channel_url" must be 4-100 letters, digits or underscores.')
        name = p.text("name", default="", max_length=191)
        custom_type = p.text("custom_type", default="", max_length=128)
        data = p.text("data", default="")
        operator_ids = p.text_list("operator_ids") if "operator_ids" in p else []
        flags = {
            key: p.flag(key, default=False) for key in ("strict", "is_distinct", "is_public", "is_ephemeral")
        }
        if len(user_ids) > MAX_MEMBERS_PER_CALL:
            raise ApiError(INVALID_VALUE, f"At most {MAX_MEMBERS_PER_CALL} users per call.")
        members = [u for u in user_ids if u in self.state.users]
        if flags["strict"] and len(members) < len(user_ids):
            raise ApiError(INVALID_VALUE, "A user in user_ids does not exist.")
        if any(op not in members for op in operator_ids):
            raise ApiError(INVALID_VALUE, "Operators must also be members.")
        if channel_url in self.state.channels:
            raise ApiError(ALREADY_EXISTS_CODE, "Channel already exists.")
        channel = EmulatedChannel(
            channel_url,
            name,
            custom_type,
            data,
            self.state.now_ms(),
            members=members,
            operators=operator_ids,
            is_distinct=flags["is_distinct"],
            is_public=flags["is_public"],
            is_ephemeral=flags["is_ephemeral"],
        )
        self.state.channels[channel_url] = channel
        return json_response(channel_json(self.state, channel))

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        reply = channel_json(
            self.state,
            channel,
            show_member=query_flag(request, "show_member", False),
            show_read_receipt=query_flag(request, "show_read_receipt", False),
        )
        return json_response(reply)

    async def update_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        p = await read_params(request)
        name = p.text("name", default=channel.name, max_length=191)
        custom_type = p.text("custom_type", default=channel.custom_type, max_length=128)
        data = p.text("data", default=channel.data)
        channel.name, channel.custom_type, channel.data = name, custom_type, data
        return json_response(channel_json(self.state, channel))

    async def invite(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        user_ids = (await read_params(request)).text_list("user_ids")
        if not user_ids:
            raise ApiError(MISSING_PARAMETER, '"user_ids" must not be empty.')
        # UNDOCUMENTED BEHAVIOUR: what invite answers for a user that does not exist is not documented
        # (§8: 400201 here is not a documented answer). The emulator leaves such users out, as a
        # non-strict channel creation does (§4); callers read the channel to see who is in.
        channel.members.extend(u for u in user_ids if u in self.state.users and u not in channel.members)
        return json_response(channel_json(self.state, channel))

    async def leave(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        p = await read_params(request)
        user_ids = p.text_list("user_ids")
        p.text(
            "reason", default=""
        )  # checked for its type like Sendbird would; the emulator keeps no history
        remove_operator = p.flag("should_remove_operator_status", default=False)
        # UNDOCUMENTED BEHAVIOUR: what leave answers for a non-member is not documented (§8: 400201 here
        # is not a documented answer). The emulator removes the members among ``user_ids`` and ignores
        # the rest; callers that must know read the channel.
        channel.members = [u for u in channel.members if u not in user_ids]
        if remove_operator:
            channel.operators = [u for u in channel.operators if u not in user_ids]
        for user_id in user_ids:
            channel.read_ts.pop(user_id, None)
        return json_response({})

    async def freeze(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        channel.frozen = (await read_params(request)).flag("freeze")
        return json_response(channel_json(self.state, channel))


def _member_ids(p: Params) -> list[str]:
    """``user_ids``, or the ids in ``users`` (§4: one of the two is required)."""
    if "user_ids" in p or "users" not in p:
        return p.text_list("user_ids")
    users = p.raw("users")
    if not isinstance(users, list) or not all(
        isinstance(u, dict) and isinstance(u.get("user_id"), str) for u in users
    ):
        raise ApiError(LIST_EXPECTED, '"users" must be a list of objects with a "user_id".')
    return list(dict.fromkeys(u["user_id"] for u in users))
