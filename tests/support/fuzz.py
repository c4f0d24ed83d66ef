"""Schemathesis over the app's own OpenAPI document (tests/api/test_schemathesis*.py): the document,
the checks, the app served on a loopback port and the call each generated case makes.

The operations are split over two modules by path (``CLINICAL``: one module includes them, the other
excludes them, so together they cover every operation once): ``./run.sh test`` keeps a module on one
worker, and one module of every operation was the longest on either.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

from handlers.api_docs import document_of
from handlers.app import create_app
from handlers.serving import Runner
from integrations.http_clients import http_client
from tests.conftest import app_settings
from tests.support.api import PASSWORD

#: positive_data_acceptance expects every schema-valid body to be accepted, but the document does not
#: express every rule the API enforces (an email's shape, a phone number's plan, a date's range):
#: those are 422s naming the field, as they should be.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]
#: /api/conversations/send-message (POST) is also matched by /api/conversations/{id} (GET, which
#: answers 422 naming id): a GET there is not a 405, and a 405 there truthfully allows GET and POST,
#: while the document lists POST alone for that path. Only there are these two checks left out.
OVERLAPPING = {"/api/conversations/send-message"}
OVERLAP_EXCLUDED = [schemathesis.checks.unsupported_method, schemathesis.checks.allow_header_conformance]
#: What the response-conformance run checked on every operation; all are in the default set.
CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]
assert not set(CONFORMANCE) & set(EXCLUDED + OVERLAP_EXCLUDED)
EXAMPLES = int(os.environ.get("CAREMSG_SCHEMATHESIS_EXAMPLES", "10"))

# Built, not started: the document needs the route table and the middlewares, not a database.
DOCUMENT = document_of(create_app(app_settings("postgresql+asyncpg://unused@127.0.0.1/unused")))


def fuzzed_schema(node: pytest.Item) -> BaseSchema:
    """The document as schemathesis' schema, for the fixture a module's
    ``schemathesis.pytest.from_fixture`` names, asked for by the test ``node``.

    Schemathesis 4.32's fixture-loaded tests name each operation's subtest by rewriting the node's
    ``_nodeid``, which pytest 9 no longer has (it keeps the id in ``_id``): given one, they run and
    report each operation by its label, and the node's own id is left as it was."""
    node._nodeid = node.nodeid  # type: ignore[attr-defined]
    return schemathesis.openapi.from_dict(DOCUMENT)


#: The paths of the second module (patients, their care and their conversations); the first has the rest.
CLINICAL = r"^/api/(patients|care-teams|consents|break-glass|conversations|messages|webhooks)(/|$)"

#: The budget and the determinism of every generated operation.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Served:
    base_url: str
    headers: dict[str, str]
    #: One keep-alive session for every case: a new connection per case, and the proxy and netrc
    #: lookups requests makes for a session of its own, cost as much CPU as the call itself.
    session: requests.Session


@contextmanager
def serving(database_url: str) -> Iterator[Served]:
    """The whole app on a free loopback port, and a self-registered peer support's bearer token."""
    loop = asyncio.new_event_loop()
    # Served as caremsg serve serves it: a request aiohttp's parser refuses gets caremsg's problem.
    runner = Runner(create_app(app_settings(database_url)))

    async def start() -> Served:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with http_client(base_url=base_url) as client:
            email = f"fuzz.{secrets.token_hex(4)}@example.org"
            registered = await client.post(
                "/api/auth/register",
                json={"email": email, "password": PASSWORD, "firstName": "Fuzz", "lastName": "Peer"},
            )
            registered.raise_for_status()  # accepted alike whether or not the email exists: log in
            resp = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            resp.raise_for_status()
            live = (await client.get("/api/openapi.json")).json()
        assert live == DOCUMENT, "the served document is the one these cases were generated from"
        session = requests.Session()
        session.trust_env = False  # loopback: no proxy, no netrc
        return Served(base_url, {"Authorization": f"Bearer {resp.json()['token']}"}, session)

    thread = threading.Thread(target=loop.run_forever, name="schemathesis-app", daemon=True)
    thread.start()
    try:
        served = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
        with served.session:
            yield served
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _negative(case: Any, location: ParameterLocation) -> bool:
    component = (case.meta.components or {}).get(location) if case.meta else None
    return component is not None and component.mode == GenerationMode.NEGATIVE


def call_and_validate(case: Any, served: Served) -> None:
    """One generated request against the served app, with every check but the excluded ones.

    Two of schemathesis' negative cases would otherwise reach the app as valid requests, and the
    check that invalid data is refused then fails on a request that was not invalid (seen at 500
    examples per operation): headers made invalid by leaving out ``Authorization`` (the peer's
    token, added to every case, would put it back: such a case goes without it, and is refused
    401), and a query made invalid by a parameter whose value is null (requests leaves out a
    parameter whose value is None: it goes as an empty value, the only null a query string has)."""
    excluded = EXCLUDED + (OVERLAP_EXCLUDED if case.path in OVERLAPPING else [])
    headers = served.headers
    if _negative(case, ParameterLocation.HEADER) and "Authorization" not in (case.headers or {}):
        headers = {}
    if case.query and _negative(case, ParameterLocation.QUERY):
        case.query = {name: "" if value is None else value for name, value in case.query.items()}
    case.call_and_validate(
        base_url=served.base_url, session=served.session, headers=headers, excluded_checks=excluded
    )
