"""Users (§3): create, view, update, metadata."""

from __future__ import annotations

from aiohttp import web

from integrations.sendbird import (
    ALREADY_EXISTS_CODE,
)
from integrations.sendbird_emulator.resource import Resource
from integrations.sendbird_emulator.state import (
    EmulatedUser,
)
from integrations.sendbird_emulator.wire import (
    E164,
    INVALID_VALUE,
    MISSING_PARAMETER,
    ApiError,
    Params,
    json_response,
    metadata_changes,
    read_params,
    user_json,
)


class UsersApi(Resource):
    """Users (§3): create, view, update, metadata."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v3/users", self.create_user),
            web.get("/v3/users/{user_id}", self.get_user),
            web.put("/v3/users/{user_id}", self.update_user),
            web.put("/v3/users/{user_id}/metadata", self.update_user_metadata),
        ]

    async def create_user(self, request: web.Request) -> web.Response:
        p = await read_params(request)
        user_id = p.text("user_id", max_length=80)
        if not user_id:
            raise ApiError(INVALID_VALUE, '"user_id" must not be empty.')
        if "nickname" not in p:  # required, but may be null
            raise ApiError(MISSING_PARAMETER, '"nickname" is required.')
        nickname = p.text("nickname", default="", max_length=80)
        profile_url = p.text("profile_url", max_length=2048)
        phone_number = _phone_number(p)
        metadata = p.text_map("metadata") if "metadata" in p else {}
        if user_id in self.state.users:
            raise ApiError(ALREADY_EXISTS_CODE, "User already exists.")
        user = EmulatedUser(user_id, nickname, profile_url, self.state.now_ms(), phone_number, metadata)
        self.state.users[user_id] = user
        return json_response(user_json(user))

    async def get_user(self, request: web.Request) -> web.Response:
        return json_response(user_json(self._user(request.match_info["user_id"])))

    async def update_user(self, request: web.Request) -> web.Response:
        user = self._user(request.match_info["user_id"])
        p = await read_params(request)
        nickname = p.text("nickname", default=user.nickname, max_length=80)
        profile_url = p.text("profile_url", default=user.profile_url, max_length=2048)
        phone_number = _phone_number(p) if "phone_number" in p else user.phone_number
        is_active = p.flag("is_active", default=user.is_active)
        user.nickname, user.profile_url, user.phone_number, user.is_active = (
            nickname,
            profile_url,
            phone_number,
            is_active,
        )
        return json_response(user_json(user))

    async def update_user_metadata(self, request: web.Request) -> web.Response:
        user = self._user(request.match_info["user_id"])
        p = await read_params(request)
        changes = metadata_changes(p, user.metadata)
        user.metadata.update(changes)
        return json_response(changes)


def _phone_number(p: Params) -> str:
    phone_number = p.text("phone_number", default="")
    if phone_number and not E164.fullmatch(phone_number):
        # The value is never echoed back: it may be a real person's number.
        raise ApiError(INVALID_VALUE, '"phone_number" must be in E.164 format.')
    return phone_number
