"""The outbox relay: performs the effects workflows recorded (engine/effects.py), until each one succeeds.

Each claimed row is read back into its typed effect (``integrations/effects/outbox.py``) and
performed by the executor registered for that type (``integrations/effects/``); the relay itself
knows no effect by name. Layout: ``runner.py`` (the loop: claim, waves, leases, recovery),
``outcomes.py`` (done / retry at / dead / given back, and the settle of a wave), ``failures.py``
(what a failed delivery means for its entry), ``statements.py`` (the SQL).

Several relays (in several service instances) can run at once: each claims due rows with
``FOR UPDATE SKIP LOCKED`` and takes a lease on them, so no row is worked on twice at the same time,
and a relay killed mid-delivery leaves rows that another relay picks up when the lease runs out. The
lease is short (``lease_seconds``, 10 s) and renewed by a heartbeat while the relay runs, so a crash
pauses the conversations it was delivering for seconds, however long a delivery may take.

**Reconciliation, not trust** (sendbird-api.md §8). Every chat post carries caremsg's own id of what
it posts in ``data``, a field Sendbird returns with every message. After an ambiguous outcome (a
timeout, a dropped connection, a 5xx, any error answering a repeat) and before any repeat of a
post, the relay reads the channel's recent messages (:func:`post_once`): if the post landed, its
Sendbird id is recorded and nothing is posted again. ``dedup_id`` stays as a second layer only,
because what Sendbird answers a repeated one is not documented. Channel creation and membership
changes read the channel before repeating (``repeat``). This holds as long as a post in flight
ends before its lease does (``lease_seconds`` well above the chat client's timeout): a post still
in flight cannot be seen by another relay's read (``integrations/effects/messages.py``).

**Chat and texts apart** (lanes). A relay may be limited to one family of kinds: the service
runs one relay for chat effects and one for texts, each with its own claims, waves and rate budget,
so a backlog of texts never holds up chat posts. Within a family a conversation's entries keep
their order: chat posts after each other, texts after each other.

Retries use exponential backoff with full jitter, capped (``max_backoff``, 300 s). An outage is never
a reason to give up: the provider unavailable, timing out, answering 5xx or rate limiting (the
gateway's retryable errors, :class:`engine.errors.ChatUnavailable` and
:class:`engine.errors.ChatRateLimited`), or the database unreachable from an executor, is retried at
the cap for as long as it lasts, so nothing acknowledged is dropped by a long outage; the backlog it
builds shows in the outbox gauges (``caremsg_outbox_pending``, ``caremsg_outbox_oldest_age_seconds``).
A provider refusing caremsg's own credentials (:class:`engine.errors.ChatCredentialsRejected`:
Sendbird's 400401, Twilio's 20003 or 20005, a bare 401 or 403) is such an outage too: it says
nothing about the entry, and failing it would dead-letter every acknowledged message at once
because a token was rotated badly; it is held the same way, logged at error level
(``relay.provider_credentials_rejected``, naming the provider and its code) and counted
(``caremsg_provider_credential_failures_total``), and goes out once the token is right.
Errors the provider calls permanent (an invalid request, no such channel, a refused number, a
resource not allowed) mark the row (and its message or conversation) ``failed`` with a reason at
once, and an unexpected error of caremsg's own (``relay_error``) does after ``max_attempts``. One
rule says which is which for every executor (``failures.py``: :func:`classify`).

**What a batch costs.** The relay runs in the service's process, next to the request handlers, so
every database round trip it saves is CPU the handlers get back. Per batch of claimed entries:

- one transaction claims the batch and, in it, reads what delivering it needs: an executor with a
  ``prepare`` hook loads its whole share of the batch with one query (a message post then needs
  no read of its own, but the recall check below);
- the batch is split into lanes, one per conversation, each in claim order (the order the entries
  were accepted in). A *wave* takes the next entry of every lane and delivers them concurrently,
  at most ``concurrency`` at a time, so conversations do not wait for each other while each
  conversation's entries go out strictly one after the other. A lane stops at an entry that must
  be retried, and its later entries are given back untried (their attempt not counted), so nothing
  of a conversation overtakes what was accepted before it. Across batches and relays the claim
  keeps the order: it leases a conversation's posts (and its texts) only as a contiguous prefix of
  its pending ones, an entry only with every earlier pending one of its kind leased by the same
  claim, so none can go out before one that another relay holds, or one waiting out a retry.
  Every conversation with something to deliver gets its first entry into a batch before any gets
  a second; the room left goes to the next entries of those conversations, round-robin, at most
  ``CLAIM_RUN`` (3) behind each head: a busy conversation drains four entries per claim, and
  since the relay claims again only once a batch has gone out (a conversation's entries one wave
  each), no other conversation's new entry waits behind a backlog for more than about the waves
  a batch of heads takes anyway. None of this reads the entries queued behind a run
  (``statements.py``: a backlog of thousands in one conversation costs a claim the same as none).
  An entry leased counts as being delivered for a recall (``integrations/db/recalls.py``: not
  cancelled), so whether its message was recalled is known right before it goes out, never as of
  earlier than its turn: the claim's read serves the first wave's entries that get a delivery slot
  at once; for a later wave's, the transaction that settles the wave before it reads again
  (``Rechecking``: one statement for the wave, no transaction of its own), and an entry that waits
  for a slot (a wave larger than ``concurrency``) is delivered with ``entry.fresh`` False and its
  executor checks by itself when the slot comes (one primary-key read). A file post and a text
  read their message as they are delivered. An entry whose message was recalled meanwhile is not
  posted or sent: its executor raises ``EffectCancelled`` and the entry is settled ``cancelled``,
  its delivery ``failed: recalled``, as the recall's own cancel leaves one no relay held, audited
  as a ``delivery.*`` failure naming the reason. What the recall cannot stop is a delivery already
  under way (its read done, its remote call made): that post lands and the recall's
  ``RecallFromChannel`` deletes it (``integrations/effects/recalls.py``). The cost: nothing for a
  batch that is one wave of at most ``concurrency`` entries; one statement in each later wave's
  settle; one read for each entry that waited for a slot;
- each wave is settled in ONE transaction: one statement updates every outbox row of the wave and
  inserts the ``delivery.*`` audit record of each entry it finishes, and each executor records
  the wave's outcomes of its effects with multi-row statements (its ``settle``); the next wave's
  posts are checked for recalls in it (above).

**Why each wave is settled at once, not the batch at its end.** Between a side effect and the commit
of its settle, a relay that dies leaves an entry that is delivered again when its lease runs out.
For a chat message that costs one read (the repeat finds the post and records it). SMS through
Business Messaging has no dedup key: a text whose delivery row is already settled is skipped,
but a text sent and not yet settled is sent again, so for texts that window is a
duplicate window. Settling after every wave keeps it to one wave (its slowest delivery and one
commit) instead of a whole batch of waves.

**Guarantees kept for settling.** A settle only touches entries this relay still holds (status
``pending`` and the ``attempts`` its claim set: a relay whose lease ran out and was re-claimed
elsewhere settles nothing of it), so every entry gets exactly one ``delivery.*`` audit record, in
the transaction that finishes it. A settle that fails (the database went away, a deadlock) loses
nothing: the entries stay leased, their outcomes are kept and settled first thing in the next
cycle, so nothing is delivered again for it. Outcomes that cannot be settled after
``_RESETTLE_TRIES`` attempts with the database reachable are dropped and their entries given
back, to be delivered again (harmless for chat, a possible duplicate for a text). Entries leased
but not delivered when a cycle fails are given back as soon as the database answers again, not
after ``lease_seconds``.
"""

from integrations.effects.executor import RelayContext
from integrations.effects.messages import post_once
from integrations.effects.outbox import OutboxEntry
from integrations.relay.outcomes import Dead, Done, GivenBack, Outcome, RetryAt
from integrations.relay.runner import TEXT_KINDS, OutboxRelay, Relays, RelaySettings

__all__ = [
    "TEXT_KINDS",
    "Dead",
    "Done",
    "GivenBack",
    "OutboxEntry",
    "OutboxRelay",
    "Outcome",
    "RelayContext",
    "RelaySettings",
    "Relays",
    "RetryAt",
    "post_once",
]
