"""A Sendbird Platform API emulator for development and tests: an aiohttp app on loopback only.

It implements the part of ``/v3`` that :class:`integrations.sendbird.SendbirdClient` uses, with the
request and reply shapes and error bodies of ``docs/sendbird-api.md`` (sections cited
below). Where that contract is unsure, the emulator takes the strict reading, so code that works
here is not relying on leniency the real service may not have: unknown users fail a strict channel
creation, MESG senders must be members. It answers only error codes the Platform API documents,
and every behaviour no Sendbird source documents is marked ``UNDOCUMENTED BEHAVIOUR`` where it is
defined; where the documentation allows several answers (a repeated ``dedup_id``), each is a mode.

Beyond the API it offers what tests need and the real service cannot give:

- :class:`EmulatorState`, in memory and inspectable: users, channels (members, operators, frozen,
  metadata, read state), messages per channel with their ``dedup_id`` index, the ``received`` log
  of every ``/v3`` request, and the ``webhook_deliveries`` log;
- fault injection (:class:`FaultInjector`, also at ``/_emulator/faults``): 5xx for the next N
  requests or for T seconds, 429 with ``X-RateLimit-RetryAfter``, a hang, and accept-then-drop (a
  connection closed after the request was processed, for N requests or T seconds: the "did it
  happen?" case the relay reconciles);
- webhooks (§7): ``group_channel:message_send`` and ``group_channel:message_read`` POSTed from a
  background task, signed with ``x-sendbird-signature``, ``/`` escaped as ``\\/``, up to 3 tries.

Never point real traffic or real PHI at it: it keeps everything in memory and logs nothing useful
for production. Run it alone with ``python -m integrations.sendbird_emulator --port 8090``.

One module per Sendbird resource it imitates (``users``, ``channels``, ``messages``, ``metadata``,
``business_messaging``), on ``state`` (what it knows), ``faults``, ``wire`` (error codes, JSON,
parameters, reply shapes) and ``webhooks``; ``app`` puts them together.
"""

from integrations.sendbird_emulator.app import (
    RunningEmulator,
    create_emulator_app,
    emulator_state_key,
    start_emulator,
    webhook_sender_key,
)
from integrations.sendbird_emulator.cli import main
from integrations.sendbird_emulator.faults import Fault, FaultInjector, FaultKind
from integrations.sendbird_emulator.state import (
    DEDUP_MODES,
    DedupMode,
    EmulatedChannel,
    EmulatedMessage,
    EmulatedNotification,
    EmulatedUser,
    EmulatorState,
    ReceivedRequest,
    WebhookDelivery,
)
from integrations.sendbird_emulator.webhooks import WebhookSender
from integrations.sendbird_emulator.wire import BM_SEND_PATH, sendbird_json

__all__ = [
    "BM_SEND_PATH",
    "DEDUP_MODES",
    "DedupMode",
    "EmulatedChannel",
    "EmulatedMessage",
    "EmulatedNotification",
    "EmulatedUser",
    "EmulatorState",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "ReceivedRequest",
    "RunningEmulator",
    "WebhookDelivery",
    "WebhookSender",
    "create_emulator_app",
    "emulator_state_key",
    "main",
    "sendbird_json",
    "start_emulator",
    "webhook_sender_key",
]
