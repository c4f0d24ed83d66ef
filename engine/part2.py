"""Which chat posts carry the 42 CFR 2.32 notice: pure, no I/O.

The first message of a conversation that reaches an organization's members under a Part 2 consent
is preceded in the channel by the notice (policies/notices.toml), once per (conversation, recipient
organization). The relay asks this module, for the messages it is about to post, which notices are
due (integrations/effects/messages.py); it reads the Part 2 consents naming the members'
organizations, and the notices already given, with the messages it posts anyway (no query more).
What this answers is what one relay saw: before posting a notice the relay claims it in
``part2_notices`` (a row per conversation and organization, locked until the notice is posted), so
of several relays posting a conversation's first messages at once only one gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The audit event of a notice given (with the consent it rests on in its details).
NOTICE_SENT = "part2.notice_sent"


@dataclass(frozen=True)
class Covering:
    """A consent that discloses the patient to one organization whose staff are in the conversation."""

    organization_id: int
    consent_id: int
    part2: bool


@dataclass(frozen=True)
class Post:
    """A message about to be posted, with the consents covering the conversation's other organizations."""

    message_id: int
    conversation_id: int
    covering: Sequence[Covering]


@dataclass(frozen=True)
class NoticeDue:
    """The notice to post before ``message_id``: its recipients are ``organization_id``'s members,
    whose access rests on Part 2 consent ``consent_id``."""

    message_id: int
    conversation_id: int
    organization_id: int
    consent_id: int


def notices_due(posts: Iterable[Post], given: Iterable[tuple[int, int]] = ()) -> list[NoticeDue]:
    """The notices due before these posts: for each (conversation, organization) covered by a Part 2
    consent and not noticed yet (``given``), one, before the earliest of the posts (by message id).
    An organization covered by several Part 2 consents is noticed once, naming the lowest id."""
    done = set(given)
    due: list[NoticeDue] = []
    for post in sorted(posts, key=lambda p: p.message_id):
        for cover in sorted(post.covering, key=lambda c: (c.organization_id, c.consent_id)):
            key = (post.conversation_id, cover.organization_id)
            if not cover.part2 or key in done:
                continue
            done.add(key)
            due.append(
                NoticeDue(post.message_id, post.conversation_id, cover.organization_id, cover.consent_id)
            )
    return due
