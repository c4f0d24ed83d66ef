"""Live policy reload: from a file change, SIGHUP, or the admin API, on every instance.

A reload reads the files, validates them and runs their own test tables
(:func:`integrations.policy_files.load_tested_policy`); only a policy that passes is swapped in,
with one reference assignment (:class:`engine.policy.PolicyHolder`), so requests in flight finish
under the version they started with and the next ones use the new one. A broken edit is logged
with every problem (file and line) and the old policy keeps serving.

Several instances pick up the same change because each one polls the files' modification times
(no extra dependency, works on every filesystem), and an instance that reloads because of SIGHUP,
the API or an approved proposal (integrations/policy_edits.py) also sends
``pg_notify('caremsg_policy', version)`` so the others reload at once instead of at their next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import structlog

from engine.policy import PolicyHolder
from engine.ports import ReloadResult
from integrations.background import BackgroundTasks
from integrations.consent_sync import asyncpg_connect_args
from integrations.policy_files import fingerprint, load_tested_policy

log = structlog.get_logger("caremsg.policy")

POLICY_CHANNEL = "caremsg_policy"


class FilePolicyReloader:
    """Reloads ``directory`` into ``holder``; optionally watches it and listens for other instances."""

    def __init__(self, holder: PolicyHolder, directory: Path, database_url: str | None = None) -> None:
        self.holder = holder
        self.directory = directory
        self._connect_args = asyncpg_connect_args(database_url) if database_url else None
        self._fingerprint = fingerprint(directory)
        self._rejected: tuple[object, ...] | None = None
        self._lock = asyncio.Lock()
        self._tasks = BackgroundTasks()

    async def reload(self, trigger: str) -> ReloadResult:
        """Check, test and swap (or refuse); tell the other instances when this one swapped."""
        async with self._lock:
            result = self._reload_now(trigger)
        if result.outcome == "swapped" and trigger in ("api", "sighup", "approval"):
            await self._notify(result.version)
        return result

    def _reload_now(self, trigger: str) -> ReloadResult:
        previous = self.holder.current.version
        try:
            self._fingerprint = fingerprint(self.directory)
            policy, problems = load_tested_policy(self.directory)
        except Exception as exc:
            # A check that fails in a way it does not report (a bug of caremsg's or of a parser it
            # uses) refuses the edit like a problem would: the running version stays, and the watcher
            # and the listener, whose tasks would end with it, go on to the next edit.
            log.error(
                "policy.reload_failed",
                trigger=trigger,
                version=previous,
                error=type(exc).__name__,
                exc_info=exc,
            )
            problem = f"the policy could not be checked ({type(exc).__name__}); the running version stays"
            return ReloadResult("rejected", previous, previous, (problem,))
        if policy is None:
            # Log a broken edit once per distinct content, not at every poll.
            if self._rejected != (self._fingerprint, tuple(problems)) or trigger != "file":
                log.error("policy.reload_rejected", trigger=trigger, version=previous, problems=problems)
            self._rejected = (self._fingerprint, tuple(problems))
            return ReloadResult("rejected", previous, previous, tuple(problems))
        self._rejected = None
        if policy.version == previous:
            return ReloadResult("unchanged", previous, previous)
        self.holder.swap(policy)
        log.info("policy.reloaded", trigger=trigger, version=policy.version, previous_version=previous)
        return ReloadResult("swapped", policy.version, previous)

    async def _notify(self, version: str) -> None:
        if self._connect_args is None:
            return
        try:
            conn = await asyncpg.connect(**self._connect_args)
            try:
                await conn.execute("SELECT pg_notify($1, $2)", POLICY_CHANNEL, version)
            finally:
                await conn.close()
        except Exception as exc:  # the others still find the change at their next poll
            log.warning("policy.notify_failed", error=type(exc).__name__)

    async def watch(self, interval: float) -> None:
        """Poll the files every ``interval`` seconds and reload when any of them changed. Forever."""
        while True:
            await asyncio.sleep(interval)
            if fingerprint(self.directory) != self._fingerprint:
                await self.reload("file")

    async def listen(self, reconnect_delay: float = 1.0) -> None:
        """Reload whenever another instance announces a new version. Reconnects; forever."""
        if self._connect_args is None:
            return
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(**self._connect_args)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, event=lost: event.set())
                await conn.add_listener(POLICY_CHANNEL, self._announced)
                # A change announced while we were not listening is picked up now.
                await self.reload("reconnect")
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("policy.listener_interrupted", error=type(exc).__name__)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(reconnect_delay)

    def _announced(self, _conn: object, _pid: int, _channel: str, version: str) -> None:
        if version != self.holder.current.version:
            self._spawn("notify")

    def on_sighup(self) -> None:
        self._spawn("sighup")

    def _spawn(self, trigger: str) -> None:
        self._tasks.spawn(self.reload(trigger))


def install_sighup(reloader: FilePolicyReloader) -> bool:
    """Reload on SIGHUP (the usual "re-read your configuration" signal); False where unsupported."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.on_sighup)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return False
    return True


def remove_sighup() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
