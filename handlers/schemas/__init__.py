"""Request and response schemas of the public API: camelCase JSON, strict types, bounded sizes.

Requests forbid unknown fields and are validated in strict mode (``"1"`` is not an integer), so a
client mistake comes back as a 422 naming the field instead of being guessed at. Responses are
built from engine types, never from table rows.

This module holds what every schema shares (the base classes, the checked field types, pages and the
problem+json body); each capability's schemas are a module of this package: ``identity``
(accounts, organizations, compliance groups), ``consents``, ``patients`` (and care teams),
``conversations`` (and messages).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, TypeVar

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from engine.model import latest_today
from engine.sms import textable
from handlers.field_docs import describe_fields

# C0 and C1 control characters other than tab, line feed and carriage return. PostgreSQL refuses NUL
# in text, and none of the others belongs in anything a person typed: every request string refuses them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Names and titles refuse line breaks and tabs too, the bidirectional controls (U+202E makes a name
# read backwards in an audit listing) and the zero-width characters (two names that look the same).
_INVISIBLE = re.compile(r"[\t\n\r\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def has_control_characters(value: object) -> bool:
    """Whether a string (or any string in a list or mapping, keys included) holds NUL or another C0
    or C1 control character other than tab, line feed and carriage return."""
    if isinstance(value, str):
        return _CONTROL.search(value) is not None
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(has_control_characters(v) for v in value)
    if isinstance(value, dict):
        return any(has_control_characters(k) or has_control_characters(v) for k, v in value.items())
    return False


def visible_line(value: str) -> str:
    if _INVISIBLE.search(value):
        raise PydanticCustomError(
            "invisible_character",
            "must not contain line breaks, tabs, bidirectional or zero-width characters",
        )
    return value


Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(visible_line)
]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(visible_line)
]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
#: The id of an audit record (a bigint column: the trail outgrows 2**31 - 1 rows in a large
#: deployment's years), and so the audit listings' cursors.
AuditId = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _rfc3339_text(value: object) -> object:
    """A query string's time must be written as one (``2026-12-06T08:00:00+01:00``): lax parsing
    would otherwise read ``0.5`` as half a second after 1970."""
    if isinstance(value, str) and not ("-" in value and ":" in value):
        raise PydanticCustomError("datetime_format", "must be an RFC 3339 date and time with an offset")
    return value


def within_clinical_years(value: datetime) -> datetime:
    """Within years a clinic's records can mean, for every date and time caremsg takes (the API's
    and the console's). Python's datetime ends at years 1 and 9999, so an offset
    (``0001-01-01T00:00+05:00``, ``9999-12-31T23:59-05:00``) or a period the engine counts back or
    forward from a time (six years of disclosures, a week of shifts) would carry a time out of
    range, a 500 instead of an answer."""
    if not 1900 <= value.year <= 2999:
        raise ValueError("must be a date and time between 1900-01-01 and 2999-12-31")
    return value


#: A date and time the API takes: RFC 3339 with an offset, written between 1900 and 2999.
Instant = Annotated[AwareDatetime, AfterValidator(within_clinical_years)]
#: A time in a query string: RFC 3339 text with an offset, never a bare number.
QueryTime = Annotated[Instant, BeforeValidator(_rfc3339_text)]
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address")
    return value.lower()


def _e164(value: str) -> str:
    """E.164 form of a number that can exist: the same libphonenumber check (``engine.sms.textable``)
    that decides whether a text is sent, so a number the API takes is never refused later as
    ``invalid_number`` (``+1234567890`` has a country code but no valid number of its plan)."""
    if not re.fullmatch(r"\+[1-9][0-9]{7,14}", value):
        raise ValueError("must be an E.164 phone number such as +12025550143")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("must be an E.164 phone number such as +12025550143") from None
    if phonenumbers.region_code_for_country_code(number.country_code or 0) == phonenumbers.UNKNOWN_REGION:
        raise ValueError("has no known country calling code")
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not textable(formatted):
        raise ValueError("is not a valid number of its country's numbering plan")
    return formatted


#: The validation context's key for the app's clock reading (handlers.requests.parse passes it).
NOW = "now"


def _birth_date(value: date, info: ValidationInfo) -> date:
    # "Today" where the patient was born: at most a day ahead of the UTC date (engine.model), by
    # the app's clock when the request's parse passes it.
    now = (info.context or {}).get(NOW) or datetime.now(UTC)
    if not date(1900, 1, 1) <= value <= latest_today(now):
        raise ValueError("must be a date between 1900-01-01 and today")
    return value


BirthDate = Annotated[date, AfterValidator(_birth_date)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    AfterValidator(visible_line),
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
PhoneNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=20),
    AfterValidator(_e164),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\+[1-9]\d{7,14}$", "maxLength": 20, "examples": ["+12025550143"]}
    ),
]


class Request(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra=describe_fields,
    )

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """Every string of every request (query strings too) refuses NUL and the other control
        characters, with a 422 naming the field, before anything is stored or looked up."""
        if has_control_characters(value):
            raise PydanticCustomError("control_character", "must not contain control characters such as NUL")
        return value


class Response(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, json_schema_extra=describe_fields
    )


T = TypeVar("T")


class PageOf(Response, Generic[T]):
    items: list[T]
    next_cursor: int | None = Field(
        description="Pass as ?cursor= to get the next page; null on the last page."
    )


class ListQuery(Request):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=False, frozen=True)
    cursor: Id | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] | None = None


# --- errors --------------------------------------------------------------------------------------


class FieldProblem(Response):
    field: str
    message: str
    type: str


class Problem(Response):
    """RFC 9457 problem details, with caremsg's stable ``code`` and the request id."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str
    request_id: str
    errors: list[FieldProblem] | None = None
    reason: str | None = Field(None, description="For 403: the policy's reason code.")
    hint: str | None = Field(None, description="For 403: what role, relationship or consent is missing.")
    field: str | None = Field(
        None, description="For 403: the member or field the denial is about; for 409: the field in conflict."
    )
    rule: str | None = Field(None, description="For 403: the policy rule that came closest.")
    policy_version: str | None = None
