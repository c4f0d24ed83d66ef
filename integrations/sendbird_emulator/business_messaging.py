"""Business Messaging (§8): outbound SMS notifications only."""

from __future__ import annotations

import secrets

from aiohttp import web

from integrations.sendbird_emulator.resource import Resource
from integrations.sendbird_emulator.state import (
    EmulatedNotification,
)
from integrations.sendbird_emulator.wire import (
    BM_SEND_PATH,
    INVALID_VALUE,
    JSON_EXPECTED,
    MISSING_PARAMETER,
    ApiError,
    json_response,
    read_params,
)


class BusinessMessagingApi(Resource):
    """Business Messaging (§8): outbound SMS notifications only."""

    def routes(self) -> list[web.RouteDef]:
        return [
            # Another host in reality (api-{app_id}.notifications...); here it shares the origin,
            # and the API token stands in for the Business Messaging token.
            web.post(BM_SEND_PATH, self.send_notification),
        ]

    async def send_notification(self, request: web.Request) -> web.Response:
        """``POST /v1/notifications``: ``template.key``, ``targets`` (user ids), ``mode``, variables.

        Strict readings of an unverified contract: realtime mode takes exactly one target; every
        target must be a user carrying ``phone_number`` (else 400111, the number is never echoed).
        UNDOCUMENTED BEHAVIOUR: the reply shape is not documented (§8); ``request_id`` is this
        emulator's choice.
        """
        p = await read_params(request)
        template = p.raw("template")
        if not isinstance(template, dict) or not isinstance(template.get("key"), str) or not template["key"]:
            raise ApiError(MISSING_PARAMETER, '"template.key" is required.')
        targets = p.text_list("targets")
        mode = p.text("mode", default="realtime")
        if mode not in ("realtime", "batch"):
            raise ApiError(INVALID_VALUE, '"mode" must be realtime or batch.')
        if not targets or (mode == "realtime" and len(targets) != 1):
            raise ApiError(INVALID_VALUE, "realtime mode sends to exactly one target.")
        variables = template.get("variables") or {}
        if not isinstance(variables, dict):
            raise ApiError(JSON_EXPECTED, '"template.variables" must be an object.')
        request_id = secrets.token_hex(12)
        for user_id in targets:
            user = self._user(user_id)
            if not user.phone_number:
                raise ApiError(INVALID_VALUE, "A target has no phone_number for the SMS channel.")
            own = variables.get(user_id) or {}
            self.state.notifications.append(
                EmulatedNotification(
                    request_id,
                    template["key"],
                    user_id,
                    user.phone_number,
                    {k: v for k, v in own.items() if isinstance(k, str) and isinstance(v, str)},
                )
            )
        return json_response({"request_id": request_id})
