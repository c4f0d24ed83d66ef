"""Schemathesis over the OpenAPI document: generated requests against the real app on a loopback
port, as a signed-in peer support, with schemathesis' checks (no 5xx, responses conform to the
document).

The budget is ``CAREMSG_SCHEMATHESIS_EXAMPLES`` examples per operation (default 10, one to two minutes
for the whole document on a 2-core machine); raise it for a deeper run. The app runs in a thread
of its own, with its own event loop, because schemathesis' client is synchronous.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from sqlalchemy import text

from engine.model import Role
from engine.workflows.identity import CreateUser, bootstrap_user
from handlers.app import create_app, default_endpoints
from handlers.keys import sessions_key
from handlers.openapi import build_openapi
from integrations.db.uow import SqlUnitOfWork
from integrations.security import Argon2Passwords
from tests.conftest import app_settings

#: positive_data_acceptance expects every schema-valid body to be accepted, but the document does not
#: express every rule the API enforces (an email's shape, a phone number's plan, a date's range):
#: those are 422s naming the field, as they should be.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]
#: /api/conversations/send-message (POST) is also matched by /api/conversations/{id} (GET, which
#: answers 422 naming id): a GET there is not a 405, and a 405 there truthfully allows GET and POST,
#: while the document lists POST alone for that path. Only there are these two checks left out.
OVERLAPPING = {"/api/conversations/send-message"}
OVERLAP_EXCLUDED = [schemathesis.checks.unsupported_method, schemathesis.checks.allow_header_conformance]
EXAMPLES = int(os.environ.get("CAREMSG_SCHEMATHESIS_EXAMPLES", "10"))
PASSWORD = "correct horse battery"

schema = schemathesis.openapi.from_dict(build_openapi(default_endpoints(), version="0"))


@dataclass
class Served:
    base_url: str
    headers: dict[str, str]


async def _peer_support(app: web.Application, base_url: str) -> str:
    """A peer support in an organization of their own, logged in over HTTP: their bearer token."""
    async with app[sessions_key]() as session, session.begin():
        org = (
            await session.execute(
                text("INSERT INTO organizations (name, self_registration) VALUES (:n, false) RETURNING id"),
                {"n": f"Fuzz {secrets.token_hex(4)}"},
            )
        ).scalar_one()
    email = f"fuzz.{secrets.token_hex(4)}@example.org"
    await bootstrap_user(
        lambda: SqlUnitOfWork(app[sessions_key]),
        Argon2Passwords(time_cost=1, memory_kib=64),
        CreateUser(email, PASSWORD, "Fuzz", "Peer", Role.PEER_SUPPORT, int(org)),
    )
    async with httpx.AsyncClient(base_url=base_url) as client:
        resp = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    resp.raise_for_status()
    return str(resp.json()["token"])


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[Served]:
    """The whole app on a free loopback port, in a thread with its own event loop."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(app_settings(database_url)))

    async def start() -> Served:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}"
        token = await _peer_support(runner.app, base_url)  # type: ignore[arg-type]
        return Served(base_url, {"Authorization": f"Bearer {token}"})

    thread = threading.Thread(target=loop.run_forever, name="schemathesis-app", daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_every_generated_request_as_its_document_says(case: Any, served: Served) -> None:
    excluded = EXCLUDED + (OVERLAP_EXCLUDED if case.path in OVERLAPPING else [])
    case.call_and_validate(base_url=served.base_url, headers=served.headers, excluded_checks=excluded)
