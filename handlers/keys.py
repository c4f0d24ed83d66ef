"""Typed keys for what the app and each request carry (aiohttp warns about string keys).

One module for every key, so what an app holds is read in one place: the composition root
(``handlers/app.py`` and ``handlers/app_messaging.py``) sets each app key once, as its resource starts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web

from engine.model import Actor
from engine.policy import PolicyHolder
from engine.services import Services

if TYPE_CHECKING:
    from engine.consent_index import ConsentIndex
    from engine.ports import ChatGateway, PolicyDirectory, PolicyReloader
    from engine.sms import SmsRules
    from handlers.buckets import Buckets
    from handlers.console.session import SessionCodec
    from handlers.rejections import RejectionSummaries
    from handlers.routing import Endpoint
    from handlers.settings import Settings
    from handlers.telemetry import Operations
    from integrations.audit_chain_keeper import ChainKeeper
    from integrations.audit_sealer import AuditSealer
    from integrations.consent_sync import ConsentSync
    from integrations.db.identity import CachedAccountDirectory
    from integrations.db.resources import Database, Sessions
    from integrations.escalation import EscalationScheduler
    from integrations.relay import Relays
    from integrations.sendbird_emulator import RunningEmulator
    from integrations.twilio_emulator import RunningTwilioEmulator

# --- the app's resources, in the order the composition root starts them ----------------------------
settings_key: web.AppKey[Settings] = web.AppKey("settings_key")
#: The app's wall clock (``create_app``'s ``clock``): the engine's "now" and the console's sessions.
clock_key: web.AppKey[Callable[[], datetime]] = web.AppKey("clock_key")
endpoints_key: web.AppKey[list[Endpoint]] = web.AppKey("endpoints_key")
#: The OpenAPI document as served, built at its first request (handlers/api_docs.py): a dict holding
#: at most the one body, since an app's routes and middlewares no longer change once it runs.
openapi_body_key: web.AppKey[dict[str, bytes]] = web.AppKey("openapi_body_key")
operations_key: web.AppKey[Operations] = web.AppKey("operations_key")
#: Attachments each account may upload (handlers/ratelimit.py ``upload_limit``), by ``user:<id>``.
upload_limit_key: web.AppKey[Buckets] = web.AppKey("upload_limit_key")
database_key: web.AppKey[Database] = web.AppKey("database_key")
sessions_key: web.AppKey[Sessions] = web.AppKey("sessions_key")
accounts_key: web.AppKey[CachedAccountDirectory] = web.AppKey("accounts_key")
emulator_key: web.AppKey[RunningEmulator] = web.AppKey("emulator_key")
chat_key: web.AppKey[ChatGateway] = web.AppKey("chat_key")
consent_index_key: web.AppKey[ConsentIndex] = web.AppKey("consent_index_key")
consent_sync_key: web.AppKey[ConsentSync] = web.AppKey("consent_sync_key")
policy_key: web.AppKey[PolicyHolder] = web.AppKey("policy_key")
policy_reloader_key: web.AppKey[PolicyReloader] = web.AppKey("policy_reloader_key")
#: The policy directory as four-eyes proposals edit it (integrations/policy_edits.py).
policy_files_key: web.AppKey[PolicyDirectory] = web.AppKey("policy_files_key")
sms_rules_key: web.AppKey[SmsRules] = web.AppKey("sms_rules_key")
twilio_emulator_key: web.AppKey[RunningTwilioEmulator] = web.AppKey("twilio_emulator_key")
relay_key: web.AppKey[Relays] = web.AppKey("relay_key")
services_key: web.AppKey[Services] = web.AppKey("services_key")
escalation_key: web.AppKey[EscalationScheduler] = web.AppKey("escalation_key")
audit_sealer_key: web.AppKey[AuditSealer] = web.AppKey("audit_sealer_key")
#: The chain's status, anchors, exports and verification runs (the console's chain page).
audit_chain_key: web.AppKey[ChainKeeper] = web.AppKey("audit_chain_key")
rejections_key: web.AppKey[RejectionSummaries] = web.AppKey("rejections_key")
#: The web console's session cookies and CSRF tokens (handlers/console/).
console_codec_key: web.AppKey[SessionCodec] = web.AppKey("console_codec_key")

# --- what each request carries ---------------------------------------------------------------------
request_id_key: web.RequestKey[str] = web.RequestKey("request_id_key", str)
actor_key: web.RequestKey[Actor] = web.RequestKey("actor_key", Actor)
# The client's address, behind a trusted proxy the one it saw (handlers/proxies.py).
client_address_key: web.RequestKey[str] = web.RequestKey("client_address_key", str)
# The RateLimit-Policy / RateLimit fields for the request's response (handlers/ratelimit.py).
rate_limit_headers_key: web.RequestKey[dict[str, str]] = web.RequestKey("rate_limit_headers_key", dict)
# A console request's signed-in actor, and the CSRF token its forms carry (handlers/console/).
console_actor_key: web.RequestKey[Actor] = web.RequestKey("console_actor_key", Actor)
console_csrf_key: web.RequestKey[str] = web.RequestKey("console_csrf_key", str)
