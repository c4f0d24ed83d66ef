"""The elements of a 42 CFR Part 2 consent (2.31(a)) as the API takes them, for the tests that record one."""

from __future__ import annotations

from typing import Any

PART2_ELEMENTS: dict[str, Any] = {
    "discloser": "Riverside Recovery Program",
    "information": "Diagnosis, medications and dates of treatment",
    "signedBy": "The patient",
    "signedOn": "2026-11-30",
    "revocationRightStated": True,
}
