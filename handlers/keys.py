"""Typed keys for what the app and each request carry (aiohttp warns about string keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from engine.model import Actor
from engine.policy import PolicyHolder
from engine.services import Services

if TYPE_CHECKING:
    from handlers.metrics import Operations
    from handlers.rejections import RejectionSummaries
    from handlers.routing import Endpoint
    from handlers.settings import Settings

settings_key: web.AppKey[Settings] = web.AppKey("settings_key")
services_key: web.AppKey[Services] = web.AppKey("services_key")
policy_key: web.AppKey[PolicyHolder] = web.AppKey("policy_key")
endpoints_key: web.AppKey[list[Endpoint]] = web.AppKey("endpoints_key")
operations_key: web.AppKey[Operations] = web.AppKey("operations_key")
rejections_key: web.AppKey[RejectionSummaries] = web.AppKey("rejections_key")

request_id_key: web.RequestKey[str] = web.RequestKey("request_id_key", str)
actor_key: web.RequestKey[Actor] = web.RequestKey("actor_key", Actor)
# The RateLimit-Policy / RateLimit fields for the request's response (handlers/ratelimit.py).
rate_limit_headers_key: web.RequestKey[dict[str, str]] = web.RequestKey("rate_limit_headers_key", dict)
