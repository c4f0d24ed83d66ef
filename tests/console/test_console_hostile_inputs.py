"""Hostile input on every console page: a NUL in any field of any form or query string, or in any
path id, is answered with a page or a 4xx, never a 5xx, whatever the other fields hold.

Generated from the console's route table (``handlers.console.ROUTES``), so a page added later is
covered without editing this module. A form's fields are made hostile in turn while every other
field holds a plausible value ("1"), so a form that checks one field before reading the next still
reaches the hostile one: the sign-in form sent a NUL in its email to PostgreSQL once its password
was present (a 500; PostgreSQL refuses NUL in text). A query string's fields are all hostile at
once: the pages read them through the API's query models, which the API's own sweep
(tests/api/test_hostile_inputs_everywhere.py) tries field by field.

Each page is tried as a compliance officer, and as an auditor where the officer is refused it
(between them, every console page is someone's), signed in as a browser would be; the sign-in form
itself signed out.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from handlers.console import PREFIX, ROUTES
from handlers.console.audit_page import FIELDS as AUDIT_FIELDS
from handlers.console.consents_page import FORM_FIELDS as CONSENT_FIELDS
from handlers.console.legal_holds_page import FORM_FIELDS as HOLD_FIELDS
from tests.support.api import Api
from tests.support.console import CSRF, login_csrf, sign_in

NUL = "\u0000"
#: Every field a console page reads from a query string.
QUERY_FIELDS = sorted(
    {*AUDIT_FIELDS, "anchored", "consent", "cursor", "done", "file", "format", "messageId", "per", "search"}
)
#: Every field a console page reads from a form.
FORM_FIELDS = sorted(
    {
        *CONSENT_FIELDS,
        *HOLD_FIELDS,
        "content",
        "description",
        "file",
        "from",
        "name",
        "note",
        "purpose",
        "reason",
        "scope",
        "text",
        "to",
        "version",
    }
)
_PLACEHOLDER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
#: The pages this sweep tries while signed in: every route but the sign-in form and the sign-out.
SIGNED_IN = [
    (method, path) for method, path, _, _ in ROUTES if path not in {f"{PREFIX}/login", f"{PREFIX}/logout"}
]


def _requests(method: str, route: str) -> list[tuple[str, dict[str, str]]]:
    """(path, fields) with every path id "1": a form's fields each a NUL in turn, the others "1"
    (forms are where a page writes); a query's fields all NULs at once. Then each path id a NUL in
    turn, every field "1"."""
    path = _PLACEHOLDER.sub("1", route)
    if method == "GET":
        cases = [(path, dict.fromkeys(QUERY_FIELDS, NUL))]
        names = QUERY_FIELDS
    else:
        names = FORM_FIELDS
        cases = [(path, {name: NUL if name == hostile else "1" for name in names}) for hostile in names]
    for hostile in _PLACEHOLDER.findall(route):
        nul_id = _PLACEHOLDER.sub(lambda m, name=hostile: quote(NUL) if m.group(1) == name else "1", route)
        cases.append((nul_id, dict.fromkeys(names, "1")))
    return cases


async def _send(api: Api, method: str, path: str, fields: dict[str, str], csrf: str) -> int:
    if method == "GET":
        response = await api.client.get(path, params=fields, allow_redirects=False)
    else:
        response = await api.client.post(path, data={**fields, "csrf_token": csrf}, allow_redirects=False)
    await response.read()
    return response.status


async def _signed_in(api: Api, role: str) -> str:
    """Sign in as a new ``role`` of a new organization; the session's CSRF token."""
    who = await api.person(role, await api.organization())
    assert (await sign_in(api, who)).status == 303
    found = CSRF.search(await (await api.client.get(f"{PREFIX}/")).text())
    assert found is not None
    return found.group(1)


async def test_no_console_page_answers_a_nul_with_a_5xx(api: Api) -> None:
    """Tried as a compliance officer, and as an auditor where the officer is refused the page."""
    failures: list[str] = []
    refused: list[tuple[str, str]] = []
    tried = 0
    for role, routes in (("compliance_officer", SIGNED_IN), ("auditor", refused)):
        csrf = await _signed_in(api, role)
        for method, route in list(routes):
            for path, fields in _requests(method, route):
                status = await _send(api, method, path, fields, csrf)
                tried += 1
                if status >= 500:
                    hostile = next((name for name, value in fields.items() if value == NUL), "path id")
                    failures.append(f"{role} {method} {path} {hostile}: {status}")
                if status == 403 and role == "compliance_officer" and (method, route) not in refused:
                    refused.append((method, route))
    assert failures == []
    assert tried >= len(SIGNED_IN)


@pytest.mark.parametrize("hostile", ["email", "password"])
async def test_the_sign_in_form_answers_a_nul_with_a_4xx_and_signs_nobody_in(api: Api, hostile: str) -> None:
    api.client.session.cookie_jar.clear()
    csrf = await login_csrf(api)
    fields = {"email": "officer@example.org", "password": "correct horse battery"}
    fields[hostile] = f"a{NUL}b"

    response = await api.client.post(
        f"{PREFIX}/login", data={**fields, "csrf_token": csrf}, allow_redirects=False
    )

    assert response.status == 422
    assert "Enter a valid email address and password." in await response.text()
