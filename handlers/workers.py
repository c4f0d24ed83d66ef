"""``caremsg serve --workers N``: a supervising parent and N worker processes sharing one port.

The command line resolves the database (embedded PostgreSQL when none is configured) and migrates
it once, then hands over here. The parent owns what must exist once; each worker is one service:

- the parent runs, in development, the ONE Sendbird emulator every worker talks to (a channel one
  worker's relay creates must exist for another's), with its webhooks pointed at the port the
  workers share. The workers see it as an ordinary Sendbird endpoint, through their settings;
- each worker runs ``create_app`` on the same host and port with SO_REUSEPORT, so the kernel
  spreads connections over them. What runs in the background of an app (outbox relay, webhook
  processor, audit sealer, consent index, policy reload) is already safe with several instances.
  Workers are forked from a fork server ("forkserver"): a fresh interpreter, started once, that
  imports the app's modules and nothing more (no event loop, thread, connection or setting), so N
  workers cost one import of the app (~2 s of CPU) instead of N, and nothing of the parent's own
  state (its loop, the emulators, the migration's connections) reaches a worker. The parent itself
  never imports the app.

Signals go to the parent. SIGINT and SIGTERM stop every worker gracefully (requests in flight
finish), then the emulator; the command line stops the embedded server after that. SIGHUP is
forwarded to every serving worker (each reloads its policy). Ctrl-C also reaches the workers (one
process group): they ignore SIGINT and wait for the parent's SIGTERM, so there is one orderly
shutdown rather than N racing ones. A SIGTERM or SIGHUP sent to the whole group (systemd's
default) reaches the workers directly, which is fine, and the fork server, which ignores both
(handlers/forkserver.py): through it the parent hears each worker's exit status. A worker whose
parent disappears stops by itself.

What counts across requests is the service's, not a worker's, and lives in one temporary directory
the parent makes before the first worker starts and removes when the service stops (so a restart
counts from zero as one process does):

- metrics, whichever worker a scrape reaches: ``metrics/`` is named in ``PROMETHEUS_MULTIPROC_DIR``
  before the fork server imports the app (prometheus-client picks its storage at import), each worker
  writes its counters there and merges them all when scraped (handlers/telemetry.py);
- the rate limits' buckets: ``rate-limits/`` holds a file per limit that every worker maps into
  memory (handlers/buckets.py), so a client gets the configured rate, not N times it.

A worker that exits on its own is a fault, not something to run on degraded: the parent logs it
(worker number, pid, exit code), stops the others and exits with status 1, so whatever supervises
caremsg (systemd, Kubernetes, a shell loop) restarts the whole service. Workers are not restarted
in place: a crash loop would hide the fault, and a restart must not leave a half-started service.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from handlers.logs import configure_logging, show_emulator_credentials
from handlers.ratelimit import create_shared_limits
from handlers.settings import Settings
from integrations.sendbird_emulator import RunningEmulator, start_emulator
from integrations.twilio_emulator import RunningTwilioEmulator, start_twilio_emulator

log = structlog.get_logger("caremsg.serve")

#: How long a stopping worker lets requests in flight finish (aiohttp's run_app default).
WORKER_SHUTDOWN_TIMEOUT = 60.0
#: How long the parent waits for stopping workers before it kills them.
WORKER_STOP_DEADLINE = WORKER_SHUTDOWN_TIMEOUT + 15.0
#: The app id the shared emulator answers to; the workers' Sendbird client needs a non-empty one.
EMULATOR_APP_ID = "emulator"

_READY = "ready"
#: prometheus-client's switch to its multiprocess mode: the directory the workers' metrics share.
METRICS_DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve_workers(settings: Settings) -> int:
    """Serve with ``service.workers`` processes on ``service.host``:``service.port`` until SIGINT or
    SIGTERM (exit status 0 when every worker stopped cleanly) or until a worker dies (status 1).

    ``settings`` carry a usable ``database.url`` and the address actually served.
    """
    return asyncio.run(_Supervisor(settings).run())


# --- the parent ------------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    exited: asyncio.Future[None]
    ready: bool = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None  # started
        return self.process.pid

    def exit_fields(self) -> dict[str, object]:
        code = self.process.exitcode
        fields: dict[str, object] = {"worker": self.index, "worker_pid": self.pid, "exitcode": code}
        if code is not None and code < 0:
            fields["signal"] = signal.Signals(-code).name
        return fields


class _Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers: list[_Worker] = []
        self.stop = asyncio.Event()
        self.stopping = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward_sighup)
        emulator: RunningEmulator | None = None
        twilio: RunningTwilioEmulator | None = None
        shared_dir: str | None = None
        clean = False
        try:
            worker_settings = self.settings
            if self.settings.sendbird.use_emulator:
                emulator, worker_settings = await _shared_emulator(self.settings)
            if worker_settings.messaging.use_twilio_emulator:
                twilio, worker_settings = await _shared_twilio_emulator(worker_settings)
            shared_dir = tempfile.mkdtemp(prefix="caremsg-shared-")
            metrics_dir = os.path.join(shared_dir, "metrics")
            os.mkdir(metrics_dir)
            # Named before the fork server starts (at the first worker), so every worker inherits it.
            os.environ[METRICS_DIRECTORY_ENV] = metrics_dir
            log.info("serve.metrics_shared", directory=metrics_dir)
            limits_dir = os.path.join(shared_dir, "rate-limits")
            os.mkdir(limits_dir)
            create_shared_limits(limits_dir)
            log.info("serve.rate_limits_shared", directory=limits_dir)
            context = multiprocessing.get_context("forkserver")
            # Imported once, in the fork server, before it forks the first worker.
            # handlers.forkserver: a stop signal to the whole process group must not end it.
            context.set_forkserver_preload(["handlers.forkserver", "handlers.workers", "handlers.app"])
            for index in range(1, self.settings.service.workers + 1):
                self.workers.append(self._start(context, index, worker_settings, limits_dir))
            stop = asyncio.create_task(self.stop.wait())
            waiting: list[asyncio.Future[Any]] = [stop, *(w.exited for w in self.workers)]
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            died = [w for w in self.workers if w.exited.done()]
            for worker in died:
                log.error("serve.worker_died", **worker.exit_fields())
            clean = stop in done and not died
            log.info("serve.stopping", reason="signal" if clean else "worker_died")
        finally:
            self.stopping = True
            clean = await self._stop_workers() and clean
            if emulator is not None:
                await emulator.close()
            if twilio is not None:
                await twilio.close()
            if shared_dir is not None:
                shutil.rmtree(shared_dir, ignore_errors=True)
                os.environ.pop(METRICS_DIRECTORY_ENV, None)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        log.info("serve.stopped", clean=clean)
        return 0 if clean else 1

    def _start(self, context: ForkServerContext, index: int, settings: Settings, limits_dir: str) -> _Worker:
        loop = asyncio.get_running_loop()
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=run_worker, args=(index, settings, writer, limits_dir), name=f"caremsg-worker-{index}"
        )
        process.start()
        writer.close()  # the worker holds its own end
        worker = _Worker(index, process, loop.create_future())
        loop.add_reader(process.sentinel, self._exited, worker)
        loop.add_reader(reader.fileno(), self._reported, worker, reader)
        log.info("serve.worker_started", worker=index, worker_pid=worker.pid)
        return worker

    def _exited(self, worker: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        worker.process.join()  # it has exited: this only reaps it
        if not worker.exited.done():
            worker.exited.set_result(None)

    def _reported(self, worker: _Worker, reader: Connection) -> None:
        """The worker's one message: it listens (or EOF: it died first, which ``_exited`` handles)."""
        asyncio.get_running_loop().remove_reader(reader.fileno())
        with contextlib.suppress(EOFError, OSError):
            worker.ready = reader.recv() == _READY
        reader.close()
        count = self.settings.service.workers
        if len(self.workers) == count and all(w.ready for w in self.workers):
            service = self.settings.service
            log.info("serve.ready", host=service.host, port=service.port, workers=count)

    def _forward_sighup(self) -> None:
        """Each serving worker reloads its own policy. One still starting is skipped: until its
        interpreter is up the signal would end it; it picks up an edit through its file watcher."""
        if self.stopping:
            return
        serving = [w for w in self.workers if w.ready and not w.exited.done()]
        for worker in serving:
            os.kill(worker.pid, signal.SIGHUP)
        log.info("serve.sighup_forwarded", workers=len(serving))

    async def _stop_workers(self) -> bool:
        """SIGTERM every worker, wait, kill what outlives the deadline. True when all stopped cleanly."""
        running = [w for w in self.workers if not w.exited.done()]
        for worker in running:
            worker.process.terminate()
        try:
            async with asyncio.timeout(WORKER_STOP_DEADLINE):
                await asyncio.gather(*(w.exited for w in running))
        except TimeoutError:
            for worker in running:
                if not worker.exited.done():
                    log.error("serve.worker_killed", worker=worker.index, worker_pid=worker.pid)
                    worker.process.kill()
            await asyncio.gather(*(w.exited for w in running))
        clean = True
        for worker in running:
            # A worker stopped before it installed its own handler dies of the SIGTERM itself: fine.
            if worker.process.exitcode not in (0, -signal.SIGTERM):
                log.error("serve.worker_stop_failed", **worker.exit_fields())
                clean = False
        return clean


async def _shared_emulator(settings: Settings) -> tuple[RunningEmulator, Settings]:
    """Start the emulator the workers share; return it with the settings that point them at it.

    Its webhooks go to the service's own address, where any worker takes them. To the workers it
    is an ordinary Sendbird and Business Messaging endpoint, its token both API tokens and the
    webhook signing key: what ``create_app`` does with an emulator of its own, from outside.
    """
    token = secrets.token_hex(20)
    emulator = await start_emulator(api_token=token, app_id=EMULATOR_APP_ID)
    base = settings.webhook_base_url()
    emulator.set_webhook_urls(f"{base}/api/webhooks/sendbird")
    log.warning(
        "sendbird.emulator_in_use",
        base_url=emulator.base_url,
        shared_by_workers=settings.service.workers,
        development_only=True,
    )
    show_emulator_credentials(
        settings.service.environment, base_url=emulator.base_url, app_id=EMULATOR_APP_ID, api_token=token
    )
    sendbird = settings.sendbird.model_copy(
        update={"app_id": EMULATOR_APP_ID, "api_token": token, "base_url": emulator.base_url}
    )
    messaging = settings.messaging.model_copy(
        update={"bm_api_token": token, "bm_base_url": emulator.base_url}
    )
    return emulator, settings.model_copy(update={"sendbird": sendbird, "messaging": messaging})


async def _shared_twilio_emulator(settings: Settings) -> tuple[RunningTwilioEmulator, Settings]:
    """Start the Twilio emulator the workers share (one carrier, one signing token, whichever worker
    takes its webhook); return it with the settings that point the workers at it."""
    twilio = await start_twilio_emulator()
    twilio.set_webhook_url(f"{settings.webhook_base_url()}/api/webhooks/twilio")
    log.warning(
        "twilio.emulator_in_use",
        base_url=twilio.base_url,
        account_sid=twilio.state.account_sid,
        auth_token=twilio.state.auth_token,  # random, development only: to sign a webhook by hand
        shared_by_workers=settings.service.workers,
        development_only=True,
    )
    messaging = settings.messaging.model_copy(
        update={
            "twilio_account_sid": twilio.state.account_sid,
            "twilio_auth_token": twilio.state.auth_token,
            "twilio_messaging_service_sid": twilio.state.messaging_service_sid,
            "twilio_base_url": twilio.base_url,
        }
    )
    return twilio, settings.model_copy(update={"messaging": messaging})


# --- a worker --------------------------------------------------------------------------------------


def run_worker(index: int, settings: Settings, ready: Connection, limits_dir: str) -> None:
    """A worker process's entry point: serve until the parent's SIGTERM (or the parent is gone).
    ``limits_dir`` holds the buckets of the rate limits the workers share."""
    # Forked from the fork server, which ignores SIGTERM (handlers/forkserver.py): until the loop
    # installs its handler, a SIGTERM ends a starting worker, as the parent expects.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the parent alone decides and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Until the app installs its reload handler, a SIGHUP must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(fmt=settings.service.log_format, level=settings.service.log_level, with_pid=True)
    try:
        asyncio.run(_serve(index, settings, ready, limits_dir))
    except Exception:
        # Logged here (scrubbed), not printed by multiprocessing: a traceback may quote values.
        log.exception("serve.worker_failed", worker=index)
        sys.exit(1)


async def _serve(index: int, settings: Settings, ready: Connection, limits_dir: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    parent = multiprocessing.parent_process()
    if parent is not None:
        _when_readable(parent.sentinel, lambda: _parent_gone(index, stop))
    # Not at the top: the parent, which imports this module too, never builds an app (the fork
    # server has imported it already).
    from handlers.app import create_app, for_serving
    from handlers.serving import serve

    def listening() -> None:
        with contextlib.suppress(OSError):  # the parent is gone: its sentinel stops us next
            ready.send(_READY)
        ready.close()
        log.info("serve.worker_listening", worker=index, port=service.port)

    service = settings.service
    app = for_serving(
        create_app(
            settings, shared_metrics=os.environ.get(METRICS_DIRECTORY_ENV), shared_rate_limits=limits_dir
        )
    )
    await serve(
        app,
        service.host,
        service.port,
        stop,
        idle_seconds=service.idle_connection_seconds,
        reuse_port=True,
        shutdown_timeout=WORKER_SHUTDOWN_TIMEOUT,
        listening=listening,
    )
    log.info("serve.worker_stopped", worker=index)


def _parent_gone(index: int, stop: asyncio.Event) -> None:
    log.error("serve.parent_gone", worker=index)
    stop.set()


def _when_readable(fd: int, callback: Callable[[], None]) -> None:
    """Call ``callback`` once, when ``fd`` becomes readable (a process sentinel: the process ended)."""
    loop = asyncio.get_running_loop()

    def fire() -> None:
        loop.remove_reader(fd)
        callback()

    loop.add_reader(fd, fire)
