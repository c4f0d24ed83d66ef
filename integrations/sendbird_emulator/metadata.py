"""Channel metadata (§4; the create reply as §8 says)."""

from __future__ import annotations

from aiohttp import web

from integrations.sendbird import (
    ALREADY_EXISTS_CODE,
    NOT_FOUND_CODE,
)
from integrations.sendbird_emulator.resource import Resource
from integrations.sendbird_emulator.wire import (
    ApiError,
    json_response,
    metadata_changes,
    query_list,
    read_params,
)

CHANNEL = "/v3/group_channels/{channel_url}"


class MetadataApi(Resource):
    """Channel metadata (§4; the create reply as §8 says)."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"{CHANNEL}/metadata", self.create_metadata),
            web.put(f"{CHANNEL}/metadata", self.update_metadata),
            web.get(f"{CHANNEL}/metadata", self.get_metadata),
            web.delete(f"{CHANNEL}/metadata", self.delete_metadata),
            web.delete(f"{CHANNEL}/metadata/{{key}}", self.delete_metadata_key),
        ]

    async def create_metadata(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        p = await read_params(request)
        metadata = p.text_map("metadata")
        include_ts = p.flag("include_ts", default=False)
        if any(key in channel.metadata for key in metadata):
            raise ApiError(ALREADY_EXISTS_CODE, "A metadata key already exists.")
        channel.metadata.update(metadata)
        # §8: the create reply is {"metadata": {...}, "include_ts": ...}, not a flat map.
        return json_response({"metadata": metadata, "include_ts": include_ts})

    async def update_metadata(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        changes = metadata_changes(await read_params(request), channel.metadata)
        channel.metadata.update(changes)
        return json_response(changes)

    async def get_metadata(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        keys = query_list(request, "keys")
        if keys:
            return json_response({k: channel.metadata[k] for k in keys if k in channel.metadata})
        return json_response(dict(channel.metadata))

    async def delete_metadata(self, request: web.Request) -> web.Response:
        self._channel(request).metadata.clear()
        return json_response({})

    async def delete_metadata_key(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.metadata.pop(request.match_info["key"], None) is None:
            raise ApiError(NOT_FOUND_CODE, "Metadata key not found.")
        return json_response({})
