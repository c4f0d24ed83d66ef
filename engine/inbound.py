"""Which workflow an inbound event drives.

The webhook adapter (integrations/webhooks.py) verifies, stores and parses what Sendbird and the SMS
provider send; what each event means is decided here: a text from a phone runs ``sms_received``, a
message staff posted with a chat SDK runs ``chat_message_posted``, a read receipt runs ``chat_read``.
Each workflow takes the stored event first (locked; nothing is done unless it is still pending) and
marks it done in the transaction of its effects.
"""

from __future__ import annotations

from engine.services import Services
from engine.workflows import messaging
from engine.workflows.messaging import ChatMessagePosted, ChatRead, InboundSms

#: An inbound event the adapter could read: every other stored event is bookkept as ignored.
InboundEvent = InboundSms | ChatMessagePosted | ChatRead


async def handle_inbound(services: Services, event: InboundEvent) -> str:
    """Run the workflow ``event`` calls for; returns the status it left the stored event in
    (``processed`` or ``ignored``, as the workflow decided), or ``already_handled`` when the event
    was no longer pending (another processor handled it: nothing was done here)."""
    if isinstance(event, InboundSms):
        return await messaging.sms_received(services, event)
    if isinstance(event, ChatMessagePosted):
        return await messaging.chat_message_posted(services, event)
    return await messaging.chat_read(services, event)
