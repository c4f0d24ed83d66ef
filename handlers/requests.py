"""What every handler uses to read a request and answer it: the services, the request id, a body or
query parsed into a model (every problem a 400/422 naming the field), a path id, a model as JSON; and
:func:`route`, which turns a declared :class:`~handlers.routing.Endpoint` into an aiohttp handler.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from engine.errors import FieldError, InvalidInput, MalformedRequest
from engine.nesting import deeper_than
from engine.services import Services
from handlers.keys import actor_key, clock_key, request_id_key, services_key
from handlers.problems import invalid_input, location
from handlers.proxies import client_address
from handlers.routing import ActorHandler, Endpoint, PublicHandler
from handlers.schemas import NOW

M = TypeVar("M", bound=BaseModel)
_ASCII_ID = re.compile(r"[0-9]{1,10}")


def route(endpoint: Endpoint) -> PublicHandler:
    """The aiohttp handler for ``endpoint``: a public one as it is, any other given the request's actor
    (which the authentication middleware set)."""
    if endpoint.public:
        return endpoint.handler  # type: ignore[return-value]
    handler: ActorHandler = endpoint.handler  # type: ignore[assignment]

    async def with_actor(request: web.Request) -> web.StreamResponse:
        return await handler(request, request[actor_key])

    with_actor.__name__ = endpoint.operation_id
    return with_actor


def services(request: web.Request) -> Services:
    return request.app[services_key]


def request_id(request: web.Request) -> str:
    return request[request_id_key]


def source_address(request: web.Request) -> str | None:
    return client_address(request)


async def parse(request: web.Request, model: type[M]) -> M:
    """Read and validate a JSON body; every problem comes back as a 400/422 naming the field."""
    if request.content_type != "application/json":
        raise MalformedRequest(
            [FieldError("body", "Send JSON with Content-Type: application/json.", "content_type")],
            detail="The request body must be JSON.",
        )
    raw = await request.read()
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest(
            [FieldError("body", "Not valid JSON.", "json_invalid")],
            detail="The request body is not valid JSON.",
        ) from None
    except RecursionError:  # ~1,000 levels: 2 KB of brackets would otherwise be a 500
        document = _TOO_DEEP
    if document is _TOO_DEEP or deeper_than(document, MAX_JSON_DEPTH):
        raise MalformedRequest(
            [FieldError("body", f"Nested deeper than {MAX_JSON_DEPTH} levels.", "json_too_deep")],
            detail="The request body is nested too deeply.",
        )
    surrogate = _lone_surrogate(document)
    if surrogate is not None:
        raise InvalidInput([FieldError(surrogate, "Must be Unicode text.", "string_unicode")])
    try:
        # The app's clock, for what a body is checked against "today" (a date of birth).
        return model.model_validate_json(raw, context={NOW: request.app[clock_key]()})
    except ValidationError as exc:
        raise invalid_input(exc) from None


#: No request schema nests more than a few levels; anything deeper is refused before validation.
MAX_JSON_DEPTH = 16
_TOO_DEEP = object()


#: A UTF-16 surrogate: JSON may escape one alone (``"\ud800"``), which is no character; pydantic's
#: parser refuses it as invalid JSON, without naming where it was.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(document: Any) -> str | None:
    """The field of the first string holding a lone surrogate (a key holding one: its object), or None."""
    pending: list[tuple[tuple[int | str, ...], Any]] = [((), document)]
    while pending:
        path, node = pending.pop()
        if isinstance(node, str) and _SURROGATE.search(node):
            return location(path)
        if isinstance(node, dict):
            if any(_SURROGATE.search(key) for key in node):
                return location(path)
            pending.extend(((*path, key), value) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            pending.extend(((*path, i), value) for i, value in reversed(list(enumerate(node))))
    return None


def query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid_input(exc, whole="query") from None


def record_id(raw: str) -> int | None:
    """``raw`` as a record id, or None: ASCII digits only (str.isdigit() takes "¹", which int()
    then refuses, and U+0661, which int() reads as 1), within the id columns' range. The API's
    path ids and the console's ids and cursors all ask this."""
    if not _ASCII_ID.fullmatch(raw) or not 1 <= int(raw) <= 2**31 - 1:
        return None
    return int(raw)


def path_id(request: web.Request, name: str) -> int:
    found = record_id(request.match_info[name])
    if found is None:
        raise InvalidInput([FieldError(name, "Must be a positive integer id.", "int_parsing")])
    return found


def respond(model: BaseModel | list[Any], status: int = 200) -> web.Response:
    body: Any
    if isinstance(model, BaseModel):
        body = model.model_dump(mode="json", by_alias=True)
    else:
        body = [m.model_dump(mode="json", by_alias=True) for m in model]
    return web.json_response(body, status=status)
