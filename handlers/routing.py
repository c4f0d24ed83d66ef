"""Declared endpoints: one table drives both the aiohttp router and the OpenAPI document, so the two
cannot disagree. What a handler uses to read a request and answer it is in ``handlers/requests.py``.

What the code around a handler adds to its responses is declared as data next to that code: a
middleware carries a :class:`Contract` (:func:`declares`), and so does a helper an endpoint opts into
(``Endpoint.contracts``). The OpenAPI document composes them, so a new status or header that is
declared where it is produced cannot be left out of the document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from engine.model import Actor

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
