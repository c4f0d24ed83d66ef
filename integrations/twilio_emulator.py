"""A Twilio Programmable Messaging emulator for development and tests: it plays the carrier.

It answers the one call :class:`integrations.twilio.TwilioSmsGateway` makes (create a Message) as
Twilio's documentation describes it, and plays the people at the other end: :meth:`receive_sms`
is a person texting caremsg's number, posted to the configured webhook form-encoded and signed with
``X-Twilio-Signature`` exactly like Twilio (see ``integrations.twilio`` for the sources).

Keywords are handled like Twilio's default STOP filtering with Advanced Opt-Out on a Messaging
Service: a body that is exactly an opt-out keyword (case ignored) opts the number out at the
carrier, Twilio answers it itself (recorded in ``auto_replies``, not sent through the API) and the
webhook carries ``OptOutType``; from then on a text to that number is refused with 21610 until the
person texts an opt-in keyword.

UNDOCUMENTED BEHAVIOUR, chosen here: the body of an injected 5xx (Twilio documents none) and the
message ``status`` being ``queued`` for ever (no status callbacks are emulated). Twilio does not
retry a messaging webhook by default; neither does the emulator.

Never point real traffic or real PHI at it: it keeps everything in memory. Loopback only.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Final

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from integrations.background import BackgroundTasks
from integrations.sendbird_emulator import FaultInjector
from integrations.sendbird_emulator.app import is_loopback_host
from integrations.twilio import (
    API_VERSION,
    AUTHENTICATION_FAILED,
    INVALID_TO_NUMBER,
    SIGNATURE_HEADER,
    TOO_MANY_REQUESTS,
    UNSUBSCRIBED_RECIPIENT,
    messages_path,
    sign_request,
)

_log = structlog.get_logger(__name__)

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
MAX_BODY: Final = 1600  # Twilio: a Body of up to 1,600 characters

# Twilio's default keywords (help.twilio.com "Twilio support for opt-out keywords").
OPT_OUT_WORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN_WORDS: Final = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS: Final = frozenset({"HELP", "INFO"})

MISSING_TO: Final = 21604
MISSING_BODY: Final = 21602
MISSING_FROM: Final = 21603
INTERNAL_ERROR: Final = 20500  # UNDOCUMENTED BEHAVIOUR: the body of an injected 5xx


@dataclass(frozen=True)
class EmulatedSms:
    """One text caremsg asked Twilio to send (accepted), in order."""

    sid: str
    phone_number: str = field(repr=False)
    sender: str = field(repr=False)
    text: str = field(repr=False)


@dataclass
class TwilioEmulatorState:
    """What the emulated carrier knows; tests read it and inject faults through ``faults``."""

    account_sid: str
    auth_token: str = field(repr=False)
    number: str = field(repr=False)
    messaging_service_sid: str
    faults: FaultInjector
    sent: list[EmulatedSms] = field(default_factory=list)
    #: Twilio's own answers to keywords (STOP/START/HELP), by number: never sent through the API.
    auto_replies: list[tuple[str, str]] = field(default_factory=list, repr=False)
    opted_out: set[str] = field(default_factory=set, repr=False)
    #: Every request to the API: method, path, form.
    received: list[tuple[str, str, dict[str, str]]] = field(default_factory=list, repr=False)
    #: Webhooks posted: (params, HTTP status or None for no answer).
    webhooks: list[tuple[dict[str, str], int | None]] = field(default_factory=list, repr=False)


def _error(code: int, message: str, status: int) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _middleware(state: TwilioEmulatorState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(f"/{API_VERSION}/"):
            return await handler(request)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        state.received.append((request.method, request.path, form))
        fault = state.faults.take()
        if fault is not None:
            if fault.kind == "error":
                return _error(INTERNAL_ERROR, "Internal Server Error", fault.status)
            if fault.kind == "rate_limit":
                return _error(TOO_MANY_REQUESTS, "Too Many Requests", 429)
            if fault.kind == "hang":
                await state.faults.hang(fault.hang_seconds)
        if not _authorised(request, state):
            response: web.StreamResponse = _error(AUTHENTICATION_FAILED, "Authenticate", 401)
        else:
            response = await handler(request)
        if fault is not None and fault.kind == "drop" and request.transport is not None:
            request.transport.close()  # accepted, but the answer never reaches the caller
        return response

    return middleware


def _authorised(request: web.Request, state: TwilioEmulatorState) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except ValueError:
        return False
    return hmac.compare_digest(user.encode(), state.account_sid.encode()) and hmac.compare_digest(
        password.encode(), state.auth_token.encode()
    )


async def _create_message(request: web.Request) -> web.Response:
    state: TwilioEmulatorState = request.app[twilio_state_key]
    if request.match_info["account_sid"] != state.account_sid:
        return _error(20404, "The requested resource was not found", 404)
    form = await request.post()
    to, body = str(form.get("To", "")), str(form.get("Body", ""))
    sender = str(form.get("From", "") or form.get("MessagingServiceSid", ""))
    if not to:
        return _error(MISSING_TO, "A 'To' phone number is required.", 400)
    if not sender:
        return _error(MISSING_FROM, "A 'From' phone number is required.", 400)
    if not body:
        return _error(MISSING_BODY, "Message body is required.", 400)
    if len(body) > MAX_BODY:
        return _error(21617, "The concatenated message body exceeds the 1600 character limit.", 400)
    if not _E164.fullmatch(to):
        return _error(INVALID_TO_NUMBER, "The 'To' number is not a valid phone number.", 400)
    if to in state.opted_out:
        return _error(UNSUBSCRIBED_RECIPIENT, "Attempt to send to unsubscribed recipient", 400)
    message = EmulatedSms(_sid("SM"), to, sender, body)
    state.sent.append(message)
    now = format_datetime(datetime.now(UTC), usegmt=True)
    return web.json_response(
        {
            "sid": message.sid,
            "account_sid": state.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": state.number if "From" not in form else sender,
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "status": "queued",
            "to": to,
            "uri": f"{messages_path(state.account_sid)[:-5]}/{message.sid}.json",
        },
        status=201,
    )


twilio_state_key = web.AppKey("twilio_state", TwilioEmulatorState)


@dataclass
class RunningTwilioEmulator:
    """A Twilio emulator serving on loopback; ``base_url`` replaces ``https://api.twilio.com``."""

    base_url: str
    state: TwilioEmulatorState
    _runner: web.AppRunner = field(repr=False)
    webhook_url: str | None = None
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    _tasks: BackgroundTasks = field(default_factory=BackgroundTasks, repr=False)

    def set_webhook_url(self, url: str | None) -> None:
        """Where incoming messages are posted (the number's "A message comes in" webhook)."""
        self.webhook_url = url

    def receive_sms(self, from_number: str, text: str, *, message_sid: str | None = None) -> str:
        """A person at ``from_number`` texts caremsg's number; returns the Message SID.

        Keywords act at the carrier first (opt-out / opt-in, Twilio's own reply), then the message is
        posted to the webhook like any other, with ``OptOutType``. Passing the same ``message_sid``
        again plays a repeated delivery of the same message.
        """
        if self.webhook_url is None:
            raise ValueError("no webhook URL is configured")
        state = self.state
        sid = message_sid or _sid("SM")
        params = {
            "ToCountry": "US",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": text,
            "To": state.number,
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": state.account_sid,
            "From": from_number,
            "ApiVersion": API_VERSION,
        }
        if state.messaging_service_sid:
            params["MessagingServiceSid"] = state.messaging_service_sid
        word = text.strip().upper()
        opt_out_type = (
            "STOP"
            if word in OPT_OUT_WORDS
            else "START"
            if word in OPT_IN_WORDS
            else "HELP"
            if word in HELP_WORDS
            else ""
        )
        if opt_out_type == "STOP":
            state.opted_out.add(from_number)
        elif opt_out_type == "START":
            state.opted_out.discard(from_number)
        if opt_out_type:
            state.auto_replies.append((from_number, opt_out_type))
            if state.messaging_service_sid:  # Advanced Opt-Out lives on a Messaging Service
                params["OptOutType"] = opt_out_type
        self._tasks.spawn(self._post(self.webhook_url, params))
        return sid

    async def drain(self) -> None:
        """Wait until every webhook posted so far has been answered (or failed)."""
        await self._tasks.drain()

    async def _post(self, url: str, params: dict[str, str]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        headers = {
            SIGNATURE_HEADER: sign_request(url, params, self.state.auth_token),
            "User-Agent": "TwilioProxy/1.1",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "*/*",
        }
        status: int | None = None
        try:
            async with self._session.post(url, data=params, headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self.state.webhooks.append((params, status))

    async def close(self) -> None:
        """Stop serving; webhooks still in flight are abandoned."""
        self.state.faults.release_hangs()
        await self._tasks.cancel()
        if self._session is not None:
            await self._session.close()
        await self._runner.cleanup()


async def start_twilio_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    account_sid: str | None = None,
    auth_token: str | None = None,
    number: str = "+12025550100",
    messaging_service_sid: str | None = None,
) -> RunningTwilioEmulator:
    """Serve a new Twilio emulator on a loopback ``host``; ``port`` 0 picks a free port.

    Credentials default to fresh random ones (read them from ``state``); ``messaging_service_sid``
    defaults to a fresh one, i.e. Advanced Opt-Out on (pass ``""`` for a plain number).
    """
    if not is_loopback_host(host):
        raise ValueError("the emulator binds loopback addresses only")
    state = TwilioEmulatorState(
        account_sid or _sid("AC"),
        auth_token or secrets.token_hex(16),
        number,
        _sid("MG") if messaging_service_sid is None else messaging_service_sid,
        FaultInjector(),
    )
    app = web.Application(middlewares=[_middleware(state)])
    app[twilio_state_key] = state
    app.router.add_post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", _create_message)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    url_host = f"[{host}]" if ":" in host else host
    running = RunningTwilioEmulator(f"http://{url_host}:{runner.addresses[0][1]}", state, runner)
    _log.info("twilio_emulator.started", base_url=running.base_url, development_only=True)
    return running
