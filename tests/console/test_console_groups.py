"""Compliance groups in the console over plain HTTP: the organization's groups and those shared
with it (``compliance_group.list``), one created through the form (``compliance_group.create``, each
error next to its field) and shared (``compliance_group.share``); every form with the CSRF token."""

from __future__ import annotations

from tests.support.api import Api
from tests.support.console import CSRF, audit_records, sign_in


async def token_of(api: Api) -> str:
    page = await api.client.get("/console/compliance-groups")
    assert page.status == 200, await page.text()
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


async def test_an_officer_creates_a_group_and_shares_it(api: Api) -> None:
    org, partner, other = await api.organization(), await api.organization(), await api.organization()
    officer = await api.person("compliance_officer", org)
    assert (await sign_in(api, officer)).status == 303
    token = await token_of(api)
    created = await api.client.post(
        "/console/compliance-groups",
        data={
            "csrf_token": token,
            "name": "Crisis network",
            "description": "Partners on call",
            "organizationIds": [str(partner), str(other)],
        },
        allow_redirects=False,
    )
    assert created.status == 303, await created.text()
    status, listed = await api.call("GET", "/api/compliance-groups", officer)
    assert status == 200
    [group] = listed["items"]
    assert (group["name"], group["organizationId"], sorted(group["organizationIds"])) == (
        "Crisis network",
        org,
        sorted([partner, other]),
    )
    page = await (await api.client.get(created.headers["Location"])).text()
    assert "The group was created." in page
    assert "Crisis network" in page

    shared = await api.client.post(
        f"/console/compliance-groups/{group['id']}/shares",
        data={"csrf_token": token, "organizationId": str(partner)},
        allow_redirects=False,
    )
    assert shared.status == 303
    _, listed = await api.call("GET", "/api/compliance-groups", officer)
    assert listed["items"][0]["sharedWith"] == [partner]
    # The partner's officer sees it as shared with them, without a share form.
    theirs = await api.person("compliance_officer", partner)
    assert (await sign_in(api, theirs)).status == 303
    html = await (await api.client.get("/console/compliance-groups")).text()
    assert "Crisis network" in html
    assert "shared with you" in html
    assert f'action="/console/compliance-groups/{group["id"]}/shares"' not in html
    records = await audit_records(api, officer, workflow="compliance_group.share", actorId=officer.id)
    assert [(r["outcome"], r["resourceId"]) for r in records] == [("success", str(group["id"]))]


async def test_the_forms_errors_are_next_to_their_fields_and_nothing_is_created(api: Api) -> None:
    org = await api.organization()
    officer = await api.person("compliance_officer", org)
    assert (await sign_in(api, officer)).status == 303
    token = await token_of(api)
    empty = await api.client.post("/console/compliance-groups", data={"csrf_token": token, "name": " "})
    html = await empty.text()
    assert empty.status == 422
    assert 'id="ge-name"' in html
    assert 'id="ge-organizationIds"' in html
    assert "Choose at least one organization." in html
    unknown = await api.client.post(
        "/console/compliance-groups",
        data={"csrf_token": token, "name": "Kept", "organizationIds": "2147480000"},
    )
    html = await unknown.text()
    assert unknown.status == 422
    assert "No such organization." in html
    assert 'value="Kept"' in html  # what was typed stays
    forged = await api.client.post(
        "/console/compliance-groups",
        data={"csrf_token": "x", "name": "Forged", "organizationIds": str(org)},
    )
    assert forged.status == 403
    status, listed = await api.call("GET", "/api/compliance-groups", officer)
    assert (status, listed["items"]) == (200, [])


async def test_a_share_without_an_organization_is_named_and_anothers_group_answers_404(api: Api) -> None:
    org, partner = await api.organization(), await api.organization()
    officer = await api.person("compliance_officer", org)
    status, group = await api.call(
        "POST", "/api/compliance-groups", officer, json={"name": "Ours", "organizationIds": [partner]}
    )
    assert status == 201
    assert (await sign_in(api, officer)).status == 303
    token = await token_of(api)
    blank = await api.client.post(
        f"/console/compliance-groups/{group['id']}/shares", data={"csrf_token": token, "organizationId": ""}
    )
    assert blank.status == 422
    assert f'id="se-{group["id"]}"' in await blank.text()
    stranger = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, stranger)).status == 303
    token = await token_of(api)
    html = await (await api.client.get("/console/compliance-groups")).text()
    assert "Ours" not in html  # another organization's group is not listed
    theirs = await api.client.post(
        f"/console/compliance-groups/{group['id']}/shares",
        data={"csrf_token": token, "organizationId": str(partner)},
    )
    assert theirs.status == 404
    _, listed = await api.call("GET", "/api/compliance-groups", officer)
    assert listed["items"][0]["sharedWith"] == []


async def test_an_auditor_may_not_see_the_compliance_groups(api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    assert (await sign_in(api, auditor)).status == 303
    main = (await (await api.client.get("/console/")).text()).split('<main id="main">')[1]
    assert "/console/compliance-groups" not in main
    assert "/console/audit/charts" in main
    page = await api.client.get("/console/compliance-groups")
    assert page.status == 403
    assert "role_not_permitted" in await page.text()
