"""How a caremsg app is served: aiohttp's runner, with a request aiohttp cannot parse answered as
every other error is (problem+json, a request id, the security headers), never by aiohttp's page.

aiohttp refuses a request its parser cannot read (a request line or a header over 8,190 bytes, a
byte no header may hold, Transfer-Encoding beside Content-Length, a broken chunk size, a method or
version that is no HTTP) before any middleware runs. Left to itself it answers a text/plain page
that repeats the offending bytes to the client, with ``Server: Python/3.11 aiohttp/3.14.5``, and
logs at error level a traceback quoting those bytes: a header's value, an access token with a
stray byte, a patient's name in a query, in the operational log. aiohttp has no hook for this
(aio-libs/aiohttp#3287): the answer is made by the connection's protocol,
``RequestHandler.handle_error``. :class:`Runner` is ``web.AppRunner`` serving through
:class:`_Protocol`, which answers ``400 malformed_request`` (naming ``request``, echoing nothing)
and logs ``http.malformed_request`` with the error's class only (and counts it:
``caremsg_http_unparseable_requests_total``). ``caremsg serve`` (one process or
``--workers``, through :func:`serve`) and the schemathesis harness serve through it. This leans on
aiohttp's protocol and server classes (pinned in pyproject.toml); tests/api/test_unparseable_requests.py
fails if an upgrade changes what they do.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import cast

import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from engine.errors import FieldError, MalformedRequest
from handlers.keys import operations_key
from handlers.middleware import REQUEST_ID_HEADER, SECURITY_HEADERS, SERVER_NAME
from handlers.problems import internal_error, problem_for, problem_response, simple_problem
from handlers.telemetry import Metrics

log = structlog.get_logger("caremsg.http")
serve_log = structlog.get_logger("caremsg.serve")  # as handlers/workers.py's parent logs the same events

#: What the client is told, by the kind of refusal; never the bytes refused.
_TOO_LONG = "The request line or a header is longer than the service reads (8,190 bytes)."
_NOT_HTTP = "The request is not well-formed HTTP/1.1 (its request line, a header or the body's framing)."


class _Protocol(RequestHandler):
    """aiohttp's connection protocol, answering what it refuses as caremsg answers every error."""

    _manager: _Server | None  # None once the connection is lost

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's: a response is under way, the connection ends
            raise ConnectionError("Response is sent already, cannot send another response")
        rid = uuid.uuid4().hex
        error = type(exc).__name__ if exc is not None else None
        if status == HTTPStatus.BAD_REQUEST:  # what aiohttp's parser refuses
            log.warning(
                "http.malformed_request", request_id=rid, status=status, error=error, peer=request.remote
            )
            if self._manager is not None:
                self._manager.unparseable()
            detail = _TOO_LONG if isinstance(exc, LineTooLong) else _NOT_HTTP
            problem = problem_for(MalformedRequest([FieldError("request", detail, "http_malformed")]), rid)
        elif status == HTTPStatus.INTERNAL_SERVER_ERROR:  # the handler raised past the middlewares
            log.error("http.unhandled_error", request_id=rid, error=error, exc_info=exc)
            problem = internal_error(rid)
        else:  # 504: the handler timed out (aiohttp's handler timeout; caremsg sets none)
            log.warning("http.request_failed", request_id=rid, status=status, error=error)
            phrase = HTTPStatus(status).phrase
            problem = simple_problem(status, "http_error", phrase, phrase, rid)
        response = problem_response(
            problem, {**SECURITY_HEADERS, "Server": SERVER_NAME, REQUEST_ID_HEADER: rid}
        )
        response.force_close()
        return response


class _Server(web.Server):
    #: The app's metrics, told of each request refused before routing (set by :class:`Runner`).
    metrics: Metrics | None = None

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)

    def unparseable(self) -> None:
        if self.metrics is not None:
            self.metrics.unparseable_request()


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests as problem+json."""

    async def _make_server(self) -> web.Server:
        # BaseRunner's extension point. The app builds its server as aiohttp does (its handler
        # arguments, its loop); only the class that makes each connection's protocol is swapped for
        # ours, which adds behaviour and no state of its own.
        server = cast(_Server, await super()._make_server())
        server.__class__ = _Server
        operations = self.app.get(operations_key)
        server.metrics = operations.metrics if operations is not None else None
        return server


#: How long a stopping service lets requests in flight finish (aiohttp's ``run_app`` default).
SHUTDOWN_TIMEOUT = 60.0


async def serve(
    app: web.Application,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    idle_seconds: float,
    reuse_port: bool = False,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    listening: Callable[[], None] = lambda: None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then stop it gracefully (requests in
    flight finish, then the app's cleanup runs). A connection with no request under way is closed
    after ``idle_seconds`` (``service.idle_connection_seconds``)."""
    runner = Runner(app, access_log=None, shutdown_timeout=shutdown_timeout, keepalive_timeout=idle_seconds)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
        listening()
        await stop.wait()
    finally:
        await runner.cleanup()


async def serve_until_signalled(app: web.Application, host: str, port: int, *, idle_seconds: float) -> None:
    """``caremsg serve`` in one process: SIGINT (Ctrl-C) or SIGTERM stops it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def ready() -> None:  # as the parent of --workers says it
        serve_log.info("serve.ready", host=host, port=port, workers=1)

    await serve(app, host, port, stop, idle_seconds=idle_seconds, listening=ready)
    serve_log.info("serve.stopped", clean=True)
