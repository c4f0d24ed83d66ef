"""Every error leaves as RFC 9457 problem+json with a stable ``code`` and the request id.

Messages are generic: no stack traces, no PHI, no echo of submitted values. Anything unexpected is
a 500 whose traceback goes to the operational log only.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from engine.errors import (
    CaremsgError,
    Conflict,
    ContentDeleted,
    FieldError,
    FileTooLarge,
    FileTypeRefused,
    Forbidden,
    IdempotencyMismatch,
    InvalidInput,
    MalformedRequest,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthenticated,
)
from handlers.schemas import FieldProblem, Problem

PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[CaremsgError], int, str]] = [
    (MalformedRequest, 400, "Malformed request"),
    (FileTooLarge, 413, "Payload too large"),
    (FileTypeRefused, 415, "Unsupported media type"),
    (InvalidInput, 422, "Invalid request"),
    (Unauthenticated, 401, "Authentication required"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not found"),
    (ContentDeleted, 409, "Content already deleted"),
    (Conflict, 409, "Conflict"),
    (IdempotencyMismatch, 422, "Idempotency key reused"),
    (TooManyRequests, 429, "Too many requests"),
    (ServiceUnavailable, 503, "Service unavailable"),
]


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        problem.model_dump(mode="json", by_alias=True, exclude_none=True),
        status=problem.status,
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def _status_and_title(error: CaremsgError) -> tuple[int, str]:
    return next(((s, t) for cls, s, t in _STATUS if isinstance(error, cls)), (500, "Internal error"))


def status_of(error: CaremsgError) -> int:
    """The HTTP status ``error`` is answered with."""
    return _status_and_title(error)[0]


def problem_for(error: CaremsgError, request_id: str) -> Problem:
    status, title = _status_and_title(error)
    fields: dict[str, Any] = {}
    if isinstance(error, InvalidInput):
        fields["errors"] = [FieldProblem(field=e.field, message=e.message, type=e.type) for e in error.errors]
    if isinstance(error, Forbidden):
        d = error.decision
        fields.update(
            reason=d.reason,
            hint=d.hint,
            rule=d.rule,
            policy_version=d.policy_version or None,
            field=error.field,
        )
    if isinstance(error, Conflict) and error.field is not None:
        fields["field"] = error.field
    return Problem(
        title=title,
        status=status,
        detail=error.detail or None,
        code=error.code,
        request_id=request_id,
        **fields,
    )


def simple_problem(status: int, code: str, title: str, detail: str, request_id: str) -> Problem:
    return Problem(title=title, status=status, detail=detail, code=code, request_id=request_id)


def internal_error(request_id: str) -> Problem:
    """The 500 for anything unexpected: nothing about it but the request id (its traceback goes to
    the operational log only)."""
    return simple_problem(
        500, "internal_error", "Internal error", "Something went wrong on our side.", request_id
    )


#: A name a schema could give a field. Anything else in a location is a key the client chose (an
#: unknown property, query parameter or form part), which may hold anything: it is not repeated.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def location(loc: tuple[int | str, ...], whole: str = "body") -> str:
    """A field's name as the errors give it: ``externalMembers[0].phoneNumber``; ``whole`` for the
    whole. A key that is not a plain name is not echoed: the object holding it is named instead."""
    out = ""
    for part in loc:
        if isinstance(part, str) and not _NAME.fullmatch(part):
            break
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or whole


def invalid_input(exc: ValidationError, prefix: str = "", whole: str = "body") -> InvalidInput:
    """Pydantic errors as field errors; the submitted values are never echoed (they may be PHI)."""
    errors = []
    for e in exc.errors(include_input=False, include_url=False):
        message = str(e["msg"]).removeprefix("Value error, ")
        loc = tuple(e["loc"])
        if e["type"] == "missing":
            message = "Field required."
        errors.append(
            FieldError(location(((prefix,) if prefix else ()) + loc, whole), message, str(e["type"]))
        )
    return InvalidInput(errors)
