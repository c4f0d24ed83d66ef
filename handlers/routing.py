"""Declared endpoints: one table drives both the aiohttp router and the OpenAPI document, so the two
cannot disagree. Also the small helpers every handler uses (parse a body, answer with a model).

What the code around a handler adds to its responses is declared as data next to that code: a
middleware carries a :class:`Contract` (:func:`declares`), and so does a helper an endpoint opts into
(``Endpoint.contracts``). The OpenAPI document composes them, so a new status or header that is
declared where it is produced cannot be left out of the document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from engine.errors import FieldError, InvalidInput, MalformedRequest
from engine.model import Actor
from engine.services import Services
from handlers.keys import actor_key, request_id_key, services_key
from handlers.problems import invalid_input

M = TypeVar("M", bound=BaseModel)
_ASCII_ID = re.compile(r"[0-9]{1,10}")

PublicHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ActorHandler = Callable[[web.Request, Actor], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Header:
    """One HTTP header a request may carry or a response may bear, as the document declares it."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Status:
    """One error status an operation can answer with (always problem+json), and its headers."""

    status: int
    description: str
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True)
class Contract:
    """What a middleware or helper adds to the operations it applies to.

    ``applies`` picks the operations (by default every one); ``request_headers`` are the headers it
    reads, ``response_headers`` the ones it puts on every response, ``success_headers`` the ones it
    may put on a success, and ``statuses`` the errors it may answer with.
    """

    name: str
    applies: Callable[[Endpoint], bool] = lambda endpoint: True
    request_headers: tuple[Header, ...] = ()
    response_headers: tuple[Header, ...] = ()
    success_headers: tuple[Header, ...] = ()
    statuses: tuple[Status, ...] = ()


_CONTRACT_ATTRIBUTE = "__caremsg_contract__"
F = TypeVar("F", bound=Callable[..., Any])


def declares(*contracts: Contract) -> Callable[[F], F]:
    """Attach ``contracts`` to a middleware: the OpenAPI document reads them from the app's list."""

    def attach(middleware: F) -> F:
        setattr(middleware, _CONTRACT_ATTRIBUTE, contracts)
        return middleware

    return attach


def contracts_of(middleware: object) -> tuple[Contract, ...] | None:
    """The contracts a middleware declares, or None if it declares none (a test refuses that)."""
    found = getattr(middleware, _CONTRACT_ATTRIBUTE, None)
    return found if isinstance(found, tuple) else None


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: PublicHandler | ActorHandler
    operation_id: str
    summary: str
    tag: str
    request: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    public: bool = False
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404, 422))
    description: str = ""
    #: Helpers this endpoint uses that add statuses or headers (e.g. ``Idempotency-Key`` handling).
    contracts: tuple[Contract, ...] = ()
    #: How it is authenticated when not by bearer token: a security scheme of the document.
    security: str | None = None
    #: The media type of the success body (JSON unless said otherwise).
    media_type: str = "application/json"
    #: For a webhook receiver: the named events it is sent (the body is one of them), listed in the
    #: document's ``webhooks``. Read as raw bytes by the handler, not through ``request``.
    events: tuple[tuple[str, type[BaseModel]], ...] = ()
    #: The media type of the request body (JSON unless said otherwise, e.g. a form-encoded webhook).
    request_media_type: str = "application/json"
    #: Errors answered with a body of their own instead of problem+json (status, model): a
    #: readiness probe's 503 reports each check.
    error_bodies: tuple[tuple[int, Any], ...] = ()

    @property
    def reads_body(self) -> bool:
        return self.request is not None or bool(self.events)

    def aiohttp_handler(self) -> PublicHandler:
        if self.public:
            return self.handler  # type: ignore[return-value]
        handler: ActorHandler = self.handler  # type: ignore[assignment]

        async def with_actor(request: web.Request) -> web.StreamResponse:
            return await handler(request, request[actor_key])

        with_actor.__name__ = self.operation_id
        return with_actor


def services(request: web.Request) -> Services:
    return request.app[services_key]


def request_id(request: web.Request) -> str:
    return request[request_id_key]


def source_address(request: web.Request) -> str | None:
    return request.remote


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
    if document is _TOO_DEEP or _deeper_than(document, MAX_JSON_DEPTH):
        raise MalformedRequest(
            [FieldError("body", f"Nested deeper than {MAX_JSON_DEPTH} levels.", "json_too_deep")],
            detail="The request body is nested too deeply.",
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_input(exc) from None


#: No request schema nests more than a few levels; anything deeper is refused before validation.
MAX_JSON_DEPTH = 16
_TOO_DEEP = object()


def _deeper_than(document: Any, limit: int) -> bool:
    """True if arrays and objects nest more than ``limit`` levels (iterative: no recursion to exhaust)."""
    level: list[Any] = [document]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, (dict, list))
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return any(isinstance(node, (dict, list)) for node in level)


def query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid_input(exc) from None


def path_id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    # ASCII digits only: str.isdigit() takes "¹" (int() then fails) and U+0661 (which int() reads as 1).
    if not _ASCII_ID.fullmatch(raw) or not 1 <= int(raw) <= 2**31 - 1:
        raise InvalidInput([FieldError(name, "Must be a positive integer id.", "int_parsing")])
    return int(raw)


def respond(model: BaseModel | list[Any], status: int = 200) -> web.Response:
    body: Any
    if isinstance(model, BaseModel):
        body = model.model_dump(mode="json", by_alias=True)
    else:
        body = [m.model_dump(mode="json", by_alias=True) for m in model]
    return web.json_response(body, status=status)
