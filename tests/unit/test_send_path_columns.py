"""The send path's raw SQL (integrations/db/send_uow.py) writes the tables the SQLModel classes declare:
every table and column its INSERTs and UPDATEs name is one of theirs, so the one raw-SQL path cannot
drift from the declarations every other query uses."""

from __future__ import annotations

import re

import pytest

from integrations.db import send_uow
from integrations.db.tables import metadata

_INSERT = re.compile(r"INSERT INTO (\w+)\s*\(([^)]*)\)")
_UPDATE = re.compile(r"UPDATE (\w+) SET (\w+)")


def _writes() -> list[tuple[str, str]]:
    found = []
    for statement in send_uow.STATEMENTS:
        for table, columns in _INSERT.findall(statement):
            found += [(table, c.strip()) for c in columns.split(",")]
        found += _UPDATE.findall(statement)
    return found


def test_the_send_path_writes_messages_deliveries_outbox_keys_and_audit_events() -> None:
    assert {table for table, _ in _writes()} == {
        "messages",
        "message_deliveries",
        "outbox",
        "idempotency_keys",
        "audit_events",
    }


@pytest.mark.parametrize(("table", "column"), _writes(), ids=lambda v: str(v))
def test_every_column_the_send_path_writes_is_declared_on_its_table_class(table: str, column: str) -> None:
    assert column in metadata.tables[table].c
