"""The retention sweep on real PostgreSQL: two instances sweeping at once delete each message's
content once (``FOR UPDATE SKIP LOCKED``; one audit record and one channel deletion each), a legal
hold on the patient or the conversation keeps content until it is lifted, and the plan counts what
the next sweep deletes; an SMS reply still queued loses its text and is cancelled. Each test uses
its own organization, the only one its policy sets a lifespan for (other tests' messages share the
database)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from engine.effects import PostSmsReply, kind_of
from engine.model import RiskLevel, Role
from engine.policy import Policy
from engine.ports.identity import NewUser
from engine.ports.patients import NewPatient
from engine.ports.retention import NewLegalHold
from engine.services import Services
from engine.workflows.retention import SWEEP, retention_plan, sweep_retention
from integrations.db.uow import SqlUnitOfWork
from integrations.policy_files import read_policy_sources
from integrations.retention_runner import retention_services
from tests.support.polling import eventually

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
TEXT = "Ann Lee's potassium is 6.1"


@dataclasses.dataclass
class Seeded:
    organization_id: int
    patient_id: int
    conversation_id: int
    user_id: int
    message_ids: list[int]


async def _seed(engine: AsyncEngine, messages: int, *, age: timedelta) -> Seeded:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with SqlUnitOfWork(sessions) as u:
        org = await u.organizations.add(f"Clinic {secrets.token_hex(4)}", self_registration=True)
        nurse = await u.users.add(
            NewUser(f"n.{secrets.token_hex(4)}@example.org", "hash", "A", "B", Role.CARE_TEAM_MEMBER, org.id)
        )
        patient = await u.patients.add(NewPatient(org.id, "Ann", "Lee", None, RiskLevel.LOW, nurse.id))
        await u.commit()
    async with sessions() as s, s.begin():
        conversation_id = (
            await s.execute(
                text(
                    "INSERT INTO conversations (patient_id, title, channel_url, organization_id, created_by,"
                    " channel_state) VALUES (:p, 'Ward', :url, :o, :u, 'ready') RETURNING id"
                ),
                {"p": patient.id, "url": f"ch_{secrets.token_hex(8)}", "o": org.id, "u": nurse.id},
            )
        ).scalar_one()
        ids = [
            (
                await s.execute(
                    text(
                        "INSERT INTO messages (conversation_id, sender_id, body, state, created_at)"
                        " VALUES (:c, :u, :b, 'sent', :at) RETURNING id"
                    ),
                    {"c": conversation_id, "u": nurse.id, "b": TEXT, "at": datetime.now(UTC) - age},
                )
            ).scalar_one()
            for _ in range(messages)
        ]
    return Seeded(org.id, patient.id, conversation_id, nurse.id, ids)


def _policy(organization_id: int, days: int) -> Policy:
    sources = read_policy_sources(POLICY_DIR)
    return Policy.from_sources(
        dataclasses.replace(sources, retention=f"[organization.{organization_id}]\ncontent_days = {days}\n")
    )


async def _state(engine: AsyncEngine, seeded: Seeded) -> tuple[list[str], int, int]:
    """(the messages' bodies, how many sweep audit records, how many channel deletions queued)."""
    ids = [str(i) for i in seeded.message_ids]
    async with engine.connect() as c:
        bodies = (
            await c.execute(
                text("SELECT body FROM messages WHERE id = ANY(:ids) ORDER BY id"),
                {"ids": seeded.message_ids},
            )
        ).scalars()
        audited = (
            await c.execute(
                text(
                    "SELECT count(*) FROM audit_events WHERE workflow = :w AND resource_type = 'message'"
                    " AND resource_id = ANY(:ids)"
                ),
                {"w": SWEEP, "ids": ids},
            )
        ).scalar_one()
        queued = (
            await c.execute(
                text("SELECT count(*) FROM outbox WHERE kind = 'delete_message' AND message_id = ANY(:ids)"),
                {"ids": seeded.message_ids},
            )
        ).scalar_one()
    return list(bodies), audited, queued


async def test_two_sweeps_at_once_delete_each_message_once(engine: AsyncEngine, database_url: str) -> None:
    seeded = await _seed(engine, 30, age=timedelta(days=31))
    policy = _policy(seeded.organization_id, 30)
    async with (
        retention_services(database_url, policy) as one,
        retention_services(database_url, policy) as two,
    ):
        assert await retention_plan(one) == {seeded.organization_id: 30}

        async def drain(services: Services) -> int:
            done = 0
            while n := await sweep_retention(services, limit=4):
                done += n
            return done

        first, second = await asyncio.gather(drain(one), drain(two))

        assert first + second == 30
        assert await retention_plan(one) == {}
    bodies, audited, queued = await _state(engine, seeded)
    assert bodies == [""] * 30
    assert (audited, queued) == (30, 30)


@pytest.mark.parametrize("on", ["patient_id", "conversation_id"])
async def test_a_legal_hold_stops_the_sweep_until_it_is_lifted(
    engine: AsyncEngine, database_url: str, on: str
) -> None:
    seeded = await _seed(engine, 3, age=timedelta(days=400))
    subject = seeded.patient_id if on == "patient_id" else seeded.conversation_id
    async with engine.begin() as c:
        hold = (
            await c.execute(
                text(
                    f"INSERT INTO legal_holds (organization_id, {on}, reason, placed_by, placed_at)"
                    " VALUES (:o, :s, 'litigation', :u, now()) RETURNING id"
                ),
                {"o": seeded.organization_id, "s": subject, "u": seeded.user_id},
            )
        ).scalar_one()
    async with retention_services(database_url, _policy(seeded.organization_id, 1)) as services:
        assert await retention_plan(services) == {}
        assert await sweep_retention(services) == 0
        assert (await _state(engine, seeded))[0] == [TEXT] * 3

        async with engine.begin() as c:
            await c.execute(
                text("UPDATE legal_holds SET lifted_at = now(), lifted_by = :u WHERE id = :id"),
                {"u": seeded.user_id, "id": hold},
            )
        assert await sweep_retention(services) == 3
    assert (await _state(engine, seeded)) == ([""] * 3, 3, 3)


async def test_content_younger_than_its_lifespan_stays(engine: AsyncEngine, database_url: str) -> None:
    seeded = await _seed(engine, 2, age=timedelta(days=29))
    async with retention_services(database_url, _policy(seeded.organization_id, 30)) as services:
        assert await retention_plan(services) == {}
        assert await sweep_retention(services) == 0
    assert (await _state(engine, seeded)) == ([TEXT] * 2, 0, 0)


async def test_an_attached_file_is_content_and_goes_with_the_text(
    engine: AsyncEngine, database_url: str
) -> None:
    seeded = await _seed(engine, 2, age=timedelta(days=40))
    kept, expired = seeded.message_ids[0], seeded.message_ids[1]
    async with engine.begin() as c:
        for message_id in (kept, expired):
            await c.execute(
                text(
                    "INSERT INTO message_attachments (message_id, content_type, size, sha256, data)"
                    " VALUES (:m, 'application/pdf', 5, :sha, :data)"
                ),
                {"m": message_id, "sha": "0" * 64, "data": b"%PDF-"},
            )
        # Only the second message is old enough: the first is made young again.
        await c.execute(
            text("UPDATE messages SET created_at = now() WHERE id = :m"),
            {"m": kept},
        )
    async with retention_services(database_url, _policy(seeded.organization_id, 30)) as services:
        assert await sweep_retention(services) == 1
    async with engine.connect() as c:
        left = (
            await c.execute(
                text("SELECT message_id FROM message_attachments WHERE message_id = ANY(:ids)"),
                {"ids": seeded.message_ids},
            )
        ).scalars()
        assert list(left) == [kept]


async def test_an_sms_reply_not_posted_yet_loses_its_text_and_is_not_posted_empty(
    engine: AsyncEngine, database_url: str
) -> None:
    seeded = await _seed(engine, 0, age=timedelta(days=0))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    reply = PostSmsReply(seeded.conversation_id, "ch", sender_chat_id="ext_1", text=TEXT, dedup_id="SM1")
    async with SqlUnitOfWork(sessions) as u:
        await u.outbox.enqueue(reply)
        await u.commit()
    async with engine.begin() as c:
        # a relay not running: still pending a month and a day later
        outbox_id = (
            await c.execute(
                text(
                    "UPDATE outbox SET created_at = now() - interval '31 days'"
                    " WHERE conversation_id = :c AND kind = :k RETURNING id"
                ),
                {"c": seeded.conversation_id, "k": kind_of(PostSmsReply)},
            )
        ).scalar_one()
    async with retention_services(database_url, _policy(seeded.organization_id, 30)) as services:
        assert await retention_plan(services) == {seeded.organization_id: 1}  # counted as a message is
        assert await sweep_retention(services) == 1
        assert await sweep_retention(services) == 0
        assert await retention_plan(services) == {}
    async with engine.connect() as c:
        row = (
            await c.execute(text("SELECT status, payload FROM outbox WHERE id = :id"), {"id": outbox_id})
        ).one()
        audited = (
            await c.execute(
                # Of this test's patient: an earlier sweep in the session's database may have
                # audited a message whose id is this outbox entry's.
                text(
                    "SELECT resource_type, patient_id FROM audit_events"
                    " WHERE workflow = :w AND resource_id = :r AND patient_id = :p"
                ),
                {"w": SWEEP, "r": str(outbox_id), "p": seeded.patient_id},
            )
        ).all()
    assert row.status == "cancelled"
    assert "text" not in row.payload
    assert row.payload["dedup_id"] == "SM1"
    assert [tuple(a) for a in audited] == [("sms_reply", seeded.patient_id)]


async def test_a_hold_placed_while_a_sweep_is_deleting_waits_for_it_and_never_commits_first(
    engine: AsyncEngine, database_url: str
) -> None:
    """A sweep that claimed a patient's messages and is still deleting them: a hold placed on the
    patient then waits until the sweep commits, so no content is deleted after a hold was placed."""
    seeded = await _seed(engine, 3, age=timedelta(days=400))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    finished: list[str] = []

    async def waiting_on_locks() -> int:
        async with engine.connect() as c:
            return int(
                (
                    await c.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                ).scalar_one()
            )

    async with (
        retention_services(database_url, _policy(seeded.organization_id, 1)) as services,
        engine.connect() as blocker,
    ):
        # Hold the sweep between its claim and its commit: its deletion of attached files waits.
        await blocker.execute(text("LOCK TABLE message_attachments IN SHARE MODE"))

        async def sweep() -> None:
            await sweep_retention(services)
            finished.append("sweep")

        async def place_hold() -> None:
            async with SqlUnitOfWork(sessions) as u:
                await u.legal_holds.add(
                    NewLegalHold(
                        seeded.organization_id,
                        seeded.patient_id,
                        None,
                        seeded.patient_id,
                        "litigation",
                        seeded.user_id,
                        datetime.now(UTC),
                    )
                )
                await u.commit()
            finished.append("hold")

        sweeping = asyncio.create_task(sweep())
        try:
            await eventually(lambda: _at_least(waiting_on_locks, 1), "the sweep to wait mid-way")
            holding = asyncio.create_task(place_hold())

            async def hold_placed_or_waiting() -> bool:
                return holding.done() or await waiting_on_locks() >= 2

            await eventually(hold_placed_or_waiting, "the hold to be placed or to wait")
        finally:
            await blocker.rollback()
        await asyncio.gather(sweeping, holding)

    assert finished == ["sweep", "hold"]  # before the fix: the hold committed, then the sweep deleted
    assert (await _state(engine, seeded))[0] == [""] * 3  # deleted before any hold was placed


async def _at_least(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() >= n
