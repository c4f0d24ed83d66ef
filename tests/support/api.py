"""The test's view of the HTTP API: a small client that speaks it the way a care-staff app does, and
people of every role to act as (created the way the command line does, each with a token)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseRunner, TestClient, TestServer

from engine.model import Role
from engine.workflows.identity import CreateUser, bootstrap_user
from handlers.keys import rejections_key, services_key, sessions_key
from handlers.serving import Runner
from integrations.db.uow import SqlUnitOfWork

PASSWORD = "correct horse battery"
#: The media type of every refusal (RFC 9457).
PROBLEM_JSON = "application/problem+json"


class ServedTestServer(TestServer):
    """aiohttp's test server, serving the app as ``caremsg serve`` does (handlers.serving.Runner):
    what the connection answers before routing is caremsg's in every test that uses it."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return Runner(self.app, **kwargs)


def field_names(body: Any) -> list[str]:
    """The fields a problem+json refusal names, in order (``errors[].field``)."""
    return [e["field"] for e in (body or {}).get("errors", [])]


def new_request_id() -> str:
    """A fresh X-Request-ID: sent with a request, it finds that request's audit records."""
    return f"test-{uuid.uuid4().hex}"


@dataclass
class Person:
    id: int
    token: str
    role: str
    organization_id: int
    email: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """The test's view of caremsg: JSON in, (status, JSON) out, with people to act as."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[no-any-return]

    async def call(
        self, method: str, path: str, who: Person | None = None, json: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if who is not None:
            headers.update(who.auth)
        resp = await self.client.request(method, path, json=json, headers=headers, **kw)
        body = await resp.json(content_type=None) if resp.content_length != 0 else None
        return resp.status, body

    async def send(
        self, method: str, path: str, who: Person | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], Any]:
        """Like :meth:`call`, with the response headers too (content type, request id, auth)."""
        headers = dict(kw.pop("headers", {}))
        if who is not None:
            headers.update(who.auth)
        resp = await self.client.request(method, path, headers=headers, **kw)
        return resp.status, dict(resp.headers), await resp.json(content_type=None)

    async def organization(self, name: str | None = None, *, self_registration: bool = True) -> int:
        """A new organization, created directly (there is no admin yet to create it)."""
        name = name or f"Org {secrets.token_hex(4)}"
        async with self.app[sessions_key]() as session, session.begin():
            from sqlalchemy import text

            row = (
                await session.execute(
                    text("INSERT INTO organizations (name, self_registration) VALUES (:n, :s) RETURNING id"),
                    {"n": name, "s": self_registration},
                )
            ).one()
        return int(row.id)

    async def governing_organization(self) -> int:
        """The organization whose compliance officers may change the policy (the app's
        ``EngineSettings.governing_organization``), added the first time it is asked for."""
        name = self.app[services_key].settings.governing_organization
        async with self.app[sessions_key]() as session, session.begin():
            from sqlalchemy import text

            found = (
                await session.execute(
                    text("SELECT id FROM organizations WHERE name = :n ORDER BY id LIMIT 1"), {"n": name}
                )
            ).first()
        return int(found.id) if found is not None else await self.organization(name)

    async def person(self, role: str | Role, organization_id: int, **names: str) -> Person:
        """A user of any role, created the way the command line does, with an access token of their own."""
        role = Role(role)
        email = f"{role.value}.{secrets.token_hex(4)}@example.org"
        sessions = self.app[sessions_key]
        user = await bootstrap_user(
            lambda: SqlUnitOfWork(sessions),
            self.services.passwords,  # the app's own hasher (a new one hashes once to start)
            CreateUser(
                email,
                PASSWORD,
                names.get("first_name", "Test"),
                names.get("last_name", "Person"),
                role,
                organization_id,
            ),
        )
        # Signed in as the login workflow would sign them in (the same token service, the same
        # claims), not through it: the login is tested on its own (tests/api/test_auth.py, the
        # throttle, the console), and one login per person was a fifth of an API test's CPU.
        token = self.services.tokens.issue(user).token
        return Person(user.id, token, role.value, organization_id, email)

    async def patient(self, who: Person, **fields: Any) -> int:
        body = {"firstName": "John", "lastName": "Smith", "riskLevel": "high", **fields}
        status, created = await self.call("POST", "/api/patients", who, json=body)
        assert status == 201, created
        return int(created["id"])

    async def conversation(
        self, who: Person, patient_id: int, *member_ids: int, **fields: Any
    ) -> dict[str, Any]:
        """A conversation about the patient that ``who`` creates with ``member_ids``, as created."""
        body = {"title": "Plan", "patientId": patient_id, "memberIds": list(member_ids), **fields}
        status, created = await self.call("POST", "/api/conversations", who, json=body)
        assert status == 201, created
        return created  # type: ignore[no-any-return]

    async def consent(self, officer: Person, patient_id: int, **recipient: Any) -> dict[str, Any]:
        body = {"patientId": patient_id, "purpose": "treatment", **recipient}
        status, created = await self.call("POST", "/api/consents", officer, json=body)
        assert status == 201, created
        return created  # type: ignore[no-any-return]

    async def flush_rejections(self) -> None:
        """Write the window's refused-token summaries now (the app does it every window)."""
        await self.app[rejections_key].flush()

    @property
    def services(self) -> Any:
        return self.app[services_key]
