"""Schemathesis over the app's own OpenAPI document, the clinical operations (patients, care teams,
consents, break-glass, conversations, messages, webhooks): see tests/api/test_schemathesis.py, which
takes every other operation with the same checks, and tests/support/fuzz.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis

from tests.support.fuzz import CLINICAL, DOCUMENT, FUZZ_SETTINGS, Served, call_and_validate, serving

schema = schemathesis.openapi.from_dict(DOCUMENT).include(path_regex=CLINICAL)


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[Served]:
    """The whole app on a free loopback port, and a self-registered peer support's bearer token."""
    with serving(database_url) as served:
        yield served


@schema.parametrize()
@FUZZ_SETTINGS
def test_the_clinical_operations_answer_every_generated_request_as_documented(
    case: Any, served: Served
) -> None:
    call_and_validate(case, served)
