"""The patient read's unit of work on asyncpg: one read, one atomic write.

``GET /api/patients/{id}`` is the busiest read. Through the general unit of work it took five round
trips (BEGIN, the reader's relation with their open emergency session, the row, the audit insert,
COMMIT), each a socket write that costs far more than PostgreSQL's work on these machines
(bench/README.md, "Patient reads over HTTP"). Here, as for sending (integrations/db/send_uow.py):

- :meth:`PgPatientReadUnitOfWork.read` is one statement: the patient's record, its organization,
  whether the reader is on its care team, and the reader's latest emergency session for it open at
  the moment of the decision, the same facts :class:`integrations.db.patients.SqlRelationshipFacts`
  reads for every other workflow;
- :meth:`PgPatientReadUnitOfWork.commit` stores the buffered audit events in one statement, shared
  with the reads running at the same moment (group commit, integrations/db/audit_batch.py). A
  single statement is its own transaction: the record is stored whole or not at all, the read
  answers only once its own record is stored, and if it cannot be stored the read fails and nothing
  is disclosed (fail closed).

The read runs outside the audit insert's transaction. Under READ COMMITTED, which the general unit
of work uses too, each statement sees what was committed when it started, so the disclosed record
and the facts it was decided on are the same snapshot either way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.model import Patient, RiskLevel
from engine.ports.patients import PatientRead, PatientRelation
from integrations.db.audit_batch import AuditGroupCommit
from integrations.db.columns import table_of
from integrations.db.send_uow import STORE_AUDIT, HeldConnectionUnitOfWork, SendPool
from integrations.db.tables import PatientRow
from integrations.db.uow import emit_audit_log

#: The record's columns, as the table class declares them (and as :class:`Patient` names its fields).
_PATIENT_COLUMNS = tuple(table_of(PatientRow).c.keys())

# The relation is the one SqlRelationshipFacts.patient_relation reads with ``break_glass_at``: care
# team membership, and the latest session (max id) open at $3.
_READ = f"""
    SELECT {", ".join(f"p.{c}" for c in _PATIENT_COLUMNS)},
           EXISTS (SELECT 1 FROM care_teams t JOIN care_team_members tm ON tm.care_team_id = t.id
                   WHERE t.patient_id = p.id AND tm.user_id = $2) AS on_care_team,
           (SELECT max(b.id) FROM break_glass_sessions b
            WHERE b.user_id = $2 AND b.patient_id = p.id
              AND b.opened_at <= $3 AND b.expires_at > $3) AS break_glass_session_id
    FROM patients p
    WHERE p.id = $1
"""  # noqa: S608 - assembled from constants; every value is a bound parameter


def _patient(row: Any) -> Patient:
    values = {c: row[c] for c in _PATIENT_COLUMNS}
    values["risk_level"] = RiskLevel(values["risk_level"])
    return Patient(**values)


class PgPatientReadUnitOfWork(HeldConnectionUnitOfWork):
    """:class:`engine.ports.PatientReadUnitOfWork` on the asyncpg pool the send path uses (its
    first-come, first-served gate included); see the module docstring. ``audit`` stores the read's
    record together with concurrent reads' (group commit, integrations/db/audit_batch.py); without
    one, each read's record is a statement of its own.
    """

    def __init__(self, pool: SendPool, group_commit: AuditGroupCommit | None = None) -> None:
        super().__init__(pool)
        self._group_commit = group_commit or AuditGroupCommit(pool)

    async def read(self, patient_id: int, *, user_id: int, at: datetime) -> PatientRead | None:
        row = await (await self._connect()).fetchrow(_READ, patient_id, user_id, at)
        if row is None:
            return None
        relation = PatientRelation(
            patient_id, row["organization_id"], row["on_care_team"], row["break_glass_session_id"]
        )
        return PatientRead(relation, _patient(row))

    async def commit(self) -> None:
        events = list(self.audit.pending)
        if events:
            # The connection goes with the events: the flush uses it or gives it back at once.
            connection = await self._connect()
            self._connection = None
            await self._group_commit.store(events, connection)
        self._committed = True
        self.audit.pending.clear()
        emit_audit_log(events)


#: The patient read's two statements, for the test that holds their tables and columns to the table
#: classes (tests/unit/test_patient_read_columns.py).
STATEMENTS = (_READ, STORE_AUDIT)
