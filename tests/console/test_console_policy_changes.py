"""The console's four-eyes policy changes over plain HTTP: a compliance officer proposes an edit of a
policy file (checked and tested first), a second one approves it and the file in the module's own
copy of policies/ is written and reloaded; the proposer cannot approve; a stale proposal and a
broken edit are refused; forms need their CSRF token; other roles are refused."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from handlers.keys import policy_key
from handlers.settings import Settings
from tests.support.api import Api, Person
from tests.support.console import CSRF, audit_records, console_app, copy_of_policies, sign_in

CHANGES = "/console/policy/changes"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_of_policies(tmp_path_factory.mktemp("four-eyes"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(settings: Settings, policy_dir: Path) -> AsyncIterator[Api]:
    async with console_app(settings, policy_dir=policy_dir) as api:
        yield api


async def officers(api: Api) -> tuple[Person, Person]:
    org = await api.governing_organization()  # only its officers change the policy
    return await api.person("compliance_officer", org), await api.person("compliance_officer", org)


async def csrf_of(api: Api, path: str) -> str:
    page = await api.client.get(path)
    assert page.status == 200, await page.text()
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


async def propose(api: Api, who: Person, file: str, content: str, reason: str) -> Any:
    assert (await sign_in(api, who)).status == 303
    token = await csrf_of(api, f"{CHANGES}?file={file}")
    return await api.client.post(
        CHANGES,
        data={"csrf_token": token, "file": file, "content": content, "reason": reason},
        allow_redirects=False,
    )


def proposal_id(response: Any) -> int:
    assert response.status == 303, response.status
    match = re.fullmatch(rf"{CHANGES}/([0-9]+)\?done=proposed", response.headers["Location"])
    assert match is not None
    return int(match.group(1))


async def decide(api: Api, who: Person, proposal: int, action: str, note: str = "") -> Any:
    assert (await sign_in(api, who)).status == 303
    token = await csrf_of(api, f"{CHANGES}/{proposal}")
    return await api.client.post(
        f"{CHANGES}/{proposal}/{action}", data={"csrf_token": token, "note": note}, allow_redirects=False
    )


def comment() -> str:
    return f"# four-eyes test {secrets.token_hex(4)}\n"


async def test_a_change_proposed_by_one_officer_applies_when_a_second_approves(
    api: Api, policy_dir: Path
) -> None:
    alice, bob = await officers(api)
    rules = policy_dir / "roles.csv"
    before, line = rules.read_text(), comment()

    assert (await sign_in(api, alice)).status == 303
    form = await api.client.get(f"{CHANGES}?file=roles.csv")
    text = await form.text()
    assert form.status == 200
    assert "p, compliance_officer, policy.approve,     proposed_by_other" in text  # prefilled
    # A browser's textarea sends CRLF line ends: stored as the file keeps them.
    sent = (before + line).replace("\n", "\r\n")
    proposal = proposal_id(await propose(api, alice, "roles.csv", sent, "Document the four-eyes rule"))
    assert rules.read_text() == before  # nothing changes until someone else approves

    page = await api.client.get(f"{CHANGES}/{proposal}")
    text = await page.text()
    assert '<span class="diff-add">+' + line.strip() + "</span>" in text
    assert "Approve and apply" not in text  # the policy offers the proposer only "withdraw"
    assert "Withdraw" in text
    refused = await decide(api, alice, proposal, "approve")
    assert refused.status == 403
    assert "second compliance officer" in await refused.text()
    assert rules.read_text() == before

    version = api.app[policy_key].current.version
    approved = await decide(api, bob, proposal, "approve", "Checked against the ticket")
    assert approved.status == 303
    assert approved.headers["Location"] == f"{CHANGES}/{proposal}?done=approved"
    assert rules.read_text() == before + line
    assert api.app[policy_key].current.version != version
    shown = await (await api.client.get(approved.headers["Location"])).text()
    assert "approved and applied" in shown
    assert f"user {bob.id}" in shown

    [approval] = [
        r
        for r in await audit_records(api, alice, workflow="policy.approve")
        if r["resourceId"] == str(proposal)
    ][-1:]
    assert approval["decision"] == "allow"
    assert approval["outcome"] == "success"
    assert (approval["details"]["proposerId"], approval["details"]["approverId"]) == (alice.id, bob.id)
    assert approval["details"]["proposalReason"] == "Document the four-eyes rule"
    assert f"+{line}" in approval["details"]["diff"]


async def test_the_history_offers_restoring_the_previous_version_with_four_eyes(
    api: Api, policy_dir: Path
) -> None:
    alice, bob = await officers(api)
    sms = policy_dir / "sms.toml"
    before = sms.read_text()
    proposal = proposal_id(await propose(api, alice, "sms.toml", before + comment(), "A note"))
    assert (await decide(api, bob, proposal, "approve")).status == 303
    changed = sms.read_text()

    listing = await api.client.get(f"{CHANGES}?file=sms.toml")
    text = await listing.text()
    assert f'action="{CHANGES}/{proposal}/restore"' in text
    token = CSRF.search(text)
    assert token is not None
    restore = await api.client.post(
        f"{CHANGES}/{proposal}/restore",
        data={
            "csrf_token": token.group(1),
            "version": "before",
            "reason": "Back out the note",
            "file": "sms.toml",
        },
        allow_redirects=False,
    )
    restored = proposal_id(restore)
    assert sms.read_text() == changed
    assert (await decide(api, bob, restored, "approve")).status == 403  # bob proposed the restore
    assert (await decide(api, alice, restored, "approve")).status == 303
    assert sms.read_text() == before


async def test_a_broken_edit_is_refused_with_its_file_and_line_and_nothing_is_proposed(api: Api) -> None:
    alice, _ = await officers(api)
    response = await propose(api, alice, "roles.csv", "p, peer_suport, patient.read, any\n", "Typo")
    text = await response.text()
    assert response.status == 422
    assert "roles.csv:1: error: unknown role &#39;peer_suport&#39;" in text
    assert "nothing was proposed" in text
    assert "peer_suport" in text  # what was typed is kept in the textarea


async def test_a_stale_proposal_cannot_be_approved(api: Api, policy_dir: Path) -> None:
    alice, bob = await officers(api)
    model = policy_dir / "model.conf"
    proposal = proposal_id(await propose(api, alice, "model.conf", model.read_text() + comment(), "Note"))
    edited = model.read_text() + comment()
    model.write_text(edited)  # edited directly in the files, as stays possible

    page = await api.client.get(f"{CHANGES}/{proposal}")
    assert "Stale" in await page.text()
    refused = await decide(api, bob, proposal, "approve")
    assert refused.status == 409
    assert "stale" in await refused.text()
    assert model.read_text() == edited


async def test_rejecting_and_withdrawing_close_a_proposal_without_touching_the_file(
    api: Api, policy_dir: Path
) -> None:
    alice, bob = await officers(api)
    rules = policy_dir / "roles.csv"
    first = proposal_id(await propose(api, alice, "roles.csv", rules.read_text() + comment(), "One"))
    second = proposal_id(await propose(api, alice, "roles.csv", rules.read_text() + comment(), "Two"))
    before = rules.read_text()

    no_reason = await decide(api, bob, first, "reject", "  ")
    assert no_reason.status == 422
    assert (await decide(api, bob, first, "reject", "Not needed")).status == 303
    assert (await decide(api, bob, second, "withdraw")).status == 403
    assert (await decide(api, alice, second, "withdraw")).status == 303
    assert (await decide(api, bob, first, "approve")).status == 409

    assert rules.read_text() == before
    listing = await (await api.client.get(CHANGES)).text()
    assert "rejected" in listing
    assert "withdrawn" in listing


async def test_forms_without_their_csrf_token_do_nothing(api: Api, policy_dir: Path) -> None:
    alice, bob = await officers(api)
    rules = policy_dir / "roles.csv"
    proposal = proposal_id(await propose(api, alice, "roles.csv", rules.read_text() + comment(), "Note"))
    before = rules.read_text()
    assert (await sign_in(api, bob)).status == 303

    forged = await api.client.post(f"{CHANGES}/{proposal}/approve", data={"csrf_token": "forged"})
    sneaked = await api.client.post(
        CHANGES, data={"file": "roles.csv", "content": before + "# x\n", "reason": "r"}
    )

    assert forged.status == 403
    assert sneaked.status == 403
    assert rules.read_text() == before


@pytest.mark.parametrize("role", ["auditor", "admin"])
async def test_other_roles_are_refused_the_changes_pages(api: Api, role: str) -> None:
    alice, _ = await officers(api)
    other = await api.person(role, alice.organization_id)
    if role == "admin":
        # Admins do not enter the console at all.
        assert (await sign_in(api, other)).status == 403
        return
    assert (await sign_in(api, other)).status == 303
    response = await api.client.get(CHANGES)
    assert response.status == 403
    assert "role_not_permitted" in await response.text()


async def test_an_uploaded_file_replaces_the_text_box_and_must_be_text(api: Api, policy_dir: Path) -> None:
    alice, _ = await officers(api)
    rules = policy_dir / "roles.csv"
    line = comment()
    assert (await sign_in(api, alice)).status == 303

    async def upload(data: bytes) -> Any:
        token = await csrf_of(api, f"{CHANGES}?file=roles.csv")
        form = aiohttp.FormData()
        for name, value in (
            ("csrf_token", token),
            ("file", "roles.csv"),
            ("content", ""),
            ("reason", "Upload"),
        ):
            form.add_field(name, value)
        form.add_field("upload", data, filename="roles.csv", content_type="text/csv")
        return await api.client.post(CHANGES, data=form, allow_redirects=False)

    not_text = await upload(b"p, admin, policy.read, any\n\xff\xfe\n")
    assert not_text.status == 422
    assert "Must be UTF-8 text" in await not_text.text()
    with_nul = await upload(rules.read_bytes() + b"# \x00\n")
    assert with_nul.status == 422
    assert "control characters" in await with_nul.text()

    proposal = proposal_id(await upload((rules.read_text() + line).encode()))
    page = await (await api.client.get(f"{CHANGES}/{proposal}")).text()
    assert f'<span class="diff-add">+{line.strip()}</span>' in page


async def test_a_proposal_id_that_is_not_one_answers_404(api: Api) -> None:
    alice, _ = await officers(api)
    assert (await sign_in(api, alice)).status == 303
    for path in (f"{CHANGES}/2147483647", f"{CHANGES}/%C2%B9", f"{CHANGES}?cursor=abc"):
        assert (await api.client.get(path)).status == 404, path
    assert (await api.client.get(f"{CHANGES}?file=../config.toml")).status == 200  # shows roles.csv


async def test_another_organizations_officer_reads_proposals_but_is_offered_no_change(
    api: Api, policy_dir: Path
) -> None:
    """The files decide for every organization: only the governing organization's officers change
    them (an organization's admin could otherwise make two officers and change them alone)."""
    alice, _ = await officers(api)
    proposal = proposal_id(await propose(api, alice, "sms.toml", "# outsider test\n", "Read by another"))
    outsider = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, outsider)).status == 303

    listing = await (await api.client.get(CHANGES)).text()
    one = await (await api.client.get(f"{CHANGES}/{proposal}")).text()
    token = await csrf_of(api, f"{CHANGES}/{proposal}")
    approved = await api.client.post(
        f"{CHANGES}/{proposal}/approve", data={"csrf_token": token, "note": ""}, allow_redirects=False
    )

    assert f"{CHANGES}/{proposal}" in listing
    assert "Only the compliance officers of the organization that governs" in listing
    assert "Propose this change" not in listing
    assert "Approve and apply" not in one
    assert approved.status == 403
    assert "# outsider test" not in (policy_dir / "sms.toml").read_text()
