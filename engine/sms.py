"""SMS rules that are not permissions: keywords carriers require, number validity, what a text says.

Who may receive the full message text by SMS *is* a permission: it is the ``sms.send_full_text``
workflow, decided by the policy per recipient (see ``engine.workflows.messaging``). Everything here
is pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
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
    """The carrier keyword an inbound text is, if it is exactly one word of the lists, read as a
    person means it: case and spacing ignored, and what a phone or a keyboard adds around the word
    too (:func:`keyword_word`: full-width letters, invisible characters, punctuation and emoji
    around it, a reply code before or after it). A text with anything more in it ("please don't
    stop the meds") is a message; so is a question ("Stop?"), which the care team should read."""
    word = keyword_word(text)
    if word in rules.stop_words:
        return Keyword.STOP
    if word in rules.start_words:
        return Keyword.START
    if word in rules.help_words:
        return Keyword.HELP
    return None


def inbound_keyword(text: str, provider_keyword: Keyword | None, rules: SmsRules) -> Keyword | None:
    """The keyword an inbound text is, for every inbound path (a known number or not): the SMS
    provider's own reading when it sent one (Twilio's ``OptOutType``, which also covers keywords
    configured at Twilio and not listed here), so caremsg's opt-out record follows the carrier's;
    else caremsg's (:func:`keyword`)."""
    return provider_keyword or keyword(text, rules)


#: A reply code next to the word ("#2 STOP", "STOP #2"): keywords are about the number.
_CODE_BEFORE = re.compile(r"^#\s*\d{1,6}(?!\d)")
_CODE_AFTER = re.compile(r"#\s*\d{1,6}$")
#: A question is not a command: "Stop?" stays a message.
_QUESTION = frozenset("?¿")


def keyword_word(text: str) -> str | None:
    """The one word a text consists of, upper-cased, as :func:`keyword` compares it with the lists;
    None when the text is not one word of ASCII letters.

    Unicode compatibility forms become their plain letters (NFKC: full-width ``STOP`` is ``STOP``);
    invisible format characters (zero-width spaces and joiners, byte order marks, direction marks)
    and emoji variation selectors go wherever they are; then whatever surrounds the word that is no
    letter or digit (spaces, punctuation, emoji) and a reply code before or after it. Spaces inside
    are ignored (``S T O P``); anything else inside (a digit, an apostrophe, an emoji, a
    letter outside ASCII) leaves no keyword."""
    visible = "".join(
        ch
        for ch in unicodedata.normalize("NFKC", text)
        if unicodedata.category(ch) != "Cf" and not "\ufe00" <= ch <= "\ufe0f"
    )
    if any(ch in _QUESTION for ch in visible):
        return None
    core = _trim(visible, keep="#")
    core = _CODE_AFTER.sub("", _CODE_BEFORE.sub("", core, count=1), count=1)
    word = "".join(_trim(core).split())
    if not (word.isascii() and word.isalpha()):
        return None
    return word.upper()


def _trim(text: str, keep: str = "") -> str:
    """``text`` without what surrounds its first and last letter or digit (or character of ``keep``)."""
    start, end = 0, len(text)
    while start < end and not (text[start].isalnum() or text[start] in keep):
        start += 1
    while end > start and not (text[end - 1].isalnum() or text[end - 1] in keep):
        end -= 1
    return text[start:end]


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


def with_part2_notice(text: str, notice: str) -> str:
    """A text sent under a 42 CFR Part 2 consent (full text or notification alike): the text, then
    the notice of 42 CFR 2.32, last, after any reply code. Nothing is cut to fit: the provider sends
    a long text as concatenated segments (the short-form notice adds 75 characters, one segment more
    at most), and a notice cut short would not be the notice."""
    return f"{text}\n{notice}"


# --- which conversation a reply means --------------------------------------------------------------
#
# One number may be an external participant in several conversations, of one organization or of
# several. Each admission gets a reply code (1, 2, 3 ... per number, never reused); while the number
# is active in more than one conversation every text to it ends with its code, and a reply is posted
# only where it unambiguously belongs: the conversation its leading "#code" names, or the number's one
# active conversation. Anything else is held and answered with the codes to choose from, never with
# anything about the conversations themselves (no names, no titles, no organizations).

_LEADING_CODE = re.compile(r"\s*#\s*(\d{1,6})\b[\s:,.;-]*")


def reply_code(text: str) -> tuple[int | None, str]:
    """The reply code a text starts with ("#2 see you then"), if any, and the text without it."""
    match = _LEADING_CODE.match(text)
    if match is None:
        return None, text
    return int(match.group(1)), text[match.end() :]


def with_reply_code(text: str, code: int) -> str:
    """A text to a number that is in several conversations: it says how to answer this one."""
    return f"{text} To reply, start your message with #{code}."


def which_conversation(codes: Iterable[int]) -> str:
    """The question back when a reply's conversation is not clear: the codes only, nothing else."""
    listed = ", ".join(f"#{c}" for c in sorted(codes))
    return (
        "Your reply was not delivered: this number is in more than one conversation. "
        f"Please send it again starting with one of {listed}."
    )
