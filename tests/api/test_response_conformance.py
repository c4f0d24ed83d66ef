"""Schemathesis' response-conformance checks over every operation of the app's document.

The document is the app's own (``handlers.api_docs.document_of``: the route table and what the
installed middlewares declare), checked to be the one ``/api/openapi.json`` serves. Generated
requests go to the app on a loopback port as a self-registered peer support, and every answer must
have a declared status, a declared content type, the declared headers and a body matching its
schema. ``CAREMSG_CONFORMANCE_EXAMPLES`` sets the examples per operation (default 5). The app runs
in a thread with its own event loop, because schemathesis' client is synchronous.
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

from handlers.api_docs import document_of
from handlers.app import create_app
from handlers.settings import Settings, load_settings
from tests.conftest import database_settings
from tests.support.api import PASSWORD

EXAMPLES = int(os.environ.get("CAREMSG_CONFORMANCE_EXAMPLES", "5"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


@dataclass
class Served:
    base_url: str
    headers: dict[str, str]


def _settings(database: dict[str, Any]) -> Settings:
    return load_settings(
        env={},
        service={"environment": "development", "log_format": "json"},
        auth={"argon2_time_cost": 1, "argon2_memory_kib": 64, "account_recheck_seconds": 0},
        database={**database, "pool_size": 5, "max_overflow": 5},
        sendbird={"app_id": "", "api_token": "", "write_per_second": 1000, "get_per_second": 1000},
    )


# Built, not started: the document needs the route table and the middlewares, not a database.
DOCUMENT = document_of(create_app(_settings({"url": "postgresql+asyncpg://unused@127.0.0.1/unused"})))
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[Served]:
    """The whole app on a free loopback port, and a peer support's bearer token."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(_settings(database_settings(database_url))))

    async def start() -> Served:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with httpx.AsyncClient(base_url=base_url) as client:
            email = f"conformance.{secrets.token_hex(4)}@example.org"
            registered = await client.post(
                "/api/auth/register",
                json={"email": email, "password": PASSWORD, "firstName": "Con", "lastName": "Formance"},
            )
            registered.raise_for_status()  # accepted alike whether or not the email exists: log in
            resp = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            resp.raise_for_status()
            live = (await client.get("/api/openapi.json")).json()
        assert live == DOCUMENT, "the served document is the one these cases were generated from"
        return Served(base_url, {"Authorization": f"Bearer {resp.json()['token']}"})

    thread = threading.Thread(target=loop.run_forever, name="conformance-app", daemon=True)
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
def test_every_answer_conforms_to_the_document(case: Any, served: Served) -> None:
    case.call_and_validate(base_url=served.base_url, headers=served.headers, checks=CHECKS)
