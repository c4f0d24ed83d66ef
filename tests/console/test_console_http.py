"""The console over plain HTTP (no browser): the cookie's flags, CSRF on every form, the session's
timeouts and sign-out, and the policy's refusals of staff roles."""

from __future__ import annotations

from structlog.testing import capture_logs

from handlers.console import cookie_flags
from handlers.console.session import SESSION_COOKIE
from tests.support.api import PASSWORD, Api
from tests.support.console import CSRF, IDLE_SECONDS, audit_records, login_csrf, sign_in
from tests.support.fakes import ShiftedClock


async def test_sign_in_sets_an_http_only_strict_session_cookie(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    response = await sign_in(api, officer)
    assert response.status == 303
    assert response.headers["Location"] == "/console/"
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/console/"
    # Development serves plain HTTP on loopback; everywhere else the cookie is Secure.
    assert not cookie["secure"]
    assert cookie_flags("production")["secure"] is True
    assert cookie_flags("test")["secure"] is True
    home = await api.client.get("/console/")
    assert home.status == 200
    assert "The policy in words" in await home.text()


async def test_the_console_allows_its_own_stylesheet_and_the_api_keeps_default_src_none(api: Api) -> None:
    page = await api.client.get("/console/login")
    assert "style-src 'self'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    css = await api.client.get("/console/console.css")
    assert css.status == 200
    assert css.content_type == "text/css"
    status, headers, _ = await api.send("GET", "/api/openapi.json", None)
    assert status == 200
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_a_sign_in_form_without_its_csrf_token_is_refused_and_logs_nobody_in(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    api.client.session.cookie_jar.clear()
    await login_csrf(api)
    response = await api.client.post(
        "/console/login",
        data={"csrf_token": "forged", "email": officer.email, "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 403
    assert SESSION_COOKIE not in response.cookies


async def test_a_form_whose_multipart_part_has_no_headers_is_a_400_for_the_sign_in_and_a_signed_in_page(
    api: Api,
) -> None:
    """aiohttp's parser refuses such a body only when a handler reads the form; that was a 500."""
    broken = b"--b0undary\r\nnot a header--b0undary--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    api.client.session.cookie_jar.clear()
    assert (await api.client.post("/console/login", data=broken, headers=headers)).status == 400

    auditor = await api.person("auditor", await api.organization())
    assert (await sign_in(api, auditor)).status == 303
    response = await api.client.post("/console/logout", data=broken, headers=headers, allow_redirects=False)
    assert response.status == 400
    # Nothing was done: the session still works.
    assert (await api.client.get("/console/", allow_redirects=False)).status == 200


async def test_a_signed_in_form_post_without_the_sessions_csrf_token_is_refused(api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    assert (await sign_in(api, auditor)).status == 303
    forged = await api.client.post("/console/logout", data={"csrf_token": "x"}, allow_redirects=False)
    assert forged.status == 403
    assert "security token" in await forged.text()
    # Nothing was done: the session still works.
    assert (await api.client.get("/console/", allow_redirects=False)).status == 200


async def test_staff_roles_and_admins_are_refused_the_console_and_the_refusal_is_audited(api: Api) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    for role in ("peer_support", "care_team_member", "admin"):
        person = await api.person(role, org)
        response = await sign_in(api, person)
        assert response.status == 403, role
        assert SESSION_COOKIE not in response.cookies
        assert "compliance officers and auditors" in await response.text()
        records = await audit_records(api, auditor, workflow="console.sign_in", actorId=person.id)
        assert [(r["decision"], r["reason"]) for r in records] == [("deny", "role_not_permitted")], role


async def test_an_auditor_may_not_read_the_policy_in_words_and_is_told_so(api: Api) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    assert (await sign_in(api, auditor)).status == 303
    page = await api.client.get("/console/policy")
    assert page.status == 403
    assert "role_not_permitted" in await page.text()
    records = await audit_records(api, auditor, workflow="console.policy.read", actorId=auditor.id)
    assert [r["decision"] for r in records] == ["deny"]


async def test_a_compliance_officer_reads_every_rule_as_a_sentence(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    page = await api.client.get("/console/policy")
    assert page.status == 200
    text = await page.text()
    assert (
        "A peer support specialist may read a patient&#39;s record when they are on the patient&#39;s "
        "care team and the patient is covered."
    ) in text
    rules = api.services.policy.current.rules
    assert text.count('<span class="rule">') == len(rules)


async def test_the_session_ends_after_the_idle_timeout(api: Api, clock: ShiftedClock) -> None:
    auditor = await api.person("auditor", await api.organization())
    assert (await sign_in(api, auditor)).status == 303
    clock.advance(seconds=IDLE_SECONDS + 1.5)  # idle past the timeout, on the app's clock
    response = await api.client.get("/console/", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/console/login"


async def test_sign_out_ends_the_session_on_the_server_not_just_the_cookie(api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    assert (await sign_in(api, auditor)).status == 303
    jar = api.client.session.cookie_jar
    kept = jar.filter_cookies(api.client.make_url("/console/"))[SESSION_COOKIE].value
    home = await api.client.get("/console/")
    token = CSRF.search(await home.text())
    assert token is not None
    out = await api.client.post("/console/logout", data={"csrf_token": token.group(1)}, allow_redirects=False)
    assert out.status == 303
    # Replaying the old cookie no longer works: the account's sessions ended (sessions_valid_after).
    api.client.session.cookie_jar.update_cookies({SESSION_COOKIE: kept})
    replay = await api.client.get("/console/", allow_redirects=False)
    assert replay.status == 303


async def test_a_forged_session_cookie_is_not_a_session(api: Api) -> None:
    api.client.session.cookie_jar.clear()
    api.client.session.cookie_jar.update_cookies({SESSION_COOKIE: "AAAA:1:eyJhbGciOi.x.y"})
    response = await api.client.get("/console/audit", allow_redirects=False)
    assert response.status == 303


async def test_the_audit_search_is_the_apis_search_with_its_filters(api: Api) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    peer = await api.person("peer_support", org)
    await api.patient(peer)
    assert (await sign_in(api, auditor)).status == 303
    page = await api.client.get(
        "/console/audit", params={"search": "1", "actorId": str(peer.id), "workflow": "patient.create"}
    )
    assert page.status == 200
    text = await page.text()
    expected = await audit_records(api, auditor, actorId=peer.id, workflow="patient.create")
    assert expected
    for record in expected:
        assert f"Record {record['id']}</summary>" in text
    bad = await api.client.get("/console/audit", params={"search": "1", "actorId": "x"})
    assert bad.status == 422
    assert 'aria-invalid="true"' in await bad.text()


async def test_console_sign_in_is_the_login_workflow_with_its_throttle(api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    statuses = []
    for _ in range(5):
        api.client.session.cookie_jar.clear()
        token = await login_csrf(api)
        response = await api.client.post(
            "/console/login",
            data={"csrf_token": token, "email": auditor.email, "password": "not the password"},
            allow_redirects=False,
        )
        assert SESSION_COOKIE not in response.cookies
        statuses.append(response.status)
    # Three free failures (auth.login_account_free_failures), then the account's back-off answers.
    assert statuses[:3] == [401, 401, 401]
    assert 429 in statuses[3:]
    status, body = await api.call(
        "POST", "/api/auth/login", json={"email": auditor.email, "password": PASSWORD}
    )
    assert status == 429, body  # the same throttle holds for the API


async def test_entering_the_console_and_reading_the_policy_are_audited_when_allowed_too(api: Api) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    assert (await api.client.get("/console/policy")).status == 200
    entered = await audit_records(api, officer, workflow="console.sign_in", actorId=officer.id)
    read = await audit_records(api, officer, workflow="console.policy.read", actorId=officer.id)
    (rule,) = [
        r.located
        for r in api.services.policy.current.rules
        if (r.role, r.workflow) == ("compliance_officer", "console.sign_in")
    ]
    assert [(r["decision"], r["matchedRule"]) for r in entered] == [("allow", rule)]
    assert [r["decision"] for r in read] == ["allow"]


async def test_a_redirect_carries_the_security_headers_and_is_logged_like_any_answer(api: Api) -> None:
    """The console's redirects are raised; they went out past the middlewares: aiohttp's Server
    header with its version, no no-store on the sign-in's answer that sets the session cookie, no
    request id, no log line."""
    officer = await api.person("compliance_officer", await api.organization())
    api.client.session.cookie_jar.clear()
    with capture_logs() as logs:
        signed_out = await api.client.get("/console/", allow_redirects=False)
        signed_in = await sign_in(api, officer)

    for response in (signed_out, signed_in):
        assert response.status == 303
        assert response.headers["Server"] == "caremsg"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Request-ID"]
    assert SESSION_COOKIE in signed_in.cookies
    assert signed_in.headers["Location"] == "/console/"
    logged = [(line["route"], line["status"]) for line in logs if line["event"] == "http.request"]
    assert ("/console/", 303) in logged
    assert ("/console/login", 303) in logged
