"""Operational logs are safe: a full request cycle with PHI in every payload leaves none of it in
any log line, under the service's own logging configuration (structlog JSON + the standard library)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
import structlog

from handlers.logs import configure_logging
from tests.support.api import PASSWORD, Api
from tests.support.polling import eventually

FIRST, LAST = "Quintessa", "Vandermolen"
PATIENT_FIRST, PATIENT_LAST = "Bartholomew", "Okafor-Lindqvist"
EMAIL = "quintessa.vandermolen@clinic.example"
PHONE = "+12025550199"
EXTERNAL_NAME = "Dr. Philippa Ashgrove"
TITLE = "Bartholomew relapse plan"
MESSAGE = "Sister says Bartholomew stopped taking lithium on Tuesday"
BIRTH = "1987-04-12"
PHI = [
    FIRST,
    LAST,
    PATIENT_FIRST,
    PATIENT_LAST,
    EMAIL,
    PHONE,
    PHONE[2:],
    EXTERNAL_NAME,
    "Ashgrove",
    TITLE,
    MESSAGE,
    "lithium",
    BIRTH,
    PASSWORD,
]


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written (pytest swaps it between test phases)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def service_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """The service's logging configuration (JSON), writing to a captured stderr; put back after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(fmt="json", level="debug", cache_loggers=False)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(_CurrentStderr())  # type: ignore[arg-type]

    def read() -> str:
        captured = capsys.readouterr()
        return captured.out + captured.err

    try:
        yield read
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def _assert_clean(output: str) -> None:
    lowered = output.lower()
    for value in PHI:
        assert value.lower() not in lowered, f"{value!r} leaked into the logs"


async def test_a_full_request_cycle_with_phi_leaves_none_in_any_log_line(
    api: Api, db: asyncpg.Connection, service_logs: Callable[[], str]
) -> None:
    org = await api.organization()
    officer = await api.person("compliance_officer", org)

    status, registered = await api.call(
        "POST",
        "/api/auth/register",
        json={
            "email": EMAIL,
            "password": PASSWORD,
            "firstName": FIRST,
            "lastName": LAST,
            "organizationId": org,
        },
    )
    assert status == 202, registered
    status, session = await api.call("POST", "/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert status == 200, session
    token = {"Authorization": f"Bearer {session['token']}"}
    await api.call(
        "POST",
        "/api/auth/register",
        json={
            "email": EMAIL,
            "password": PASSWORD,
            "firstName": FIRST,
            "lastName": LAST,
            "organizationId": org,
        },
    )
    await api.call("POST", "/api/auth/login", json={"email": EMAIL, "password": "wrong " + PASSWORD})
    await api.call("POST", "/api/auth/login", json={"email": "x" + EMAIL, "password": PASSWORD})
    status, _ = await api.call("POST", "/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert status == 200

    status, patient = await api.call(
        "POST",
        "/api/patients",
        headers=token,
        json={
            "firstName": PATIENT_FIRST,
            "lastName": PATIENT_LAST,
            "riskLevel": "high",
            "dateOfBirth": BIRTH,
        },
    )
    assert status == 201, patient
    await api.consent(officer, patient["id"], externalParty={"phoneNumber": PHONE, "name": EXTERNAL_NAME})
    status, conversation = await api.call(
        "POST",
        "/api/conversations",
        headers=token,
        json={
            "title": TITLE,
            "patientId": patient["id"],
            "externalMembers": [{"phoneNumber": PHONE, "name": EXTERNAL_NAME}],
        },
    )
    assert status == 201, conversation
    status, sent = await api.call(
        "POST",
        "/api/conversations/send-message",
        headers=token,
        json={"conversationId": conversation["id"], "message": MESSAGE},
    )
    assert status == 202, sent
    await api.call("GET", f"/api/conversations/{conversation['id']}", headers=token)
    await api.call("GET", f"/api/patients/{patient['id']}", headers=token)
    await api.call("PUT", f"/api/patients/{patient['id']}", headers=token, json={"lastName": LAST})
    # Bad input that carries PHI: refused without echoing it.
    await api.call(
        "POST", "/api/patients", headers=token, json={"firstName": FIRST, "lastName": 7, "riskLevel": "x"}
    )
    await api.call(
        "POST",
        "/api/consents",
        officer,
        json={
            "patientId": patient["id"],
            "purpose": "treatment",
            "externalParty": {"phoneNumber": "+999" + PHONE[2:]},
        },
    )
    await _delivered(db, sent["id"])

    output = service_logs()

    assert '"event": "http.request"' in output
    assert '"audit_event": "decision"' in output
    assert output.count("\n") > 20
    _assert_clean(output)


async def _delivered(db: asyncpg.Connection, message_id: int) -> None:
    """Let the relay deliver the message (its log lines are part of the cycle)."""

    async def left_the_queue() -> bool:
        return bool(await db.fetchval("SELECT state FROM messages WHERE id = $1", message_id) != "queued")

    await eventually(left_the_queue, "the message to be delivered")


def test_phi_in_a_structlog_line_is_stripped_even_when_a_developer_logs_it_by_mistake(
    service_logs: Callable[[], str],
) -> None:
    log: Any = structlog.get_logger("caremsg.test")
    log.info(
        "oops",
        name=EXTERNAL_NAME,
        note=f"call {PHONE} or {EMAIL}",
        nested={"message": MESSAGE},
        rows=[{"first_name": FIRST}],
    )
    try:
        raise ValueError(f"could not text {PHONE} for {EMAIL}")
    except ValueError:
        log.exception("oops.failed")

    output = service_logs()

    assert "oops.failed" in output
    assert "[number]" in output
    _assert_clean(output)


def test_phi_in_a_standard_library_traceback_is_stripped(service_logs: Callable[[], str]) -> None:
    try:
        raise RuntimeError(
            "duplicate key\nDETAIL:  Key (last_name)=(Vandermolen) already exists.\n"
            f"[parameters: ('{FIRST}', '{LAST}', '{EMAIL}')]"
        )
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Error handling request for %s", EMAIL)

    output = service_logs()

    assert "Error handling request" in output
    assert "[parameters: redacted]" in output
    _assert_clean(output)
