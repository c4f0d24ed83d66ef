"""Schemathesis over the app's own OpenAPI document: generated requests against the real app on a
loopback port, as a self-registered peer support, with schemathesis' default checks.

The document is the app's own (``handlers.api_docs.document_of``: the route table and what the
installed middlewares declare), checked to be the one ``/api/openapi.json`` serves. The default checks
include no 5xx and the response-conformance checks: every answer has a declared status, a declared
content type, the declared headers and a body matching its schema; and the request-side ones (bad
input refused, methods and authentication as documented).

This module takes every operation but the clinical ones (``tests.support.fuzz.CLINICAL``), which
tests/api/test_schemathesis_clinical.py takes: two modules, so that two workers share them. The
document, the checks and the served app are in tests/support/fuzz.py. The schema comes from a fixture
(``schemathesis.pytest.from_fixture``): each operation is a subtest of one test, and its cases are
built when the test runs, on the one worker that runs it, not while every worker collects.

The budget is ``CAREMSG_SCHEMATHESIS_EXAMPLES`` examples per operation (default 10; 500 is green);
raise it for a deeper run. The app runs in a thread of its own, with its own event loop, because schemathesis'
client is synchronous. (This module was two until the OpenAPI work was done: a no-5xx run over the
route table's document and a response-conformance run over the app's; one run of the wider document
with both sets of checks shows the same.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.schemas import BaseSchema

from tests.support.fuzz import CLINICAL, FUZZ_SETTINGS, Served, call_and_validate, fuzzed_schema, serving

schema = schemathesis.pytest.from_fixture("fuzzed").exclude(path_regex=CLINICAL)


@pytest.fixture
def fuzzed(request: pytest.FixtureRequest) -> BaseSchema:
    return fuzzed_schema(request.node)


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[Served]:
    """The whole app on a free loopback port, and a self-registered peer support's bearer token."""
    with serving(database_url) as served:
        yield served


@FUZZ_SETTINGS
@schema.parametrize()
def test_the_api_answers_every_generated_request_as_its_document_says(case: Any, served: Served) -> None:
    call_and_validate(case, served)
