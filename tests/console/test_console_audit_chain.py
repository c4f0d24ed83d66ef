"""The auditor's side of the console over plain HTTP: the search's reason and purpose filters, one
record's page with its place in the chain, the chain page (a verification run followed to its end,
a tampered record caught, an anchor signed and downloaded), and exports streamed as JSON Lines and
a FHIR R4 Bundle. Every action is decided and audited; every POST needs its CSRF token."""

from __future__ import annotations

import contextlib
import html
import json
import re

import asyncpg
import pytest

from engine.audit_trail import AuditFilter
from handlers.keys import audit_chain_key, audit_sealer_key, settings_key
from integrations.audit_anchor import private_key, verify_anchor
from integrations.audit_sealer import SEAL_LOCK
from tests.support.api import Api, Person
from tests.support.console import CSRF, audit_records, sign_in
from tests.support.polling import eventually

RUN_URL = re.compile(r"/console/audit/chain/runs/([0-9a-f]{16})$")


async def a_clinic(api: Api, role: str = "auditor") -> tuple[Person, Person, int]:
    """An organization with a care-team member who registered a patient and read it, and an
    auditor (or compliance officer) of it, signed in to the console."""
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    reader = await api.person(role, org)
    patient = await api.patient(nurse)
    assert (await api.call("GET", f"/api/patients/{patient}", nurse))[0] == 200
    assert (await sign_in(api, reader)).status == 303
    return nurse, reader, patient


async def csrf_of(api: Api, path: str = "/console/audit/chain") -> str:
    page = await api.client.get(path)
    assert page.status == 200
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


async def seal(api: Api) -> None:
    await api.app[audit_sealer_key].seal_pending()


async def verify_from_the_page(api: Api) -> tuple[str, str]:
    """Start a verification from the chain page and follow its page until it stops refreshing;
    (the run's id, the finished page's text)."""
    started = await api.client.post(
        "/console/audit/chain/runs", data={"csrf_token": await csrf_of(api)}, allow_redirects=False
    )
    assert started.status == 303
    match = RUN_URL.search(started.headers["Location"])
    assert match is not None
    run_id = match.group(1)

    async def finished() -> str | None:
        page = await api.client.get(f"/console/audit/chain/runs/{run_id}")
        assert page.status == 200
        text = await page.text()
        return None if 'http-equiv="refresh"' in text else text

    return run_id, await eventually(finished, "the verification run to finish", within=60)


# --- search filters ---------------------------------------------------------------------------------


async def test_the_console_search_filters_by_reason_and_purpose_like_the_api(api: Api) -> None:
    nurse, auditor, patient = await a_clinic(api)
    peer = await api.person("peer_support", nurse.organization_id)
    assert (await api.call("GET", f"/api/patients/{patient}", peer))[0] == 403
    stated = {"X-Purpose-Of-Use": "care_coordination"}
    assert (await api.call("GET", f"/api/patients/{patient}", nurse, headers=stated))[0] == 200

    for filters in ({"reason": "not_on_care_team"}, {"purpose": "care_coordination"}):
        page = await api.client.get(
            "/console/audit", params={"search": "1", "patientId": str(patient), **filters}
        )
        text = await page.text()
        assert page.status == 200
        expected = await audit_records(api, auditor, patientId=patient, **filters)
        assert len(expected) == 1
        shown = {int(i) for i in re.findall(r"Record (\d+)</summary>", text)}
        assert shown == {expected[0]["id"]}
    chosen = await api.client.get("/console/audit", params={"search": "1", "purpose": "payment"})
    assert '<option value="payment" selected>' in await chosen.text()

    bad = await api.client.get("/console/audit", params={"search": "1", "reason": "Not a code"})
    assert bad.status == 422
    assert 'aria-invalid="true" aria-describedby="e-reason"' in await bad.text()


# --- one record ------------------------------------------------------------------------------------


async def test_a_record_page_shows_every_field_its_chain_position_and_its_anchor(
    api: Api, db: asyncpg.Connection
) -> None:
    _, auditor, patient = await a_clinic(api)
    await seal(api)
    [read] = await audit_records(api, auditor, patientId=patient, workflow="patient.read")
    chain = await db.fetchrow("SELECT * FROM audit_chain WHERE event_id = $1", read["id"])

    page = await api.client.get(f"/console/audit/{read['id']}")
    text = await page.text()

    assert page.status == 200
    for value in (read["requestId"], read["matchedRule"], read["policyVersion"], "care team member"):
        assert html.escape(value) in text
    assert f"<strong>Sealed</strong> at position {chain['seq']}" in text
    for value in (chain["prev_hash"], chain["hash"], chain["digest"]):
        assert value in text
    assert "not yet: no stored anchor covers this position" in text

    anchored = await api.client.post(
        "/console/audit/chain/anchors", data={"csrf_token": await csrf_of(api)}, allow_redirects=False
    )
    anchor_id = int(anchored.headers["Location"].rsplit("=", 1)[1])
    again = await (await api.client.get(f"/console/audit/{read['id']}")).text()
    assert f"yes: in anchor {anchor_id} " in again
    viewed = await audit_records(api, auditor, workflow="audit.read", actorId=auditor.id)
    assert any(r["resourceId"] == str(read["id"]) and r["decision"] == "allow" for r in viewed)


async def test_a_record_not_sealed_yet_says_so_and_the_chain_page_counts_it(
    api: Api, db: asyncpg.Connection
) -> None:
    nurse, auditor, patient = await a_clinic(api)
    await seal(api)
    # Hold the sealers' lock (as another instance sealing would) so the next record stays unsealed.
    async with db.transaction():
        await db.execute(f"SELECT pg_advisory_xact_lock({SEAL_LOCK})")
        assert (await api.call("GET", f"/api/patients/{patient}", nurse))[0] == 200
        [_, newest] = await audit_records(api, auditor, patientId=patient, workflow="patient.read")
        page = await (await api.client.get(f"/console/audit/{newest['id']}")).text()
        chain = await (await api.client.get("/console/audit/chain")).text()
    assert newest["chainSeq"] is None
    assert "<strong>Not sealed yet.</strong>" in page
    assert "Previous hash" not in page
    unsealed = re.search(r"<dt>Not sealed yet</dt><dd>(\d+) record", chain)
    assert unsealed is not None
    assert int(unsealed.group(1)) >= 1


async def test_another_organizations_record_answers_exactly_as_a_missing_one(api: Api) -> None:
    nurse, _, patient = await a_clinic(api)
    own_auditor = await api.person("auditor", nurse.organization_id)
    [theirs] = await audit_records(api, own_auditor, patientId=patient, workflow="patient.read")
    _, outsider, _ = await a_clinic(api)

    other = await api.client.get(f"/console/audit/{theirs['id']}")
    missing = await api.client.get(f"/console/audit/{2**62}")
    garbage = await api.client.get("/console/audit/99999999999999999999999")

    assert other.status == missing.status == garbage.status == 404
    assert await other.text() == await missing.text()
    assert "There is no such record, or none your organization may see." in await missing.text()
    # The outsider's organization sees the same failed lookup for both; the denials stay stored.
    seen = await audit_records(api, outsider, workflow="audit.read", actorId=outsider.id, outcome="failure")
    assert [(r["event"], r["resourceId"], r["reason"]) for r in seen] == [
        ("lookup", str(theirs["id"]), "not_found"),
        ("lookup", str(2**62), "not_found"),
    ]
    assert (
        await audit_records(api, outsider, workflow="audit.read", actorId=outsider.id, decision="deny") == []
    )


# --- the chain page: verification runs and anchors ------------------------------------------------


@pytest.mark.parametrize("role", ["auditor", "compliance_officer"])
async def test_a_verification_run_follows_its_progress_to_a_sound_chain(api: Api, role: str) -> None:
    _, reader, _ = await a_clinic(api, role)
    await seal(api)
    chain = await api.client.get("/console/audit/chain")
    assert chain.status == 200
    assert "Verify the chain now" in await chain.text()

    run_id, text = await verify_from_the_page(api)

    assert "The chain is intact" in text
    assert 'value="100"' in text
    records = await audit_records(api, reader, workflow="audit.verify", actorId=reader.id)
    assert [(r["event"], r["decision"], r["outcome"], r["resourceId"]) for r in records] == [
        ("decision", "allow", "success", run_id),
        ("audit.chain_verified", None, "success", run_id),
    ]
    assert records[1]["details"]["state"] == "ok"
    assert records[1]["details"]["checked"] >= 1


async def test_a_running_verification_shows_its_progress_and_reloads_itself_until_done(
    api: Api, db: asyncpg.Connection
) -> None:
    await a_clinic(api)
    token = await csrf_of(api)
    # Hold the chain so the run cannot read it yet: its page shows it running.
    async with db.transaction():
        await db.execute("LOCK TABLE audit_chain IN ACCESS EXCLUSIVE MODE")
        started = await api.client.post(
            "/console/audit/chain/runs", data={"csrf_token": token}, allow_redirects=False
        )
        run_page = started.headers["Location"]
        running = await (await api.client.get(run_page)).text()
        joined = await api.client.post(
            "/console/audit/chain/runs", data={"csrf_token": token}, allow_redirects=False
        )
    assert '<meta http-equiv="refresh" content="2">' in running
    assert "Verifying… this page reloads every 2 seconds until it is done." in running
    assert '<progress id="progress" max="100" value="0">' in running
    assert joined.headers["Location"] == run_page  # one run at a time: a second start joins it

    async def done() -> str | None:
        text = await (await api.client.get(run_page)).text()
        return None if 'http-equiv="refresh"' in text else text

    finished = await eventually(done, "the verification to finish once the chain is free", within=30)
    assert "The chain is intact" in finished


async def test_a_tampered_record_makes_the_verification_fail_naming_it(
    api: Api, db: asyncpg.Connection
) -> None:
    _, auditor, patient = await a_clinic(api)
    await seal(api)
    [read] = await audit_records(api, auditor, patientId=patient, workflow="patient.read")

    async def as_attacker(statement: str) -> None:
        async with db.transaction():
            await db.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            await db.execute(statement)
            await db.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")

    await as_attacker(f"UPDATE audit_events SET outcome = 'denied' WHERE id = {read['id']}")
    try:
        run_id, text = await verify_from_the_page(api)
    finally:
        await as_attacker(f"UPDATE audit_events SET outcome = 'success' WHERE id = {read['id']}")

    assert "The chain is BROKEN" in text
    assert f"EDITED: record id {read['id']}" in text
    [result] = await audit_records(api, auditor, workflow="audit.verify", outcome="failure")
    assert (result["resourceId"], result["reason"]) == (run_id, "chain_edited")
    assert result["details"]["problemEventId"] == read["id"]
    # Put back as it was, the same record verifies again.
    _, text = await verify_from_the_page(api)
    assert "The chain is intact" in text


async def test_an_anchor_created_from_the_page_downloads_as_the_cli_writes_it_and_verifies(
    api: Api, db: asyncpg.Connection
) -> None:
    _, auditor, _ = await a_clinic(api)

    created = await api.client.post(
        "/console/audit/chain/anchors", data={"csrf_token": await csrf_of(api)}, allow_redirects=False
    )
    assert created.status == 303
    anchor_id = int(created.headers["Location"].rsplit("=", 1)[1])
    chain = await (await api.client.get(created.headers["Location"])).text()
    assert f"Anchor {anchor_id} was created and stored." in chain
    assert f'href="/console/audit/chain/anchors/{anchor_id}"' in chain

    download = await api.client.get(f"/console/audit/chain/anchors/{anchor_id}")
    assert download.status == 200
    assert download.headers["Content-Disposition"] == f'attachment; filename="audit-anchor-{anchor_id}.json"'
    document = json.loads(await download.text())
    assert set(document) == {
        "chain", "version", "seq", "eventId", "hash", "signedAt", "keyId", "publicKey", "signature"
    }  # fmt: skip
    key = private_key(api.app[settings_key].audit.signing_key).public_key()
    checkpoint = verify_anchor(document, key)
    sealed = await db.fetchrow("SELECT hash, event_id FROM audit_chain WHERE seq = $1", checkpoint.seq)
    assert (sealed["hash"], sealed["event_id"]) == (checkpoint.hash, checkpoint.event_id)
    # Every event committed before the anchor was asked for is sealed under it (sealed first).
    [made] = await audit_records(api, auditor, workflow="audit.anchor", actorId=auditor.id)
    assert made["resourceId"] == str(anchor_id)
    assert made["details"]["seq"] == checkpoint.seq

    altered = {**document, "seq": document["seq"] + 1}
    with pytest.raises(Exception, match="signature does not verify"):
        verify_anchor(altered, key)
    missing = await api.client.get(f"/console/audit/chain/anchors/{2**62}")
    assert missing.status == 404


@pytest.mark.parametrize("path", ["/console/audit/chain/runs", "/console/audit/chain/anchors"])
async def test_a_chain_action_without_its_csrf_token_is_refused_and_does_nothing(
    api: Api, db: asyncpg.Connection, path: str
) -> None:
    _, auditor, _ = await a_clinic(api)
    anchors = await db.fetchval("SELECT count(*) FROM audit_anchors")

    for data in ({}, {"csrf_token": "forged"}):
        refused = await api.client.post(path, data=data, allow_redirects=False)
        assert refused.status == 403

    assert await db.fetchval("SELECT count(*) FROM audit_anchors") == anchors
    for workflow in ("audit.verify", "audit.anchor"):
        assert await audit_records(api, auditor, workflow=workflow, actorId=auditor.id) == []


async def test_a_run_this_instance_does_not_know_answers_not_found(api: Api) -> None:
    await a_clinic(api)
    assert (await api.client.get("/console/audit/chain/runs/0123456789abcdef")).status == 404
    assert (await api.client.get("/console/audit/chain/runs/not-a-run")).status == 404


# --- exports ---------------------------------------------------------------------------------------


async def test_an_export_streams_the_searchs_records_as_json_lines(api: Api) -> None:
    nurse, auditor, patient = await a_clinic(api)
    for _ in range(3):
        await api.call("GET", f"/api/patients/{patient}", nurse)
    await a_clinic(api)  # another organization's activity, and its auditor signed in
    assert (await sign_in(api, auditor)).status == 303
    filters = {"patientId": str(patient), "workflow": "patient.read"}

    response = await api.client.get("/console/audit/export", params={"format": "jsonl", **filters})

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    assert response.headers["Content-Disposition"].startswith('attachment; filename="audit-events-')
    assert response.headers["Content-Disposition"].endswith('.jsonl"')
    assert "Content-Length" not in response.headers  # streamed (chunked), not built and measured
    assert response.headers["Cache-Control"] == "no-store"
    body = (await response.read()).decode()
    lines = [json.loads(line) for line in body.splitlines()]
    expected = await audit_records(api, auditor, **filters)
    assert [line["id"] for line in lines] == [r["id"] for r in expected]
    assert len(lines) == 4
    assert {(line["patientId"], line["workflow"]) for line in lines} == {(patient, "patient.read")}
    exported = await audit_records(api, auditor, workflow="audit.export", actorId=auditor.id)
    assert [(r["decision"], r["details"]["format"]) for r in exported] == [("allow", "jsonl")]


async def test_an_export_as_a_fhir_bundle_holds_only_ones_own_organizations_records(api: Api) -> None:
    _, auditor, _ = await a_clinic(api)
    await a_clinic(api)  # another organization's activity
    assert (await sign_in(api, auditor)).status == 303

    response = await api.client.get("/console/audit/export", params={"format": "fhir"})

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert response.headers["Content-Disposition"].endswith('.fhir.json"')
    bundle = json.loads(await response.text())
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "collection")
    ids = [int(e["resource"]["id"]) for e in bundle["entry"]]
    expected = await audit_records(api, auditor, limit=1000)
    assert ids == [r["id"] for r in expected if r["id"] <= max(ids)]
    assert all(e["resource"]["resourceType"] == "AuditEvent" for e in bundle["entry"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"format": "csv"}, "format", id="format-unknown"),
        pytest.param({"format": "jsonl", "purpose": "curiosity"}, "purpose", id="purpose-unknown"),
        pytest.param({"format": "jsonl", "from": "yesterday"}, "from", id="from-not-a-date"),
    ],
)
async def test_an_export_with_a_bad_filter_shows_the_form_naming_it(
    api: Api, params: dict[str, str], field: str
) -> None:
    await a_clinic(api)
    response = await api.client.get("/console/audit/export", params=params)
    text = await response.text()
    assert response.status == 422
    if field != "format":
        assert f'aria-describedby="e-{field}"' in text
    assert "Content-Disposition" not in response.headers


async def test_exports_beyond_two_at_once_are_refused_so_slow_downloads_leave_the_pool_to_others(
    api: Api,
) -> None:
    _, auditor, _ = await a_clinic(api)
    held = AuditFilter(organization_id=auditor.organization_id)
    async with contextlib.AsyncExitStack() as slow:  # held open as two slow downloads hold them
        for _ in range(2):
            await slow.enter_async_context(api.app[audit_chain_key].records(held))

        refused = await api.client.get("/console/audit/export", params={"format": "jsonl"})
        assert refused.status == 429
        assert "Content-Disposition" not in refused.headers
        assert int(refused.headers["Retry-After"]) > 0

    response = await api.client.get("/console/audit/export", params={"format": "jsonl"})
    assert response.status == 200
    await response.read()
