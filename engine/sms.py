"""SMS rules that are not permissions: keywords carriers require, number validity, what a text says.

Who may receive the full message text by SMS *is* a permission: it is the ``sms.send_full_text``
workflow, decided by the policy per recipient (see ``engine.workflows.messaging``). Everything here
is pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import phonenumbers

#: Recipient keys of delivery rows.
CHANNEL_RECIPIENT = "channel"
SMS_RECIPIENT_PREFIX = "sms:"

FULL_TEXT = "full_text"
NOTIFICATION = "notification"


def sms_recipient(participant_id: int) -> str:
    return f"{SMS_RECIPIENT_PREFIX}{participant_id}"


@dataclass(frozen=True)
class SmsRules:
    """What texts say and which words are carrier keywords (config.toml ``[messaging]``).

    Which compliance groups get full text is policy, not configuration: policies/sms.toml, read,
    checked and reloaded with the other policy files (``Policy.sms_full_text_groups``).
    """

    notification_text: str = "You have a new secure message from your care team."
    help_text: str = "Secure messages from your care team. Reply STOP to opt out, START to opt back in."
    #: The one confirmation an opt-out gets (carriers and CTIA expect it), and the one an opt-in gets.
    stop_text: str = "You will get no more texts from your care team. Reply START to opt back in."
    start_text: str = "You will get texts from your care team again. Reply STOP to opt out."
    stop_words: frozenset[str] = field(
        default=frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
    )
    start_words: frozenset[str] = field(default=frozenset({"START", "UNSTOP", "SUBSCRIBE", "OPTIN"}))
    help_words: frozenset[str] = field(default=frozenset({"HELP", "INFO"}))


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


def keyword_reply(word: Keyword, rules: SmsRules) -> str:
    """What caremsg texts back to a keyword: the help text, or the confirmation of STOP or START."""
    replies = {Keyword.HELP: rules.help_text, Keyword.STOP: rules.stop_text, Keyword.START: rules.start_text}
    return replies[word]


def keyword(text: str, rules: SmsRules) -> Keyword | None:
    """The carrier keyword an inbound text is, if it is exactly one (case and spacing ignored)."""
    word = "".join(text.split()).upper().strip(".!")
    if word in rules.stop_words:
        return Keyword.STOP
    if word in rules.start_words:
        return Keyword.START
    if word in rules.help_words:
        return Keyword.HELP
    return None


def textable(phone_number: str) -> bool:
    """True if the number is a valid number of its numbering plan (libphonenumber's full check).

    The API accepts any E.164 number with a known country code, so that a consent can be recorded
    first; a text goes only to a number that can exist.
    """
    try:
        number = phonenumbers.parse(phone_number, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def sms_text(content: str, message_text: str, rules: SmsRules) -> str:
    """The text of an SMS: the message itself only where the policy allowed full text."""
    return message_text if content == FULL_TEXT else rules.notification_text
