"""The console's test tables and what-if pages over plain HTTP: the code of ``caremsg policy test``,
``check`` and ``diff`` run for a compliance officer (``console.policy.tests``,
``console.policy.what_if``), refused to every other role, CSRF-protected, size-limited, audited
with the files' names and hashes but never their text, and a what-if only ever sees the audited
decisions of the officer's own organization."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import ClientResponse, FormData
from markupsafe import escape

from engine.policy_edits import run_tables
from handlers.keys import settings_key
from integrations.policy_files import read_policy_tables
from tests.support.api import Api
from tests.support.console import CSRF, audit_records, sign_in

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
#: The README's worked example: peer support may add people to care teams.
PEER_ADDS_MEMBERS = "p, peer_support, care_team.add_member, care_team & covered\n"


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


async def csrf_of(api: Api, path: str = "/console/policy/what-if") -> str:
    page = await api.client.get(path)
    assert page.status == 200, await page.text()
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


async def what_if(
    api: Api,
    *,
    token: str | None,
    text: str = "",
    name: str = "roles.csv",
    uploads: tuple[tuple[str, bytes], ...] = (),
    since: datetime | str | None = None,
) -> ClientResponse:
    """Post the what-if form; ``since`` as text is sent as typed."""
    now = datetime.now(UTC)
    form = FormData()
    if token is not None:
        form.add_field("csrf_token", token)
    form.add_field("name", name)
    form.add_field("text", text)
    for filename, content in uploads:
        form.add_field("upload", content, filename=filename, content_type="text/csv")
    form.add_field("from", since if isinstance(since, str) else _minute(since or now - timedelta(hours=1)))
    form.add_field("to", _minute(now + timedelta(minutes=2)))
    return await api.client.post("/console/policy/what-if", data=form, allow_redirects=False)


def rules_with(extra: str) -> str:
    return (POLICY_DIR / "roles.csv").read_text() + extra


async def test_a_compliance_officer_sees_every_case_and_the_rules_no_case_exercises(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    page = await api.client.get("/console/policy/tests")
    assert page.status == 200
    text = await page.text()
    run = run_tables(api.services.policy.current, read_policy_tables(POLICY_DIR))
    body = text.split("<tbody>", 1)[1]
    assert body.count("<tr") == len(run.results)
    assert f"<strong>{len(run.results)} passed, 0 failed.</strong>" in text
    assert run.coverage.unexercised_rules  # the shipped tables leave some rules unexercised
    for rule in run.coverage.unexercised_rules:
        assert escape(rule.located) in text
    # A case as a row: where, who, workflow, facts, consent, expected, actual, the rule, the result.
    assert re.search(
        r"<code>tests/default\.csv:\d+</code></td>\s*<td>peer_support</td>\s*<td><code>patient\.read</code></td>"
        r"\s*<td>care_team</td>\s*<td>none</td>\s*<td>deny: no_active_consent</td>"
        r"\s*<td>deny: no_active_consent</td>\s*<td>—</td>\s*<td>pass</td>",
        text,
    )
    [record] = await audit_records(api, officer, workflow="console.policy.tests", actorId=officer.id)
    assert (record["decision"], record["matchedRule"].split(":")[0]) == ("allow", "roles.csv")


async def test_an_auditor_may_see_neither_page_and_each_refusal_is_audited(api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    assert (await sign_in(api, auditor)).status == 303
    home = await (await api.client.get("/console/")).text()
    assert "/console/policy/tests" not in home.split("<main", 1)[1]
    assert "/console/policy/what-if" not in home.split("<main", 1)[1]
    for path in ("/console/policy/tests", "/console/policy/what-if"):
        page = await api.client.get(path)
        assert page.status == 403, path
        assert "role_not_permitted" in await page.text()
    token = CSRF.search(home)
    assert token is not None
    posted = await what_if(api, token=token.group(1), text=rules_with(PEER_ADDS_MEMBERS))
    assert posted.status == 403
    for workflow, count in (("console.policy.tests", 1), ("console.policy.what_if", 2)):
        records = await audit_records(api, auditor, workflow=workflow, actorId=auditor.id)
        assert [(r["decision"], r["reason"]) for r in records] == [("deny", "role_not_permitted")] * count
    assert not await audit_records(api, auditor, workflow="console.policy.what_if", decision="allow")


async def test_a_breaking_edit_shows_the_error_at_its_file_and_line_and_nothing_is_applied(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    before = api.services.policy.current.version
    edited = rules_with("p, peer_suport, patient.read, care_team & covered\n")
    line = edited.count("\n")
    response = await what_if(api, token=await csrf_of(api), text=edited)
    assert response.status == 200
    text = await response.text()
    assert "A dry run: nothing you send here is applied." in text
    assert escape(f"roles.csv:{line}: error: unknown role 'peer_suport'") in text
    assert "NOT OK" in text
    assert api.services.policy.current.version == before
    assert (POLICY_DIR / "roles.csv").read_text() != edited
    # The audit trail keeps that it ran, the file's name and hash, never its text.
    [ran] = [
        r
        for r in await audit_records(api, officer, workflow="console.policy.what_if", actorId=officer.id)
        if r["event"] == "policy.what_if"
    ]
    assert ran["details"]["files"] == "roles.csv"
    assert ran["details"]["sha256"] == hashlib.sha256(edited.encode()).hexdigest()
    assert ran["details"]["problems"] == 1
    assert "peer_suport" not in str(ran)


@pytest.mark.parametrize(
    ("name", "broken", "message"),
    [
        ("workflows.toml", '[workflows."console.policy.oops"\n', "error: "),
        ("tests/default.csv", "peer_support, care_team, none, patient.read\n", "error: a case reads: who,"),
    ],
)
async def test_a_breaking_edit_of_any_file_names_that_file_and_the_line(
    api: Api, name: str, broken: str, message: str
) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    edited = (POLICY_DIR / name).read_text() + broken
    response = await what_if(api, token=await csrf_of(api), text=edited, name=name)
    assert response.status == 200
    assert escape(f"{name}:{edited.count(chr(10))}: {message}") in await response.text()


async def test_a_model_whose_matcher_would_stall_the_service_is_refused_without_evaluating_it(
    api: Api,
) -> None:
    """pycasbin evaluates a matcher for every rule it walks: a catastrophic pattern in regexMatch
    held the interpreter for minutes per decision, so one officer of any organization stalled every
    request of the service with one what-if. The matcher is refused before any case is decided."""
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    shipped = (POLICY_DIR / "model.conf").read_text()
    matcher = next(line for line in shipped.splitlines() if line.startswith("m = "))
    stalling = f'{matcher} && !regexMatch("{"a" * 40}!", "^(a+)+$")'
    response = await what_if(
        api, token=await csrf_of(api), text=shipped.replace(matcher, stalling), name="model.conf"
    )
    assert response.status == 200
    line = shipped.splitlines().index(matcher) + 1
    assert escape(f"model.conf:{line}: error: matcher m may not use regexMatch()") in await response.text()


async def test_a_rule_change_lists_the_decisions_it_would_change_with_a_count_per_workflow(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    officer = await api.person("compliance_officer", org)
    peer = await api.person("peer_support", org)
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(peer)  # whoever registers a patient joins its care team
    team_id = await db.fetchval("SELECT id FROM care_teams WHERE patient_id = $1", patient_id)
    started = datetime.now(UTC) - timedelta(minutes=1)
    for _ in range(3):
        status, body = await api.call(
            "POST", f"/api/care-teams/{team_id}/members", peer, json={"userId": nurse.id}
        )
        assert (status, body["reason"]) == (403, "role_not_permitted")
    # Another organization's officer tries the same edit: none of these decisions are theirs to see.
    other = await api.person("compliance_officer", await api.organization())

    assert (await sign_in(api, officer)).status == 303
    text = await (
        await what_if(api, token=await csrf_of(api), text=rules_with(PEER_ADDS_MEMBERS), since=started)
    ).text()
    assert re.search(r"<tr><td><code>care_team\.add_member</code></td><td>3</td><td>\d+</td></tr>", text)
    rows = re.findall(
        r"<td>peer_support</td><td><code>care_team\.add_member</code></td>"
        r"<td>care_team &amp; covered &amp; own_org</td><td>deny</td><td><strong>allow</strong></td>",
        text,
    )
    assert len(rows) == 3
    assert "<strong>3 of " in text
    # The shipped case that says peer support may not add members now fails, as the CLI's would.
    assert re.search(
        r"<td>peer_support</td><td><code>care_team\.add_member</code></td>", text.split("Failing cases")[1]
    )

    assert (await sign_in(api, other)).status == 303
    text = await (
        await what_if(api, token=await csrf_of(api), text=rules_with(PEER_ADDS_MEMBERS), since=started)
    ).text()
    assert "<td><code>care_team.add_member</code></td><td>3</td>" not in text
    assert "<strong>0 of " in text


async def test_an_uploaded_test_table_is_run_and_a_failing_case_is_shown(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    table = "compliance_officer, none, none, console.policy.what_if, deny\n"
    response = await what_if(api, token=await csrf_of(api), uploads=(("extra.csv", table.encode()),))
    assert response.status == 200
    text = await response.text()
    assert "<code>tests/extra.csv</code> (a new test table)" in text
    assert "<strong>No problems.</strong>" in text
    assert re.search(r"<code>tests/extra\.csv:1</code></td><td>compliance_officer</td>", text)


async def test_a_what_if_without_its_csrf_token_is_refused_and_nothing_runs(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    for token in (None, "forged"):
        response = await what_if(api, token=token, text=rules_with(PEER_ADDS_MEMBERS))
        assert response.status == 403
        assert "security token" in await response.text()
    assert not await audit_records(api, officer, workflow="console.policy.what_if", actorId=officer.id)


async def test_an_oversize_upload_is_refused_with_the_limit_named(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    limit = api.app[settings_key].api.max_body_bytes
    big = b"# padding\n" * (limit // 10 + 100)
    response = await what_if(api, token=await csrf_of(api), uploads=(("roles.csv", big),))
    assert response.status == 413
    text = await response.text()
    assert f"at most {limit // 1024} KiB" in text
    assert "Nothing was read or done" in text
    records = await audit_records(api, officer, workflow="console.policy.what_if", actorId=officer.id)
    assert [r["event"] for r in records] == ["decision"]  # opening the form; no what-if ran


async def test_a_file_that_is_no_policy_file_and_a_bad_period_are_named_next_to_their_fields(
    api: Api,
) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    token = await csrf_of(api)
    response = await what_if(api, token=token, uploads=(("notes.txt", b"hello"),))
    assert response.status == 422
    text = await response.text()
    assert 'id="f-upload" name="upload"' in text
    assert re.search(r'<span class="error" id="e-upload">Name a policy file', text)
    nothing = await what_if(api, token=token)
    assert nothing.status == 422
    assert 'id="e-text">Paste an edited file' in await nothing.text()
    later = await what_if(api, token=token, text="x", since=datetime.now(UTC) + timedelta(hours=1))
    assert later.status == 422
    assert 'id="e-from">Must be earlier than to.' in await later.text()


@pytest.mark.parametrize("typed", ["0001-01-01T00:00", "1899-12-31T23:59", "3000-01-01T00:00"])
async def test_a_period_outside_the_years_the_api_takes_is_named_and_nothing_is_read(
    api: Api, typed: str
) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    response = await what_if(api, token=await csrf_of(api), text="x", since=typed)
    assert response.status == 422
    assert 'id="e-from">Must be a date and time between 1900-01-01 and 2999-12-31.' in await response.text()
    records = await audit_records(api, officer, workflow="console.policy.what_if", actorId=officer.id)
    # Opening the form, then the what-if refused for its input before it read a decision.
    assert [(r["event"], r["outcome"], r["details"].get("endedBy")) for r in records] == [
        ("decision", "success", None),
        ("decision", "failure", "validation_error"),
    ]


async def test_the_form_loads_a_current_file_to_start_from(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    page = await api.client.get("/console/policy/what-if", params={"file": "sms.toml"})
    assert page.status == 200
    text = await page.text()
    assert escape((POLICY_DIR / "sms.toml").read_text()) in text
    assert '<option value="tests/default.csv"' in text
    assert '<option value="sms.toml" selected>' in text
