"""Schemathesis over the app's own OpenAPI document, the clinical operations (patients, care teams,
consents, break-glass, conversations, messages, webhooks): see tests/api/test_schemathesis.py, which
takes every other operation with the same checks, and tests/support/fuzz.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.schemas import BaseSchema

from tests.support.fuzz import CLINICAL, FUZZ_SETTINGS, Served, call_and_validate, fuzzed_schema, serving

schema = schemathesis.pytest.from_fixture("fuzzed").include(path_regex=CLINICAL)


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
def test_the_clinical_operations_answer_every_generated_request_as_documented(
    case: Any, served: Served
) -> None:
    call_and_validate(case, served)
