"""The base of each resource's handlers."""

from __future__ import annotations

from aiohttp import web

from integrations.sendbird import (
    NOT_FOUND_CODE,
)
from integrations.sendbird_emulator.state import EmulatedChannel, EmulatedUser, EmulatorState
from integrations.sendbird_emulator.webhooks import WebhookSender
from integrations.sendbird_emulator.wire import ApiError


class Resource:
    """What every resource's handlers share: the state, the webhook sender, and lookups answering
    Sendbird's "not found" (400201)."""

    def __init__(self, state: EmulatorState, webhooks: WebhookSender) -> None:
        self.state = state
        self.webhooks = webhooks

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def _user(self, user_id: str) -> EmulatedUser:
        user = self.state.users.get(user_id)
        if user is None:
            raise ApiError(NOT_FOUND_CODE, "User not found.")
        return user

    def _channel(self, request: web.Request) -> EmulatedChannel:
        channel = self.state.channels.get(request.match_info["channel_url"])
        if channel is None:
            raise ApiError(NOT_FOUND_CODE, "Channel not found.")
        return channel
