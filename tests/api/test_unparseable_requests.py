"""A request aiohttp cannot parse is answered as every other error (problem+json naming ``request``,
a request id, the security headers) and echoes nothing it was sent, to the client or to the log.

These go over a raw socket to the app served as ``caremsg serve`` serves it (handlers.serving, through
tests.support.api.ServedTestServer):
aiohttp's parser refuses them before any middleware runs, so no test client could send them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from structlog.testing import capture_logs

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import ServedTestServer

#: Stands for what a refused request may carry (a patient's name, an access token): never repeated.
MARK = b"Jane-Roe-7431"


def request(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    return b"\r\n".join((line, b"Host: x", *headers)) + b"\r\n\r\n" + body


CASES = {
    "a request line over 8,190 bytes": request(b"GET /api/patients?q=" + MARK + b"A" * 9000 + b" HTTP/1.1"),
    "a header over 8,190 bytes": request(b"GET /api/patients HTTP/1.1", b"X-Note: " + MARK + b"B" * 9000),
    "a token with a byte no header may hold": request(
        b"GET /api/patients HTTP/1.1", b"Authorization: Bearer " + MARK + b"\x01"
    ),
    "Transfer-Encoding beside Content-Length": request(
        b"POST /api/auth/login HTTP/1.1",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        b"X-Note: " + MARK,
        body=b"0\r\n\r\n",
    ),
    "a chunk size that is no number": request(
        b"POST /api/auth/login HTTP/1.1",
        b"Transfer-Encoding: chunked",
        b"Content-Type: application/json",
        body=MARK + b"\r\nhello\r\n0\r\n\r\n",
    ),
    "a method that is no method": request(b"G(T /api/patients/" + MARK + b" HTTP/1.1"),
    "an HTTP version that does not exist": request(b"GET /api/patients/" + MARK + b" HTTP/9.9"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def port(settings: Settings) -> AsyncIterator[int]:
    """The whole app, served through handlers.serving's runner on a free loopback port."""
    async with ServedTestServer(create_app(settings)) as server:
        yield server.port


async def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection; everything answered until the service closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def parsed(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status_line, headers, body


@pytest.mark.parametrize("raw", CASES.values(), ids=CASES.keys())
async def test_an_unparseable_request_gets_a_problem_that_echoes_nothing(
    port: int, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with capture_logs() as events, caplog.at_level(logging.DEBUG):
        answer = await exchange(port, raw)

    status_line, headers, body = parsed(answer)
    assert status_line.split(" ", 2)[1] == "400", status_line
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["server"] == "caremsg"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    problem = json.loads(body)
    assert problem["code"] == "malformed_request"
    assert problem["requestId"] == headers["x-request-id"]
    assert [e["field"] for e in problem["errors"]] == ["request"]
    assert MARK not in answer

    (logged,) = [e for e in events if e["event"] == "http.malformed_request"]
    assert logged["request_id"] == problem["requestId"]
    assert logged["error"]  # the parser's error class, e.g. LineTooLong or BadHttpMessage
    assert MARK.decode() not in repr(events) + caplog.text
    # Not at error level by aiohttp's server nor by caremsg's serving edge (the app's relay may log
    # about other modules' entries meanwhile: the outbox is the worker's database's).
    serving = ("aiohttp", "caremsg.http", "caremsg.serve")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(serving)]


async def test_a_line_too_long_is_named_as_such(port: int) -> None:
    _, _, body = parsed(await exchange(port, CASES["a request line over 8,190 bytes"]))
    assert "8,190 bytes" in json.loads(body)["errors"][0]["message"]


async def test_the_service_answers_the_next_connection_as_before(port: int) -> None:
    await exchange(port, CASES["a token with a byte no header may hold"])
    health = request(b"GET /health HTTP/1.1", b"Connection: close")
    status_line, headers, _ = parsed(await exchange(port, health))
    assert status_line.split(" ", 2)[1] == "200", status_line
    assert headers["server"] == "caremsg"


async def test_an_error_past_every_middleware_is_a_problem_without_its_traceback() -> None:
    """caremsg's middleware answers every error a handler raises; should anything ever get past it,
    the connection's last resort answers as caremsg does, not with aiohttp's page."""

    async def broken(_: web.Request) -> web.Response:
        raise RuntimeError(MARK.decode())

    app = web.Application()
    app.router.add_get("/broken", broken)
    async with ServedTestServer(app) as server:
        with capture_logs() as events:
            answer = await exchange(server.port, request(b"GET /broken HTTP/1.1"))

    status_line, headers, body = parsed(answer)
    assert status_line.split(" ", 2)[1] == "500", status_line
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["code"] == "internal_error"
    assert MARK not in answer
    (logged,) = [e for e in events if e["event"] == "http.unhandled_error"]
    assert logged["error"] == "RuntimeError"


async def test_each_refusal_is_counted_for_the_operators(port: int) -> None:
    async def counted() -> float:
        _, _, body = parsed(await exchange(port, request(b"GET /metrics HTTP/1.1", b"Connection: close")))
        (line,) = [
            x for x in body.decode().splitlines() if x.startswith("caremsg_http_unparseable_requests_total")
        ]
        return float(line.split()[-1])

    before = await counted()
    for raw in CASES.values():
        await exchange(port, raw)
    assert await counted() == before + len(CASES)
