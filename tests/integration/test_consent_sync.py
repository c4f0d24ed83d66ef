"""Consent changes reach every instance: two apps on one PostgreSQL, each with its own in-memory
consent index. A revocation on one is denied on the other within the bound stated here (2 s); a
lost notification is recovered from the numbered change log; a dropped listener reconnects and
reloads everything."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from handlers.app import create_app
from handlers.keys import consent_sync_key
from handlers.settings import Settings
from tests.support.api import Api, Person

T = TypeVar("T")
#: How long another instance may take to act on a consent change.
PROPAGATION_BOUND = 2.0


async def within(probe: Callable[[], Awaitable[T | None]], what: str, seconds: float) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = await probe()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.02)


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
    await within(status_is(b, outsider, path, 200), "B learns of the new consent", PROPAGATION_BOUND)

    status, _ = await a.call(
        "POST", f"/api/consents/{consent['id']}/revoke", officer, json={"reason": "Withdrawn by patient"}
    )
    assert status == 200

    assert (await a.call("GET", path, outsider))[0] == 403  # at once where it happened
    await within(status_is(b, outsider, path, 403), "B denies after the revocation", PROPAGATION_BOUND)


async def test_a_lost_notification_is_recovered_from_the_change_log(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    a, b = await two_instances(aiohttp_client, settings)
    officer, outsider, patient_id, partner, consent = await partner_reads_patient(a)
    path = f"/api/patients/{patient_id}"
    await within(status_is(b, outsider, path, 200), "B learns of the consent", PROPAGATION_BOUND)
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

    await within(status_is(b, outsider, path, 403), "B catches up on the lost revocation", PROPAGATION_BOUND)


async def test_a_dropped_listener_reconnects_and_reloads_what_it_missed(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    a, b = await two_instances(aiohttp_client, settings)
    _officer, outsider, patient_id, _, consent = await partner_reads_patient(a)
    path = f"/api/patients/{patient_id}"
    await within(status_is(b, outsider, path, 200), "B learns of the consent", PROPAGATION_BOUND)
    sync = b.app[consent_sync_key]
    loads = sync.full_loads
    # Cut every consent listener of this database (another xdist worker's are not this test's),
    # then change a consent while nobody listens.
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'caremsg-consent-sync' AND datname = current_database()"
    )
    await db.execute("UPDATE consents SET revoked_at = now() WHERE id = $1", consent["id"])

    await within(status_is(b, outsider, path, 403), "B reloads after reconnecting", 5.0)
    assert sync.full_loads > loads
