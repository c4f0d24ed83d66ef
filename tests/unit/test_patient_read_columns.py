"""The patient read's raw SQL (integrations/db/patient_reads.py) names only tables and columns the
SQLModel classes declare, so the one raw-SQL read cannot drift from the declarations every other
query uses (as tests/unit/test_send_path_columns.py holds the send path)."""

from __future__ import annotations

import re

import pytest

from integrations.db import patient_reads
from integrations.db.tables import metadata

_INSERT = re.compile(r"INSERT INTO (\w+)\s*\(([^)]*)\)")
_ALIASED = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)\s+(\w+)\b")
_QUALIFIED = re.compile(r"\b(\w+)\.(\w+)\b")


def _columns() -> list[tuple[str, str]]:
    """Every (table, column) the statements read through an alias or write in an INSERT."""
    found: list[tuple[str, str]] = []
    for statement in patient_reads.STATEMENTS:
        aliases = {alias: table for table, alias in _ALIASED.findall(statement)}
        found += [(aliases[a], c) for a, c in _QUALIFIED.findall(statement) if a in aliases]
        for table, columns in _INSERT.findall(statement):
            found += [(table, c.strip()) for c in columns.split(",")]
    return found


def test_the_patient_read_reads_patients_care_teams_and_sessions_and_writes_audit_events() -> None:
    assert {table for table, _ in _columns()} == {
        "patients",
        "care_teams",
        "care_team_members",
        "break_glass_sessions",
        "audit_events",
    }


def test_the_record_read_is_every_column_the_patients_table_declares() -> None:
    read = {c for t, c in _columns() if t == "patients"}

    assert read >= set(metadata.tables["patients"].c.keys())


@pytest.mark.parametrize(("table", "column"), sorted(set(_columns())), ids=lambda v: str(v))
def test_every_column_the_patient_read_names_is_declared_on_its_table_class(table: str, column: str) -> None:
    assert column in metadata.tables[table].c
