"""Every log line is one JSON object in production, other libraries' lines included; IP addresses
are logged as addresses; the emulator's token is shown at development start-up only."""

from __future__ import annotations

import json
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from handlers.app import create_app
from handlers.keys import emulator_key
from handlers.logs import configure_logging, scrub_text
from handlers.settings import Settings
from integrations.db.resources import create_engine
from integrations.policy_files import load_policy


class _CurrentStderr:
    """Writes to whatever sys.stderr is now (capsys swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """The production logging configuration (JSON) on a captured stderr; put back afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(fmt="json", level="info", cache_loggers=False)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(_CurrentStderr())  # type: ignore[arg-type]

    def lines() -> list[str]:
        captured = capsys.readouterr()
        return [line for line in (captured.out + captured.err).splitlines() if line.strip()]

    try:
        yield lines
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)


@pytest.mark.parametrize(
    "library",
    ["alembic.runtime.migration", "asyncpg.pool", "aiohttp.server", "aiohttp.web", "py.warnings"],
)
def test_another_librarys_log_line_is_json_with_level_logger_and_time(
    json_logs: Callable[[], list[str]], library: str
) -> None:
    logging.getLogger(library).warning("Running upgrade %s -> %s", "0007", "0008")

    (line,) = json_logs()
    record = json.loads(line)

    assert record["event"] == "Running upgrade 0007 -> 0008"
    assert record["logger"] == library
    assert record["level"] == "warning"
    assert record["timestamp"].endswith("Z")


def test_a_librarys_traceback_is_json_and_scrubbed(json_logs: Callable[[], list[str]]) -> None:
    try:
        raise RuntimeError("could not text +12025550143 for someone@example.org")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "203.0.113.7")

    (line,) = json_logs()
    record = json.loads(line)

    assert record["event"] == "Error handling request from 203.0.113.7"
    assert "RuntimeError" in record["exception"]
    assert "+12025550143" not in line
    assert "someone@example.org" not in line


def test_loading_the_policy_through_pycasbin_prints_nothing_but_json(
    json_logs: Callable[[], list[str]], settings: Settings
) -> None:
    load_policy(settings.policy.path())
    logging.getLogger("casbin").warning("a pycasbin line")  # pycasbin disables its loggers, or is JSON

    for line in json_logs():
        assert isinstance(json.loads(line), dict), line


def test_a_python_warning_is_a_json_line(json_logs: Callable[[], list[str]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)

    (line,) = json_logs()

    assert json.loads(line)["logger"] == "py.warnings"


def test_caremsg_lines_are_still_json_with_their_fields(json_logs: Callable[[], list[str]]) -> None:
    structlog.get_logger("caremsg.test").info("http.request", route="/api/patients/{id}", status=200)

    (line,) = json_logs()
    record = json.loads(line)

    assert (record["event"], record["route"], record["status"]) == ("http.request", "/api/patients/{id}", 200)
    assert record["logger"] == "caremsg.test"


def test_times_in_a_line_are_iso_8601(json_logs: Callable[[], list[str]]) -> None:
    at = datetime(2026, 12, 5, 18, 24, 44, 269700, tzinfo=UTC)

    structlog.get_logger("caremsg.test").error("audit", occurred_at=at, day=at.date())

    record = json.loads(json_logs()[0])
    assert record["occurred_at"] == "2026-12-05T18:24:44.269700+00:00"
    assert record["day"] == "2026-12-05"


@pytest.mark.parametrize("address", ["127.0.0.1", "203.0.113.7", "10.20.30.40", "2001:db8::1"])
def test_ip_addresses_are_logged_as_addresses(json_logs: Callable[[], list[str]], address: str) -> None:
    structlog.get_logger("caremsg.test").info("auth.refused", peer=address, note=f"from {address}")

    record = json.loads(json_logs()[0])

    assert record["peer"] == address
    assert record["note"] == f"from {address}"


def test_a_policy_version_with_a_long_run_of_digits_is_logged_whole(
    json_logs: Callable[[], list[str]],
) -> None:
    structlog.get_logger("caremsg.test").info(
        "policy.reloaded", version="5071610687203b3e", previous_version="1234567890abcdef"
    )

    record = json.loads(json_logs()[0])

    assert (record["version"], record["previous_version"]) == ("5071610687203b3e", "1234567890abcdef")


async def test_a_request_line_too_long_to_read_is_logged_without_its_query(
    json_logs: Callable[[], list[str]], settings: Settings
) -> None:
    """aiohttp refuses a request line over 8,190 bytes before caremsg sees it, and logs the start of
    it: a query such as ``?email=ann%40example.org`` (percent-encoded: no email pattern sees it).
    aiohttp's own TestServer on purpose: ``caremsg serve`` answers and logs such a request itself
    (handlers/serving.py), so only an app served otherwise still reaches aiohttp's log of it."""
    async with TestClient(TestServer(create_app(settings))) as client:
        resp = await client.get("/api/audit-events", params={"email": "ann@example.org", "x": "y" * 9000})
        assert resp.status == 400

    refused = [json.loads(line) for line in json_logs() if "Error handling request" in line]
    assert refused, "aiohttp logged no refusal"
    assert all("ann%40example.org" not in line and "ann@example.org" not in line for line in json_logs())
    assert "/api/audit-events?[query]" in refused[0]["exception"]


def test_a_query_in_free_text_is_masked_and_its_path_kept() -> None:
    assert scrub_text("b'/api/users?email=ann%40example.org&x=1'") == "b'/api/users?[query]'"
    assert scrub_text("GET /api/patients/7 took 3 ms") == "GET /api/patients/7 took 3 ms"


#: What a patient's message may hold, brackets and line breaks included.
HOSTILE_TEXT = "Ann Lee ]\n(HIV+) call her)\n\nat home"


def test_a_database_errors_values_are_masked_whatever_they_hold() -> None:
    """Each value is masked up to the next part of SQLAlchemy's message or of the traceback: a
    bracket or a line break in a message used to end the mask early and leave the rest in the log."""
    error = (
        '(IntegrityError) null value in column "b"\n'
        f"DETAIL:  Failing row contains (7, {HOSTILE_TEXT}).\n"
        "[SQL: INSERT INTO messages VALUES ($1, $2)]\n"
        f"[parameters: (7, '{HOSTILE_TEXT}')]\n"
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )
    argument = (
        f"asyncpg.exceptions.DataError: invalid input for query argument $1: '{HOSTILE_TEXT}' (expected int)"
        "\n\nThe above exception was the direct cause of the following exception:\n\nTraceback"
    )
    duplicate = "DETAIL:  Key (email)=(ann@example.org) already exists.\n[SQL: INSERT ...]"

    scrubbed = [scrub_text(error), scrub_text(argument), scrub_text(duplicate)]

    assert all("Ann" not in text and "HIV" not in text and "home" not in text for text in scrubbed)
    assert scrubbed[0] == (
        '(IntegrityError) null value in column "b"\nDETAIL:  [redacted]\n'
        "[SQL: INSERT INTO messages VALUES ($1, $2)]\n[parameters: redacted]\n"
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )
    assert scrubbed[1].startswith(
        "asyncpg.exceptions.DataError: invalid input for query argument $1: [redacted]"
    )
    assert scrubbed[1].endswith(
        "The above exception was the direct cause of the following exception:\n\nTraceback"
    )
    assert scrubbed[2] == "DETAIL:  Key (email)=[redacted]\n[SQL: INSERT ...]"


async def test_the_engine_keeps_a_statements_values_out_of_its_errors(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, statement_timeout_ms=5000)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(
                    text("SELECT CAST(:value AS int) + :n"), {"value": "x", "n": HOSTILE_TEXT}
                )
    finally:
        await engine.dispose()

    assert "HIV" not in str(raised.value)
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(raised.value)
    assert "HIV" not in scrub_text("".join(traceback.format_exception(raised.value)))


def test_phone_numbers_are_still_masked_next_to_addresses() -> None:
    assert scrub_text("from 127.0.0.1 call +1 (202) 555-0143") == "from 127.0.0.1 call [number]"
    assert scrub_text("call 202.555.0143") == "call [number]"


# --- the emulator's credentials ----------------------------------------------------------------------


async def test_development_start_up_shows_the_emulators_token(
    aiohttp_client: Any, settings: Settings
) -> None:
    assert settings.service.environment == "development"
    with capture_logs() as logs:
        client = await aiohttp_client(create_app(settings))

    (shown,) = [line for line in logs if line["event"] == "sendbird.emulator_credentials"]
    emulator = client.server.app[emulator_key]
    assert shown["emulator_api_token"] == emulator.state.api_token
    assert shown["base_url"] == emulator.base_url


async def test_outside_development_the_token_is_never_logged(aiohttp_client: Any, settings: Settings) -> None:
    service = settings.service.model_copy(update={"environment": "test"})
    with capture_logs() as logs:
        client = await aiohttp_client(create_app(settings.model_copy(update={"service": service})))

    token = client.server.app[emulator_key].state.api_token
    assert not [line for line in logs if line["event"] == "sendbird.emulator_credentials"]
    assert token not in json.dumps(logs, default=str)
