"""Retention ports: which messages' content has outlived its lifespan, and deleting that content
(see :mod:`engine.retention` for the lifespans and :mod:`engine.workflows.retention` for the sweep)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from engine.retention import LegalHold


@dataclass(frozen=True)
class Cutoffs:
    """Per organization, the moment before which a message's content has outlived its lifespan.

    ``by_organization`` holds the organizations with their own entry (None: kept forever); every
    other organization takes ``default`` (None: kept forever)."""

    default: datetime | None
    by_organization: dict[int, datetime | None]

    @property
    def nothing_expires(self) -> bool:
        return self.default is None and all(c is None for c in self.by_organization.values())


@dataclass(frozen=True)
class ExpiredContent:
    """A message whose content has outlived its lifespan and that no legal hold covers."""

    message_id: int
    conversation_id: int
    patient_id: int
    organization_id: int
    #: Recalled already: its copy left the channel then; only the legal record's text remains.
    recalled: bool


@dataclass(frozen=True)
class ExpiredSmsReply:
    """An external participant's SMS reply, posted into a conversation's channel, whose text has
    outlived its lifespan and that no legal hold covers. caremsg keeps no message row for it: its
    text lives in the post's outbox entry and the stored inbound webhook (``event_id``, None if
    that is gone)."""

    outbox_id: int
    event_id: int | None
    conversation_id: int
    patient_id: int
    organization_id: int
    #: Where it was posted, by whom, under which provider message id; the channel's id of the post
    #: if it recorded one. ``posted``: it went out (or may be going out right now), so the channel
    #: holds a copy to delete; one still queued is cancelled instead.
    channel_url: str
    sender_chat_id: str
    dedup_id: str
    chat_message_id: int | None
    posted: bool


class RetentionSweeps(Protocol):
    """Finding and deleting expired message content, in the workflow's transaction."""

    async def plan(self, cutoffs: Cutoffs) -> dict[int, int]:
        """Per organization id, how many messages (and SMS replies) the next sweep would delete
        the content of (still have content, older than their cutoff, under no legal hold that lasts)."""
        ...

    async def claim(self, cutoffs: Cutoffs, limit: int) -> list[ExpiredContent]:
        """Up to ``limit`` such messages, oldest first, locked until the transaction ends; rows
        another transaction holds are skipped (several sweeps claim different messages)."""
        ...

    async def delete_content(self, message_ids: list[int], at: datetime) -> None:
        """Delete every copy of these messages' content in caremsg's tables and mark them
        ``content_deleted_at``: their text, a recalled one's legal-record text, their attached
        files and the raw bodies of the chat provider's webhooks about them. Their metadata,
        deliveries and audit records stay."""
        ...

    async def claim_sms_replies(self, cutoffs: Cutoffs, limit: int) -> list[ExpiredSmsReply]:
        """Up to ``limit`` SMS replies whose text is due (by the conversation's patient's
        organization, under no legal hold that lasts), oldest first, locked as :meth:`claim` does."""
        ...

    async def delete_sms_replies(self, replies: list[ExpiredSmsReply]) -> None:
        """Delete these replies' text from their outbox entries (one not posted yet is cancelled)
        and from their stored inbound webhooks; the entries and webhook rows stay."""
        ...


@dataclass(frozen=True)
class NewLegalHold:
    organization_id: int
    patient_id: int | None
    conversation_id: int | None
    subject_patient_id: int
    reason: str
    placed_by: int
    placed_at: datetime


class LegalHoldRepository(Protocol):
    """Legal holds, in the workflow's transaction."""

    async def add(self, hold: NewLegalHold) -> LegalHold:
        """Record the hold. A retention sweep deleting the subject patient's content right now
        commits before the hold does (this waits for it); none deletes it after."""
        ...

    async def get(self, hold_id: int) -> LegalHold | None: ...

    async def lift(self, hold_id: int, *, by: int, at: datetime, reason: str) -> bool:
        """Lift the hold if it still lasts (True); False if it was lifted already."""
        ...

    async def of_organization(self, organization_id: int, *, active_only: bool) -> list[LegalHold]:
        """The organization's holds, newest first."""
        ...
