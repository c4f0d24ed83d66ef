"""``caremsg serve`` as an operator runs it: real processes on a real port, a real PostgreSQL.

Each service runs in a process group of its own; the tests read its JSON log lines, talk HTTP to
it over fresh connections (so SO_REUSEPORT can hand each to either worker) and stop it. The tests
of a two-worker service that stops cleanly share one (started once per module; in file order, those
that leave it running come first, then the ones that stop it and read how it stopped); the others
start their own. Worker processes are told apart by the ``pid`` every log line carries when there
are several.

The served processes get a database of their own: what they store (webhook events keyed by the
emulator's message ids, which every new emulator counts from 1 again) stays out of the database
the in-process tests share.

Longer than 400 lines because the harness that runs ``caremsg serve`` as processes (``Served``,
``Starter``, the module's shared two-worker service, ``Http``) serves only these tests, and the
tests sharing that service rely on their order in this one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import async_sessionmaker

from engine.model import Role
from engine.workflows.identity import CreateUser, bootstrap_user
from handlers.settings import PROJECT_ROOT, Settings
from integrations.db.resources import create_engine
from integrations.db.uow import SqlUnitOfWork
from integrations.security import Argon2Passwords
from tests.support.database import asyncpg_dsn, database_settings, fresh_database
from tests.support.messaging import unique_phone
from tests.support.polling import eventually

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
START_WITHIN = 20.0  # seconds: two interpreters importing everything on a busy 2-core machine


#: Where the kernel picks the local ports of outgoing connections and of binds to port 0.
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A port ``caremsg serve --port`` can bind: free now, and outside the kernel's ephemeral range.

    ``serve`` binds it a second or more later (the emulators and the workers start first). A port
    from a bind to port 0 lies in the ephemeral range, where meanwhile any outgoing connection of
    the suite's other workers may take it as its local port; one below the range is never handed
    out that way. (Once in about a dozen full runs a worker failed and ``serve`` exited 1 before it
    was ready; its output was not kept then, so a taken port is the likely cause, not a proven one.
    :meth:`Served.wait_for` now shows the output of a service that exits early.)"""
    low = int(EPHEMERAL.read_text().split()[0]) if EPHEMERAL.exists() else 0
    if low > 11_000:
        for _ in range(100):
            port = random.randrange(10_000, low)
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
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
    policies: Path | None = None  # the policy directory it reads, when a test gave it one
    reader: asyncio.Task[None] | None = None  # reads its output into ``lines`` and ``raw``

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
                raise AssertionError(
                    f"caremsg serve exited ({self.process.returncode}) before {name}; it said:\n"
                    + await self.last_words()
                )
            return None

        return await eventually(probe, f"{count} x {name} {match or ''}", within=within)

    async def last_words(self, count: int = 30) -> str:
        """Its last lines of output, once it has written them all (for a failure's message: a
        module's service is stopped, and its output shown, only after the module's last test)."""
        if self.reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.reader), 5)
        return "\n".join(self.raw[-count:])

    @property
    def worker_pids(self) -> set[int]:
        return {line["worker_pid"] for line in self.events("serve.worker_started")}

    async def stopped(self, within: float = 20.0) -> int:
        async with asyncio.timeout(within):
            return await self.process.wait()


def _environment(database_url: str, **extra: str) -> dict[str, str]:
    """The test's environment without any caremsg setting of its own (a CAREMSG_SERVICE_PORT would
    hide the --port bug), plus fast settings for a test: cheap hashing, quick polling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREMSG_") and k != "DATABASE_URL"}
    split = database_settings(database_url)  # the service logs in as the application role
    env.update(
        CAREMSG_DATABASE_URL=split["url"],
        CAREMSG_DATABASE_OWNER_URL=split["owner_url"],
        CAREMSG_DATABASE_OWNER_ROLE=split["owner_role"],
        CAREMSG_DATABASE_APP_ROLE=split["app_role"],
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
        # The whole test session logs in from 127.0.0.1 into this database; tests poll quickly.
        CAREMSG_AUTH_LOGIN_ADDRESS_FREE_FAILURES="100000",
        CAREMSG_AUTH_REGISTRATION_SOURCE_FREE="100000",
        CAREMSG_RATELIMIT_PER_ADDRESS_PER_SECOND="100000",
        CAREMSG_RATELIMIT_PER_ADDRESS_BURST="100000",
        CAREMSG_RATELIMIT_PER_TOKEN_PER_SECOND="100000",
        CAREMSG_RATELIMIT_PER_TOKEN_BURST="100000",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def served_database_url(server_url: str) -> Iterator[str]:
    """A fresh database, migrated, for this module's served processes; dropped afterwards."""
    with fresh_database(server_url, "caremsg_serve") as url:
        yield url


@pytest.fixture
async def served_db(served_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to that database, for assertions on what the service stored."""
    conn = await asyncpg.connect(**asyncpg_dsn(served_database_url))  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        await conn.close()


class Starter:
    """Starts ``caremsg serve ARGS`` on free ports; stops whatever is still running at the end."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.started: list[Served] = []
        self.readers: list[asyncio.Task[None]] = []

    async def start(self, *args: str, **env: str) -> Served:
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
            env=_environment(self.database_url, **env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown can end all of it
        )
        served = Served(process, port)
        served.reader = asyncio.create_task(_read_log(served))
        self.started.append(served)
        self.readers.append(served.reader)
        return served

    async def stop_all(self) -> None:
        for served in self.started:
            if served.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    served.process.send_signal(signal.SIGTERM)
                try:
                    await served.stopped()
                except TimeoutError:
                    os.killpg(served.process.pid, signal.SIGKILL)
                    await served.process.wait()
        for reader in self.readers:
            await reader
        for served in self.started:
            # Shown by pytest only when the test failed: what the service said.
            sys.stderr.write(f"--- caremsg serve on port {served.port}:\n" + "\n".join(served.raw) + "\n")


@pytest.fixture
async def serve(served_database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Start ``caremsg serve ARGS`` on a free port; whatever is still running at the end is stopped."""
    starter = Starter(served_database_url)
    yield starter.start
    await starter.stop_all()


class ModuleService:
    """``caremsg serve --workers 2``, started once and shared by the tests that only use it and by
    the ones that stop it with SIGTERM (starting two workers is most of such a test's time). Once
    stopped, it stays stopped for the tests that read how it stopped; the next test to ask for a
    running one gets a new one. Its policy is a copy of its own, polled hourly, which only the
    SIGHUP test edits (a later copy starts from the project's policy again).
    """

    def __init__(self, starter: Starter, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.starter, self.tmp_path_factory = starter, tmp_path_factory
        self.current: Served | None = None

    async def running(self) -> Served:
        if self.current is not None and self.current.process.returncode is None:
            return self.current
        policies = self.tmp_path_factory.mktemp("policies") / "policies"
        shutil.copytree(PROJECT_ROOT / "policies", policies)
        served = await self.starter.start(
            "--workers",
            "2",
            CAREMSG_POLICY_DIRECTORY=str(policies),
            CAREMSG_POLICY_WATCH_INTERVAL_SECONDS="3600",
            # A bucket that all but never refills: each request leaves one fewer in it, so the
            # `RateLimit` field's count shows whether the workers spend one bucket.
            CAREMSG_RATELIMIT_PER_ADDRESS_PER_SECOND="0.001",
        )
        served.policies = policies
        self.current = served
        await served.wait_for("serve.ready", within=START_WITHIN)
        return served

    async def stopped(self) -> tuple[Served, int]:
        """The service stopped by SIGTERM (sent now, unless an earlier test sent it; started first
        when no test did), with its exit status."""
        served = self.current if self.current is not None else await self.running()
        if served.process.returncode is None:
            served.process.send_signal(signal.SIGTERM)
        return served, await served.stopped()


@pytest.fixture(scope="module")
async def two_workers_of_the_module(
    served_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ModuleService]:
    starter = Starter(served_database_url)
    yield ModuleService(starter, tmp_path_factory)
    await starter.stop_all()


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
    """JSON over a new connection per request, the way many clients spread over workers."""

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
        status, accepted = await self.call("POST", "/api/auth/register", json=body)
        assert status == 202, accepted
        status, session = await self.call(
            "POST", "/api/auth/login", json={"email": body["email"], "password": PASSWORD}
        )
        assert status == 200, session
        return int(session["user"]["id"]), str(session["token"])

    async def login(self, email: str) -> str:
        status, body = await self.call("POST", "/api/auth/login", json={"email": email, "password": PASSWORD})
        assert status == 200, body
        return str(body["token"])


@pytest.fixture
async def http() -> AsyncIterator[Callable[[Served], Http]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield lambda served: Http(session, served.url)


async def compliance_officer(settings: Settings, organization_id: int) -> str:
    """A compliance officer created the way ``caremsg create-user`` does it; returns the email."""
    email = f"officer.{secrets.token_hex(4)}@example.org"
    db = settings.database
    engine = create_engine(db.url, pool_size=1, max_overflow=0, statement_timeout_ms=db.statement_timeout_ms)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        await bootstrap_user(
            lambda: SqlUnitOfWork(sessions),
            Argon2Passwords(time_cost=1, memory_kib=64),
            CreateUser(email, PASSWORD, "Test", "Officer", Role.COMPLIANCE_OFFICER, organization_id),
        )
    finally:
        await engine.dispose()
    return email


@dataclass
class Conversation:
    id: int
    peer_token: str


async def conversation(api: Http, *, sms_through: Settings | None = None) -> Conversation:
    """A peer's patient and a ready conversation with a nurse (and, given the means to create a
    compliance officer, a consented external participant who is texted)."""
    _, peer = await api.register("peer_support")
    nurse_id, _ = await api.register("care_team_member")
    status, patient = await api.call(
        "POST", "/api/patients", peer, json={"firstName": "John", "lastName": "Smith", "riskLevel": "high"}
    )
    assert status == 201, patient
    body: dict[str, Any] = {"title": "Care coordination", "patientId": patient["id"], "memberIds": [nurse_id]}
    if sms_through is not None:
        officer = await api.login(await compliance_officer(sms_through, patient["organizationId"]))
        external = {"phoneNumber": unique_phone(), "name": "Dr. External"}
        consent = {"patientId": patient["id"], "purpose": "treatment", "externalParty": external}
        status, created = await api.call("POST", "/api/consents", officer, json=consent)
        assert status == 201, created
        body["externalMembers"] = [external]
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


# --- several workers ----------------------------------------------------------------------------


async def test_two_workers_each_serve_requests_on_the_one_port(
    two_workers_of_the_module: ModuleService, http: Callable[[Served], Http]
) -> None:
    served = await two_workers_of_the_module.running()
    parent = served.process.pid
    assert len(served.worker_pids) == 2

    api = http(served)
    ids = [f"test-{uuid.uuid4().hex}" for _ in range(30)]
    for request_id in ids:
        status, body = await api.call("GET", "/health", request_id=request_id)
        assert (status, body["status"]) == (200, "ok")

    async def all_logged() -> list[dict[str, Any]] | None:
        # A request's log line is written just after its answer: wait for the last ones.
        found = [line for line in served.events("http.request") if line["request_id"] in ids]
        return found if len(found) >= len(ids) else None

    logged = await eventually(all_logged, "a log line per request")
    assert len(logged) == 30  # each request answered (and logged) once
    assert {line["pid"] for line in logged} == served.worker_pids
    assert parent not in served.worker_pids


async def test_each_worker_moves_what_its_start_built_out_of_the_garbage_collectors_way(
    two_workers_of_the_module: ModuleService, http: Callable[[Served], Http]
) -> None:
    served = await two_workers_of_the_module.running()
    frozen = served.events("serve.heap_frozen")
    # Logged at each worker's start, before it listens (so before "serve.ready").
    assert {line["pid"] for line in frozen} == served.worker_pids
    # What a start builds: the modules, SQLAlchemy's metadata, the policy, the pools.
    assert all(line["objects"] > 50_000 for line in frozen), frozen
    resp = await http(served).session.get(f"{http(served).base}/metrics")
    exposition = await resp.text()
    (gauge,) = [line for line in exposition.splitlines() if line.startswith("caremsg_gc_frozen_objects ")]
    assert float(gauge.split()[1]) > 50_000


async def test_any_worker_a_scrape_reaches_reports_what_every_worker_counted(
    two_workers_of_the_module: ModuleService, http: Callable[[Served], Http]
) -> None:
    """A scrape lands on whichever worker accepts its connection; the counts it reports are the
    service's, not that worker's share (prometheus-client's multiprocess mode)."""
    served = await two_workers_of_the_module.running()
    api = http(served)

    async def scrape() -> list[tuple[str, dict[str, str], float]]:
        resp = await api.session.get(f"{api.base}/metrics")
        families = text_string_to_metric_families(await resp.text())
        return [(s.name, s.labels, s.value) for family in families for s in family.samples]

    async def health_answers() -> float:
        (count,) = [
            value
            for name, labels, value in await scrape()
            if name == "caremsg_http_request_duration_seconds_count"
            and labels == {"route": "/health", "method": "GET", "status": "200"}
        ] or [0.0]
        return count

    before = await health_answers()
    ids = [f"test-{uuid.uuid4().hex}" for _ in range(40)]
    for request_id in ids:
        assert (await api.call("GET", "/health", request_id=request_id))[0] == 200

    async def all_logged() -> list[dict[str, Any]] | None:
        found = [line for line in served.events("http.request") if line["request_id"] in ids]
        return found if len(found) >= len(ids) else None

    # Both workers answered some of them: one worker's count alone would fall short.
    assert {line["pid"] for line in await eventually(all_logged, "a log line per request")} == (
        served.worker_pids
    )
    assert [await health_answers() for _ in range(6)] == [before + len(ids)] * 6
    # A gauge read at scrape time, and one of the answering process, each appear once (no series
    # per worker), beside the service-wide counters.
    samples = await scrape()
    for gauge in ("caremsg_outbox_pending", "caremsg_consent_index_consents", "caremsg_relay_retries_total"):
        assert [labels for name, labels, _ in samples if name == gauge] == [{}], gauge
    (shared,) = served.events("serve.metrics_shared")
    assert await asyncio.to_thread(os.path.isdir, shared["directory"])


async def test_a_clients_requests_spend_one_rate_limit_whichever_worker_answers(
    two_workers_of_the_module: ModuleService, http: Callable[[Served], Http]
) -> None:
    """The configured limit is the service's: with a bucket per worker, a client spreading its
    connections over N workers would get N times it."""
    served = await two_workers_of_the_module.running()
    api = http(served)
    remaining: list[int] = []
    ids = [f"test-{uuid.uuid4().hex}" for _ in range(40)]
    for request_id in ids:
        # Limited (unlike /health), and refused for want of a token after the limit is spent.
        async with api.session.get(f"{api.base}/api/patients", headers={"X-Request-ID": request_id}) as resp:
            assert resp.status == 401
            policy, _, left = resp.headers["RateLimit"].partition(";r=")
            assert policy == '"address"'
            remaining.append(int(left.partition(";")[0]))

    async def all_logged() -> list[dict[str, Any]] | None:
        found = [line for line in served.events("http.request") if line["request_id"] in ids]
        return found if len(found) >= len(ids) else None

    assert {line["pid"] for line in await eventually(all_logged, "a log line per request")} == (
        served.worker_pids
    )
    # One bucket, whichever worker took the request: each answer counts one fewer left (or more
    # fewer, if the emulator's webhooks spent some meanwhile), never the same or more.
    assert all(later < earlier for earlier, later in itertools.pairwise(remaining)), remaining
    (shared,) = served.events("serve.rate_limits_shared")
    assert sorted(await asyncio.to_thread(os.listdir, shared["directory"])) == ["address", "token", "upload"]


async def test_sighup_to_the_parent_reloads_the_policy_in_every_worker(
    two_workers_of_the_module: ModuleService, http: Callable[[Served], Http]
) -> None:
    # Its policy directory is a copy; polled hourly, so the files' watcher cannot notice an edit
    # within this test.
    served = await two_workers_of_the_module.running()
    assert served.policies is not None
    policies = served.policies
    rules = policies / "roles.csv"

    def edit_and_signal(text: str) -> None:
        rules.write_text(text)
        served.process.send_signal(signal.SIGHUP)

    async def one_version_everywhere() -> str | None:
        latest = {line["pid"]: line["version"] for line in served.events("policy.reloaded")}
        versions = set(latest.values())
        return versions.pop() if latest.keys() == served.worker_pids and len(versions) == 1 else None

    # An edit, then SIGHUP: every worker swaps it in. Not necessarily because of its own signal: the
    # first to swap tells the others through PostgreSQL, and a worker's policy listener also reloads
    # when it first connects, which may be just now.
    original = rules.read_text()
    edit_and_signal(original.replace("# caremsg role rules", "# CAREMSG role rules", 1))
    edited = await eventually(one_version_everywhere, "every worker to swap in the edit")

    # A broken edit, then SIGHUP: a refusal is never announced to the others, so each worker's
    # refusal is its own reaction to the signal the parent passed on.
    edit_and_signal(rules.read_text() + "p, janitor, patient.read, any\n")

    refusals = await served.wait_for("policy.reload_rejected", count=2, trigger="sighup")
    assert {line["pid"] for line in refusals} == served.worker_pids
    assert {line["version"] for line in refusals} == {edited}  # kept serving the good edit
    assert len(served.events("serve.sighup_forwarded", workers=2)) == 2
    for _ in range(10):  # on new connections: whichever worker answers serves the good edit
        status, health = await http(served).call("GET", "/health")
        assert (status, health["policyVersion"]) == (200, edited)
    assert served.process.returncode is None  # SIGHUP stopped nothing


async def test_messages_sent_through_two_workers_reach_the_one_shared_emulator_exactly_once(
    two_workers_of_the_module: ModuleService,
    http: Callable[[Served], Http],
    settings: Settings,
    served_database_url: str,
    served_db: asyncpg.Connection,
) -> None:
    # It stops the module's service (SIGTERM) to count what was settled; the next test reads how
    # the service stopped.
    served = await two_workers_of_the_module.running()
    (emulator,) = served.events("sendbird.emulator_in_use")
    assert (emulator["shared_by_workers"], emulator["pid"]) == (2, served.process.pid)
    api = http(served)
    database = settings.database.model_copy(update={"url": served_database_url})
    chat = await conversation(api, sms_through=settings.model_copy(update={"database": database}))

    # Ten sends on ten connections, which the kernel spreads over the workers; either worker's relay
    # may deliver any of them, to a channel the other worker's relay may have created.
    messages = [await send_and_settle(api, chat, f"update {n}") for n in range(10)]

    for message in messages:
        assert {d["channel"]: d["state"] for d in message["deliveries"]} == {"chat": "sent", "sms": "sent"}
    # Every side effect on the emulator (the channel, each post, each text) worked the first time:
    # with an emulator per worker, a relay would not find the channel in its own.
    outbox = await served_db.fetch(
        "SELECT kind, status, attempts FROM outbox WHERE conversation_id = $1"
        " OR message_id IN (SELECT id FROM messages WHERE conversation_id = $1)",
        chat.id,
    )
    assert len(outbox) >= 1 + 10 * 2
    assert {(row["status"], row["attempts"]) for row in outbox} == {("done", 1)}
    chat_ids = await served_db.fetch(
        "SELECT chat_message_id FROM messages WHERE conversation_id = $1", chat.id
    )
    assert len({row["chat_message_id"] for row in chat_ids} - {None}) == 10
    # The emulator posts a signed message_send webhook for each message it stores (not for a
    # repeated dedup_id) to the shared port, where some worker answers it. Stopping the service
    # settles everything in flight; then its log holds exactly one of each per message.
    await served.wait_for(
        "sendbird_emulator.webhook_delivered", count=10, category="group_channel:message_send"
    )
    assert await two_workers_of_the_module.stopped() == (served, 0)
    posted = served.events("sendbird_emulator.webhook_delivered", category="group_channel:message_send")
    assert len(posted) == 10
    assert {line["pid"] for line in posted} == {served.process.pid}
    answered = served.events("http.request", route="/api/webhooks/sendbird", status=200)
    assert len(answered) == 10
    assert {line["pid"] for line in answered} <= served.worker_pids


async def test_sigterm_stops_every_worker_and_the_emulator_with_exit_status_0(
    two_workers_of_the_module: ModuleService,
) -> None:
    # The module's service, which served the tests above: the SIGTERM is the previous test's (it
    # counts what stopping settled), or this test's own when it runs alone.
    served, status = await two_workers_of_the_module.stopped()
    workers = served.worker_pids
    assert len(workers) == 2

    assert status == 0
    assert {line["pid"] for line in served.events("serve.worker_stopped")} == workers
    assert served.events("sendbird_emulator.stopped", pid=served.process.pid)
    assert served.events("serve.stopped", clean=True)
    # The workers' shared metrics go with the service: a restart counts from zero.
    for shared in served.events("serve.metrics_shared") + served.events("serve.rate_limits_shared"):
        assert not await asyncio.to_thread(os.path.exists, shared["directory"])
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", served.port)):
        pass


async def test_signals_to_the_whole_process_group_reload_and_then_stop_cleanly(
    serve: Callable[..., Any], http: Callable[[Served], Http]
) -> None:
    """As systemd sends them by default (to every process of the unit): the fork server ignores
    them, so the parent still hears each worker's own exit status (it read 255 before)."""
    served: Served = await serve("--workers", "2")
    await served.wait_for("serve.ready", within=START_WITHIN)
    workers = served.worker_pids

    os.killpg(served.process.pid, signal.SIGHUP)  # a hangup of the fork server ended it too
    await served.wait_for("serve.sighup_forwarded", within=START_WITHIN)
    assert [(await http(served).call("GET", "/ready"))[0] for _ in range(6)] == [200] * 6
    assert served.process.returncode is None
    assert not served.events("serve.worker_died")
    os.killpg(served.process.pid, signal.SIGTERM)

    assert await served.stopped() == 0
    assert not served.events("serve.worker_stop_failed")
    assert {line["pid"] for line in served.events("serve.worker_stopped")} == workers
    assert served.events("serve.stopped", clean=True)


async def test_a_worker_that_dies_stops_the_service_with_a_non_zero_exit_status(
    serve: Callable[..., Any],
) -> None:
    served: Served = await serve("--workers", "2")
    await served.wait_for("serve.ready", within=START_WITHIN)
    victim, survivor = sorted(served.worker_pids)

    os.kill(victim, signal.SIGKILL)

    assert await served.stopped() == 1
    (died,) = served.events("serve.worker_died")
    assert (died["worker_pid"], died["signal"], died["pid"]) == (victim, "SIGKILL", served.process.pid)
    assert served.events("serve.worker_stopped", pid=survivor)
    assert served.events("serve.stopped", clean=False)
    with pytest.raises(ProcessLookupError):
        os.kill(survivor, 0)


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
    assert not served.events("serve.worker_started")  # one process: today's path
    (frozen,) = served.events("serve.heap_frozen")  # and it too froze what its start built
    assert frozen["objects"] > 50_000


async def test_one_process_answers_unparseable_http_closes_idle_connections_and_stops_on_sigterm(
    serve: Callable[..., Any],
) -> None:
    served: Served = await serve(CAREMSG_SERVICE_IDLE_CONNECTION_SECONDS="1")
    await served.wait_for("serve.ready", within=START_WITHIN, workers=1, logger="caremsg.serve")

    # HTTP it cannot parse: caremsg's problem (handlers/serving.py), echoing nothing.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /api/patients HTTP/1.1\r\nHost: x\r\nX-Note: Jane\x01Roe\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400"  # HTTP/1.0: the version was not read
    assert b"Content-Type: application/problem+json" in head
    assert json.loads(body)["code"] == "malformed_request"
    assert b"Jane" not in answer
    await served.wait_for("http.malformed_request", error="BadHttpMessage")

    # A connection that sends nothing, and one that stops halfway through its request line, are
    # closed once idle for service.idle_connection_seconds (aiohttp's own default: an hour).
    async def closed_after(sent: bytes) -> float:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            writer.write(sent)
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
        return time.monotonic() - started

    for waited in await asyncio.gather(closed_after(b""), closed_after(b"GET /health HT")):
        assert 0.9 < waited < 5, waited

    served.process.send_signal(signal.SIGTERM)
    assert await served.stopped() == 0
    assert served.events("serve.stopped", clean=True, logger="caremsg.serve")  # as --workers says it
    assert not any("Jane" in line for line in served.raw)
