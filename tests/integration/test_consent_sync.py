"""Consent changes reach every instance: two apps on one PostgreSQL, each with its own in-memory
consent index. A revocation on one is denied on the other within the bound stated here (2 s); a
lost notification is recovered from the numbered change log; a dropped listener reconnects and
reloads everything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from engine.consent_index import ConsentIndex, Coverage
from handlers.app import create_app
from handlers.keys import consent_sync_key
from handlers.settings import Settings
from integrations.consent_sync import ConsentSync, asyncpg_connect_args
from tests.support.api import Api, Person
from tests.support.polling import eventually

#: How long another instance may take to act on a consent change.
PROPAGATION_BOUND = 2.0


async def two_instances(aiohttp_client: Any, settings: Settings) -> tuple[Api, Api]:
    first = Api(await aiohttp_client(create_app(settings)))
    second = Api(await aiohttp_client(create_app(settings)))
    return first, second


async def partner_reads_patient(a: Api) -> tuple[Person, Person, int, int, dict[str, Any]]:
    """A patient of one organization and a partner organization's care-team member covered by a consent."""
    org, partner = await a.organization(), await a.organization()
    peer = await a.person("peer_support", org)
    officer = await a.person("compliance_officer", org)
    admin = await a.person("admin", org)
    outsider = await a.person("care_team_member", partner)
    patient_id = await a.patient(peer)
    consent = await a.consent(officer, patient_id, organizationId=partner)
    _, team = await a.call("GET", f"/api/patients/{patient_id}/care-team", admin)
    status, _ = await a.call(
        "POST", f"/api/care-teams/{team['id']}/members", admin, json={"userId": outsider.id}
    )
    assert status == 201
    return officer, outsider, patient_id, partner, consent


def status_is(api: Api, who: Person, path: str, expected: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        status, _ = await api.call("GET", path, who)
        return status == expected

    return probe


async def test_a_revocation_on_one_instance_is_denied_on_the_other_within_two_seconds(
    aiohttp_client: Any, settings: Settings
) -> None:
    a, b = await two_instances(aiohttp_client, settings)
    officer, outsider, patient_id, _, consent = await partner_reads_patient(a)
    path = f"/api/patients/{patient_id}"
    # The consent recorded on A reaches B the same way.
    await eventually(
        status_is(b, outsider, path, 200), "B learns of the new consent", within=PROPAGATION_BOUND
    )

    status, _ = await a.call(
        "POST", f"/api/consents/{consent['id']}/revoke", officer, json={"reason": "Withdrawn by patient"}
    )
    assert status == 200

    assert (await a.call("GET", path, outsider))[0] == 403  # at once where it happened
    await eventually(
        status_is(b, outsider, path, 403), "B denies after the revocation", within=PROPAGATION_BOUND
    )


async def test_a_lost_notification_is_recovered_from_the_change_log(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    a, b = await two_instances(aiohttp_client, settings)
    officer, outsider, patient_id, partner, consent = await partner_reads_patient(a)
    path = f"/api/patients/{patient_id}"
    await eventually(status_is(b, outsider, path, 200), "B learns of the consent", within=PROPAGATION_BOUND)
    # A revocation whose notification never arrives (written without pg_notify).
    async with db.transaction():
        await db.execute("UPDATE consents SET revoked_at = now() WHERE id = $1", consent["id"])
        await db.execute(
            "INSERT INTO consent_changes (consent_id, patient_id, op) VALUES ($1, $2, 'revoked')",
            consent["id"],
            patient_id,
        )
    assert (await b.call("GET", path, outsider))[0] == 200  # B cannot know yet

    # The next change's number reveals the gap; B re-reads the change log.
    await a.consent(officer, patient_id, organizationId=partner, scope=["sms"])

    await eventually(
        status_is(b, outsider, path, 403), "B catches up on the lost revocation", within=PROPAGATION_BOUND
    )


async def test_a_dropped_listener_reconnects_and_reloads_what_it_missed(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    a, b = await two_instances(aiohttp_client, settings)
    _officer, outsider, patient_id, _, consent = await partner_reads_patient(a)
    path = f"/api/patients/{patient_id}"
    await eventually(status_is(b, outsider, path, 200), "B learns of the consent", within=PROPAGATION_BOUND)
    sync = b.app[consent_sync_key]
    loads = sync.full_loads
    # Cut every consent listener of this database (another xdist worker's are not this test's),
    # then change a consent while nobody listens.
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'caremsg-consent-sync' AND datname = current_database()"
    )
    await db.execute("UPDATE consents SET revoked_at = now() WHERE id = $1", consent["id"])

    await eventually(status_is(b, outsider, path, 403), "B reloads after reconnecting", within=5.0)
    assert sync.full_loads > loads


async def test_the_listener_judges_a_new_consent_by_the_apps_clock_not_the_machines(
    aiohttp_client: Any, settings: Settings
) -> None:
    """A consent that begins "now" by the app's clock is effective for every decision from then on,
    whichever of the recording workflow and the listener puts it in the index first. The listener
    once judged it by the machine's time: an app whose clock runs ahead (as the console tests move
    it) stored it as beginning at the next whole second, and a partner added at once was refused
    for want of a consent (seen in CI). A clock that stands still a quarter second past a whole
    second makes that deterministic: by the machine's time the consent lies an hour ahead."""
    instant = datetime.now(UTC).replace(microsecond=250_000) + timedelta(hours=1)

    def clock() -> datetime:
        return instant

    a = Api(await aiohttp_client(create_app(settings, clock=clock)))
    org, partner = await a.organization(), await a.organization()
    nurse = await a.person("care_team_member", org)
    officer = await a.person("compliance_officer", org)
    patient_id = await a.patient(nurse)
    # A second instance's index, which learns of consents only through the listener.
    index = ConsentIndex()
    sync = ConsentSync(index, settings.database.url, clock=clock)
    follower = asyncio.create_task(sync.run())
    try:
        await asyncio.wait_for(sync.ready.wait(), 10)
        consent = await a.consent(officer, patient_id, organizationId=partner)

        async def learned() -> bool:
            return bool(index.candidates(patient_id, partner))

        await eventually(learned, "the listener learns of the consent", within=PROPAGATION_BOUND)
        coverage = index.covering(patient_id, partner, clock())
        assert coverage == Coverage(consent["id"], "treatment")
        # The same holds for a full reload (a restart, a reconnection).
        reloaded = ConsentIndex()
        conn = await asyncpg.connect(**asyncpg_connect_args(settings.database.url))
        try:
            await ConsentSync(reloaded, settings.database.url, clock=clock).full_load(conn)
        finally:
            await conn.close()
        assert reloaded.covering(patient_id, partner, clock()) == coverage
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
