"""The relay without a database: each effect reaches the executor registered for its type, each
result becomes its outcome (done, retry at, dead, cancelled, given back), and a settled wave tells each
executor exactly what it finished. The SQL those outcomes run is tested on PostgreSQL in
tests/integration/test_relay.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from structlog.testing import capture_logs

from engine.effects import (
    KIND,
    AnswerKeyword,
    AskWhichConversation,
    CreateChannel,
    DeleteFromChannel,
    DeleteSmsReplyFromChannel,
    Effect,
    EscalateUrgent,
    InviteMembers,
    NotifyComplianceOfBreakGlass,
    PostAttachment,
    PostMessage,
    PostSmsReply,
    RealertUrgent,
    RecallFromChannel,
    RemoveMembers,
    TextMessage,
    TextUrgentAlert,
    kind_of,
)
from engine.errors import ChatCredentialsRejected, ChatInvalidRequest, ChatRateLimited, ChatUnavailable
from engine.sms import Keyword
from integrations.effects.executor import EffectCancelled, Executors
from integrations.effects.outbox import OutboxEntry, Unreadable, effect_from, outbox_row
from integrations.effects.posts import MessageRecalled
from integrations.relay import TEXT_KINDS, Dead, Done, GivenBack, OutboxRelay, Relays, RelaySettings, RetryAt
from integrations.relay.outcomes import Cancelled, finished, settle_params
from tests.support.fakes import FakeChatGateway, FakeExecutor


def relay(*executors: FakeExecutor, max_attempts: int = 5, concurrency: int = 8, **hooks: Any) -> OutboxRelay:
    # An unbound session factory: attempt() never opens a session (the executors are fakes).
    return OutboxRelay(
        async_sessionmaker(),
        FakeChatGateway(),  # type: ignore[arg-type]
        RelaySettings(base_backoff=1.0, max_backoff=60.0, max_attempts=max_attempts, concurrency=concurrency),
        executors=list(executors),  # type: ignore[arg-type]
        jitter=lambda cap: cap,  # the backoff's upper bound, so delays can be asserted
        **hooks,
    )


def entry(effect: Effect | Unreadable, *, id: int = 1, attempts: int = 1) -> OutboxEntry:
    kind = effect.reason if isinstance(effect, Unreadable) else kind_of(effect)
    return OutboxEntry(id, kind, effect, attempts)


REPLY = PostSmsReply(4, "channel_4", sender_chat_id="ext_9", text="see you then", dedup_id="SM1")


# --- dispatch by type -------------------------------------------------------------------------------


async def test_each_effect_is_performed_by_the_executor_registered_for_its_type() -> None:
    texts = FakeExecutor((TextMessage, AnswerKeyword, AskWhichConversation))
    replies = FakeExecutor((PostSmsReply,))
    r = relay(texts, replies)

    outcomes = [
        await r.attempt(entry(REPLY, id=1)),
        await r.attempt(entry(AnswerKeyword(4, 9, Keyword.HELP), id=2)),
        await r.attempt(entry(TextMessage(4, 70, 700), id=3)),
    ]

    assert replies.delivered == [REPLY]
    assert texts.delivered == [AnswerKeyword(4, 9, Keyword.HELP), TextMessage(4, 70, 700)]
    assert [type(o) for o in outcomes] == [Done, Done, Done]


async def test_an_executor_registered_later_for_a_type_replaces_the_default_one() -> None:
    posts = FakeExecutor((PostMessage,))  # the relay's own PostMessageExecutor would open a session

    outcome = await relay(posts).attempt(entry(PostMessage(4, 70)))

    assert posts.delivered == [PostMessage(4, 70)]
    assert outcome == Done(entry(PostMessage(4, 70)))


async def test_an_effect_whose_type_has_no_executor_is_dead_lettered_as_an_unknown_kind() -> None:
    outcome = await relay().attempt(entry(NotifyComplianceOfBreakGlass(12)))

    assert outcome == Dead(entry(NotifyComplianceOfBreakGlass(12)), "unknown_kind")


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        ("fax_the_patient", {"message_id": 1}, "unknown_kind"),
        (KIND[PostMessage], {"no_message_id": 1}, "unreadable_entry"),
        (KIND[AnswerKeyword], {"keyword_reply": "shout", "participant_id": 9}, "unreadable_entry"),
    ],
    ids=["a kind this release does not know", "a post without its message", "an unknown keyword"],
)
async def test_a_stored_entry_that_is_not_a_known_effect_is_dead_lettered_with_why(
    kind: str, payload: dict[str, Any], reason: str
) -> None:
    stored = OutboxEntry(1, kind, effect_from(kind, payload, 4, 70), 1)

    outcome = await relay(FakeExecutor((PostMessage, AnswerKeyword))).attempt(stored)

    assert outcome == Dead(stored, reason)


# --- what a delivery's result becomes ---------------------------------------------------------------


async def test_a_transient_failure_is_retried_after_an_exponential_backoff_with_its_code() -> None:
    e = entry(REPLY, attempts=3)

    outcome = await relay(FakeExecutor((PostSmsReply,), ChatUnavailable("down", status=503))).attempt(e)

    assert outcome == RetryAt(e, "chat_unavailable", 4.0)  # base 1 s · 2^(3-1), jitter at its cap


async def test_a_rate_limit_is_retried_no_sooner_than_the_provider_asked() -> None:
    e = entry(REPLY, attempts=1)
    limited = ChatRateLimited("slow down", retry_after=30.0)

    outcome = await relay(FakeExecutor((PostSmsReply,), limited)).attempt(e)

    assert outcome == RetryAt(e, "chat_rate_limited", 30.0)


async def test_a_permanent_failure_is_dead_at_once_with_the_providers_code() -> None:
    e = entry(REPLY, attempts=1)

    outcome = await relay(FakeExecutor((PostSmsReply,), ChatInvalidRequest("bad"))).attempt(e)

    assert outcome == Dead(e, "chat_invalid_request")


@pytest.mark.parametrize(
    "outage",
    [
        ChatUnavailable("down", status=503),
        ChatUnavailable("Sendbird send_message timed out"),
        ChatRateLimited("slow down"),
        ConnectionRefusedError("the database is away"),
        ChatCredentialsRejected("bad token", provider="sendbird", provider_code=400401, status=401),
    ],
    ids=["5xx", "timeout", "rate limited", "database unreachable", "our credentials refused"],
)
async def test_an_outage_is_never_dead_however_long_it_lasts_and_is_retried_at_the_cap(
    outage: Exception,
) -> None:
    """An outage of hours (thousands of attempts at a 60 s cap) ends no entry: what was acknowledged
    is delivered when the provider is back, however long it was away."""
    r = relay(FakeExecutor((PostSmsReply,), outage), max_attempts=5)

    outcomes = [await r.attempt(entry(REPLY, attempts=n)) for n in (5, 6, 50, 5_000, 10**9)]

    assert all(isinstance(o, RetryAt) for o in outcomes), outcomes
    assert [o.delay for o in outcomes if isinstance(o, RetryAt)] == [16.0, 32.0, 60.0, 60.0, 60.0]


async def test_a_refusal_of_our_credentials_is_told_to_the_operator_and_counted_without_phi() -> None:
    counted: list[tuple[str, int | None]] = []
    refused = ChatCredentialsRejected("bad token", provider="twilio", provider_code=20003, status=401)
    r = relay(FakeExecutor((PostSmsReply,), refused), on_credentials_rejected=lambda *c: counted.append(c))

    with capture_logs() as logs:
        outcome = await r.attempt(entry(REPLY, attempts=7))

    assert outcome == RetryAt(entry(REPLY, attempts=7), "chat_credentials_rejected", 60.0)
    assert counted == [("twilio", 20003)]
    assert [(e["event"], e["log_level"], e["provider"], e["provider_code"]) for e in logs] == [
        ("relay.provider_credentials_rejected", "error", "twilio", 20003)
    ]
    assert REPLY.text not in str(logs)


async def test_the_backoff_stays_at_its_cap_for_any_number_of_attempts() -> None:
    r = relay()

    assert [r.backoff(n) for n in (0, 1, 2, 7, 1_100, 10**6)] == [1.0, 1.0, 2.0, 60.0, 60.0, 60.0]


@pytest.mark.parametrize(
    "cancelled", [MessageRecalled("recalled since the claim"), EffectCancelled()], ids=["recalled", "any"]
)
async def test_an_effect_no_longer_to_be_done_is_cancelled_with_its_reason_never_retried(
    cancelled: EffectCancelled,
) -> None:
    e = entry(PostMessage(4, 70), attempts=1)

    outcome = await relay(FakeExecutor((PostMessage,), cancelled)).attempt(e)

    assert outcome == Cancelled(e, cancelled.code)


async def test_an_entry_that_waits_for_a_delivery_slot_is_told_what_the_claim_read_is_not_fresh() -> None:
    """A recall may come while it waits: its executor checks again when its turn comes."""
    posts = FakeExecutor((PostMessage,), hold=asyncio.Event())
    r = relay(posts, concurrency=1)

    attempts = asyncio.gather(
        r.attempt(entry(PostMessage(4, 70), id=1)), r.attempt(entry(PostMessage(5, 80), id=2))
    )
    await asyncio.sleep(0)  # the first has the only slot, the second waits for it
    assert posts.hold is not None
    posts.hold.set()
    await attempts

    assert posts.fresh == [True, False]


async def test_a_bug_in_an_executor_is_retried_as_a_relay_error_and_never_escapes() -> None:
    e = entry(REPLY, attempts=2)

    outcome = await relay(FakeExecutor((PostSmsReply,), KeyError("channel_url"))).attempt(e)

    assert outcome == RetryAt(e, "relay_error", 2.0)


async def test_a_bug_in_an_executor_is_dead_after_the_last_attempt() -> None:
    """Only what is no outage uses attempts up: an error of caremsg's own that keeps happening does
    not hold its conversation up for ever."""
    e = entry(REPLY, attempts=5)

    outcome = await relay(FakeExecutor((PostSmsReply,), KeyError("channel_url")), max_attempts=5).attempt(e)

    assert outcome == Dead(e, "relay_error")


# --- settling a wave --------------------------------------------------------------------------------


def test_each_outcome_writes_its_own_row_in_one_lock_order() -> None:
    wave = [
        GivenBack(entry(TextMessage(4, 71, 711), id=9, attempts=2)),
        RetryAt(entry(TextMessage(4, 70, 700), id=7, attempts=2), "chat_unavailable", 2.0),
        Cancelled(entry(PostMessage(4, 72), id=6, attempts=1), "recalled"),
        Dead(entry(REPLY, id=5, attempts=50), "invalid_request"),
        Done(entry(PostMessage(4, 70), id=3, attempts=1)),
    ]

    assert settle_params(wave) == {
        "ids": [3, 5, 6, 7, 9],
        "attempts": [1, 50, 1, 2, 2],
        "outcomes": ["done", "failed", "cancelled", "retry", "untried"],
        "reasons": [None, "invalid_request", "recalled", "chat_unavailable", None],
        "delays": [None, None, None, 2.0, None],
    }


def test_a_settled_wave_tells_each_executor_only_what_it_finished_here() -> None:
    posts = FakeExecutor((PostMessage,))
    texts = FakeExecutor((TextMessage,))
    executors = Executors([posts, texts])
    sent, refused = entry(TextMessage(4, 70, 700), id=2), entry(TextMessage(5, 80, 800), id=4)
    posted, elsewhere = entry(PostMessage(4, 70), id=1), entry(PostMessage(6, 90), id=6)
    recalled = entry(PostMessage(4, 71), id=3)
    wave = [
        Done(sent),
        Dead(refused, "opted_out"),
        Done(posted),
        Cancelled(recalled, "recalled"),  # told as a failure with its reason
        Done(elsewhere),  # its lease ran out: another relay holds it, the settle skipped it
        RetryAt(entry(TextMessage(7, 91, 910), id=7), "chat_unavailable", 1.0),
        GivenBack(entry(TextMessage(7, 92, 920), id=8)),
        Dead(entry(RemoveMembers(4, ("u1",)), id=9), "unknown_kind"),  # no executor registered
    ]

    told = finished(wave, settled={1, 2, 3, 4, 7, 8, 9}, executors=executors)

    assert told == {
        posts: ([posted], [(recalled, "recalled")]),
        texts: ([sent], [(refused, "opted_out")]),
    }


# --- how effects are stored -------------------------------------------------------------------------

EVERY_EFFECT: list[Effect] = [
    CreateChannel(4),
    PostMessage(4, 70),
    TextMessage(4, 70, 700),
    AnswerKeyword(4, 9, Keyword.STOP),
    AskWhichConversation(4, 9, (1, 3)),
    REPLY,
    RemoveMembers(4, ("u1", "u2")),
    InviteMembers(4, ("u3",)),
    NotifyComplianceOfBreakGlass(12),
    RealertUrgent(4, 70, 31),
    TextUrgentAlert(70, 32),
    EscalateUrgent(4, 70, 33),
    RecallFromChannel(4, 70),
    DeleteFromChannel(4, 70),
    DeleteSmsReplyFromChannel(4, "channel_4", "ext_9", "SM1", 880),
    DeleteSmsReplyFromChannel(4, "channel_4", "ext_9", "SM2"),  # posted before its id was recorded
    PostAttachment(4, 70, 5),
]


@pytest.mark.parametrize("effect", EVERY_EFFECT, ids=lambda e: type(e).__name__)
def test_every_effect_reads_back_from_its_stored_row_as_itself(effect: Effect) -> None:
    row = outbox_row(effect)

    assert effect_from(row.kind, row.payload, row.conversation_id, row.message_id) == effect


def test_the_stored_kinds_are_those_rows_already_in_databases_carry() -> None:
    assert {t.__name__: k for t, k in KIND.items()} == {
        "CreateChannel": "ensure_channel",
        "PostMessage": "send_message",
        "TextMessage": "send_sms",
        "AnswerKeyword": "send_sms",
        "AskWhichConversation": "send_sms",
        "PostSmsReply": "post_sms_reply",
        "RemoveMembers": "remove_members",
        "InviteMembers": "invite_members",
        "NotifyComplianceOfBreakGlass": "notify_break_glass",
        "RealertUrgent": "urgent_realert",
        "TextUrgentAlert": "urgent_text",
        "EscalateUrgent": "urgent_escalate",
        "RecallFromChannel": "recall_message",
        "DeleteFromChannel": "delete_message",
        "DeleteSmsReplyFromChannel": "delete_sms_reply",
        "PostAttachment": "send_file",
    }
    assert {type(e) for e in EVERY_EFFECT} == set(KIND)


def test_a_help_answer_queued_in_the_old_shape_is_still_a_help_answer() -> None:
    effect = effect_from("send_sms", {"help_participant_id": 9}, 4, None)

    assert effect == AnswerKeyword(4, 9, Keyword.HELP)


class _WakeCounting(OutboxRelay):
    def __init__(self, settings: RelaySettings) -> None:
        super().__init__(async_sessionmaker(), FakeChatGateway(), settings)  # type: ignore[arg-type]
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def _service_relays() -> tuple[_WakeCounting, _WakeCounting]:
    """The service's two relays (handlers/app.py): chat effects, and texts."""
    chat = _WakeCounting(RelaySettings(skip_kinds=TEXT_KINDS))
    return chat, _WakeCounting(RelaySettings(claim_kinds=TEXT_KINDS))


@pytest.mark.parametrize(
    ("queued", "woken"),
    [
        ([PostMessage], (1, 0)),
        ([TextMessage], (0, 1)),
        ([AnswerKeyword, AskWhichConversation], (0, 1)),
        ([PostMessage, TextMessage], (1, 1)),
        ([CreateChannel, InviteMembers], (1, 0)),
        ([], (0, 0)),
        (None, (1, 1)),
    ],
    ids=["a post", "a text", "keyword answers", "a post and a text", "chat effects", "nothing", "unsaid"],
)
def test_a_wake_reaches_the_relays_that_claim_what_was_queued(
    queued: list[type[Effect]] | None, woken: tuple[int, int]
) -> None:
    chat, texts = _service_relays()

    Relays([chat, texts]).wake(queued)

    assert (chat.woken, texts.woken) == woken


def test_every_kind_is_claimed_by_exactly_one_of_the_service_relays() -> None:
    chat, texts = _service_relays()

    assert {kind: (chat.claims(kind), texts.claims(kind)) for kind in KIND.values()} == {
        kind: (kind not in TEXT_KINDS, kind in TEXT_KINDS) for kind in KIND.values()
    }
