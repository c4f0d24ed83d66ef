"""Password strength: the common/breached-password list and guessability estimate of ``zxcvbn``,
and the account notifier.

zxcvbn (Dropbox's estimator, MIT) ships its lists inside the package: 30,000 of the most common
passwords from leaked password dumps, plus English words, names and pop-culture words it uses to
estimate how many guesses a password needs. Nothing is fetched at run time.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Sequence

import structlog
from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from engine.model import User

log = structlog.get_logger("caremsg.accounts")

_WORDS = re.compile(r"[^\w]+|_")

#: zxcvbn estimates only this many leading characters (its own limit; longer raises).
_ESTIMATED_CHARACTERS = 72


@functools.cache
def _common_passwords() -> frozenset[str]:
    return frozenset(FREQUENCY_LISTS["passwords"])


class ZxcvbnPasswordStrength:
    """Refuses a password on zxcvbn's common-password list (``common``) or whose estimated
    guessability score is below ``min_score`` (0-4; 3 = "safely unguessable: moderate protection
    from offline slow-hash scenario") given the person's own email and names (``guessable``).

    The estimate takes about 1-50 ms of CPU, so it runs in a thread."""

    def __init__(self, *, min_score: int = 3) -> None:
        self._min_score = min_score

    async def weakness(self, password: str, user_inputs: Sequence[str]) -> str | None:
        return await asyncio.to_thread(self._weakness, password, list(user_inputs))

    def _weakness(self, password: str, user_inputs: list[str]) -> str | None:
        if password.lower() in _common_passwords():
            return "common"
        # Each word of the email and names on its own: "ada.lovelace@…" gives "ada", "lovelace", ….
        inputs = [part for value in user_inputs for part in _WORDS.split(value.lower()) if part]
        estimate = zxcvbn(password[:_ESTIMATED_CHARACTERS], user_inputs=inputs)
        return "guessable" if int(estimate["score"]) < self._min_score else None


class LoggingAccountNotifier:
    """Development stand-in for email to the account's owner: one log line per notice, naming the
    account by id only (never the address). A deployment replaces it with a mailer."""

    async def registration_attempted(self, user: User) -> None:
        log.info("account.notice", notice="registration_attempted", user_id=user.id)

    async def registration_received(self, user: User) -> None:
        log.info(
            "account.notice", notice="registration_received", user_id=user.id, pending=user.pending_approval
        )
