"""``caremsg serve`` as an operator runs it: a real process on a real port, a real PostgreSQL.

Each test starts the command in a process group of its own, reads its JSON log lines, talks HTTP
to it over fresh connections and stops it.

The served processes get a database of their own: what they store (webhook events keyed by the
emulator's message ids, which every new emulator counts from 1 again) stays out of the database
the in-process tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from handlers.settings import PROJECT_ROOT
from integrations.db.migrate import upgrade
from tests.api.messaging_support import eventually
from tests.conftest import _admin

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
START_WITHIN = 20.0  # seconds: an interpreter importing everything on a busy machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    """A running ``caremsg serve``: its process, port and every JSON log line it wrote so far."""

    process: asyncio.subprocess.Process
    port: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line.get("event") == name and all(line.get(k) == v for k, v in match.items())
        ]

    async def wait_for(
        self, name: str, count: int = 1, within: float = 10.0, **match: Any
    ) -> list[dict[str, Any]]:
        """The first ``count`` log lines of event ``name`` (with these fields), waiting for them."""

        async def probe() -> list[dict[str, Any]] | None:
            found = self.events(name, **match)
            if len(found) >= count:
                return found[:count]
            if self.process.returncode is not None:
                raise AssertionError(f"caremsg serve exited ({self.process.returncode}) before {name}")
            return None

        return await eventually(probe, f"{count} x {name} {match or ''}", within=within)

    async def stopped(self, within: float = 20.0) -> int:
        async with asyncio.timeout(within):
            return await self.process.wait()


def _environment(database_url: str, **extra: str) -> dict[str, str]:
    """The test's environment without any caremsg setting of its own (a CAREMSG_SERVICE_PORT would
    hide the --port bug), plus fast settings for a test: cheap hashing, quick polling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREMSG_") and k != "DATABASE_URL"}
    env.update(
        CAREMSG_DATABASE_URL=database_url,
        CAREMSG_DATABASE_POOL_SIZE="4",
        CAREMSG_DATABASE_MAX_OVERFLOW="4",
        CAREMSG_SERVICE_ENVIRONMENT="development",
        CAREMSG_SERVICE_LOG_FORMAT="json",
        CAREMSG_AUTH_ARGON2_TIME_COST="1",
        CAREMSG_AUTH_ARGON2_MEMORY_KIB="64",
        CAREMSG_AUTH_ACCOUNT_RECHECK_SECONDS="0",
        CAREMSG_SENDBIRD_WRITE_PER_SECOND="1000",
        CAREMSG_SENDBIRD_GET_PER_SECOND="1000",
        CAREMSG_OUTBOX_POLL_INTERVAL_SECONDS="0.05",
        CAREMSG_OUTBOX_BASE_BACKOFF_SECONDS="0.05",
        CAREMSG_OUTBOX_MAX_BACKOFF_SECONDS="0.5",
        CAREMSG_MESSAGING_WEBHOOK_POLL_INTERVAL_SECONDS="0.05",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def served_database_url(server_url: str) -> Iterator[str]:
    """A fresh database, migrated, for this module's served processes; dropped afterwards."""
    name = f"caremsg_serve_{secrets.token_hex(4)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def serve(served_database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Start ``caremsg serve ARGS`` on a free port; whatever is still running at the end is stopped."""
    started: list[Served] = []
    readers: list[asyncio.Task[None]] = []

    async def start(*args: str, **env: str) -> Served:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "handlers.cli",
            "serve",
            "--port",
            str(port),
            *args,
            cwd=PROJECT_ROOT,
            env=_environment(served_database_url, **env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown can end all of it
        )
        served = Served(process, port)
        started.append(served)
        readers.append(asyncio.create_task(_read_log(served)))
        return served

    yield start

    for served in started:
        if served.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                served.process.send_signal(signal.SIGTERM)
            try:
                await served.stopped()
            except TimeoutError:
                os.killpg(served.process.pid, signal.SIGKILL)
                await served.process.wait()
    for reader in readers:
        await reader
    for served in started:
        # Shown by pytest only when the test failed: what the service said.
        sys.stderr.write(f"--- caremsg serve on port {served.port}:\n" + "\n".join(served.raw) + "\n")


async def _read_log(served: Served) -> None:
    assert served.process.stdout is not None
    async for raw in served.process.stdout:
        text = raw.decode(errors="replace").rstrip("\n")
        served.raw.append(text)
        with contextlib.suppress(ValueError):
            line = json.loads(text)
            if isinstance(line, dict):
                served.lines.append(line)


class Http:
    """JSON over a new connection per request."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        request_id: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"X-Request-ID": request_id or f"test-{uuid.uuid4().hex}"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, json=json, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def register(self, role: str) -> tuple[int, str]:
        body = {
            "email": f"{role}.{secrets.token_hex(4)}@example.org",
            "password": PASSWORD,
            "firstName": "Test",
            "lastName": "Person",
            "role": role,
        }
        status, created = await self.call("POST", "/api/auth/register", json=body)
        assert status == 201, created
        return int(created["user"]["id"]), str(created["token"])


@pytest.fixture
async def http() -> AsyncIterator[Callable[[Served], Http]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield lambda served: Http(session, served.url)


@dataclass
class Conversation:
    id: int
    peer_token: str


async def conversation(api: Http) -> Conversation:
    """A peer's patient and a ready conversation with a nurse."""
    _, peer = await api.register("peer_support")
    nurse_id, _ = await api.register("care_team_member")
    status, patient = await api.call(
        "POST", "/api/patients", peer, json={"firstName": "John", "lastName": "Smith", "riskLevel": "high"}
    )
    assert status == 201, patient
    body: dict[str, Any] = {"title": "Care coordination", "patientId": patient["id"], "memberIds": [nurse_id]}
    status, created = await api.call("POST", "/api/conversations", peer, json=body)
    assert status == 201, created

    async def ready() -> bool:
        status, detail = await api.call("GET", f"/api/conversations/{created['id']}", peer)
        assert status == 200, detail
        assert detail["channelState"] != "failed", detail
        return bool(detail["channelState"] == "ready")

    await eventually(ready, "the conversation's channel to be ready")
    return Conversation(int(created["id"]), peer)


async def send_and_settle(api: Http, chat: Conversation, text: str) -> dict[str, Any]:
    """Send a message and wait until none of its deliveries is queued any more."""
    status, accepted = await api.call(
        "POST",
        "/api/conversations/send-message",
        chat.peer_token,
        json={"conversationId": chat.id, "message": text},
    )
    assert status == 202, accepted

    async def settled() -> dict[str, Any] | None:
        status, message = await api.call("GET", f"/api/messages/{accepted['id']}", chat.peer_token)
        assert status == 200, message
        return message if all(d["state"] != "queued" for d in message["deliveries"]) else None

    return await eventually(settled, f"the deliveries of message {accepted['id']} to settle")


# --- one process ----------------------------------------------------------------------------------


async def test_the_emulator_posts_its_webhooks_to_the_port_given_on_the_command_line(
    serve: Callable[..., Any], http: Callable[[Served], Http]
) -> None:
    # config.toml says 8080 and the environment says nothing: --port alone decides where it serves.
    served: Served = await serve()
    api = http(served)

    async def healthy() -> bool:
        with contextlib.suppress(aiohttp.ClientConnectionError):
            status, _ = await api.call("GET", "/health")
            return status == 200
        return False

    await eventually(healthy, "the service to answer /health", within=START_WITHIN)
    chat = await conversation(api)
    message = await send_and_settle(api, chat, "hello")
    assert [d["state"] for d in message["deliveries"]] == ["sent"]

    # The emulator posted its webhook to the port served, and the service answered it.
    (posted,) = await served.wait_for(
        "sendbird_emulator.webhook_delivered", category="group_channel:message_send"
    )
    assert posted["attempt"] == 1
    answered = served.events("http.request", route="/api/webhooks/sendbird", status=200)
    assert len(answered) == 1
