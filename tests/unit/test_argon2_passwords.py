"""argon2id passwords: a login for an email no account has costs what a real account's costs."""

from __future__ import annotations

from argon2 import extract_parameters

from integrations.security import Argon2Passwords


async def test_an_unknown_email_is_verified_against_a_hash_of_the_configured_cost() -> None:
    passwords = Argon2Passwords(time_cost=2, memory_kib=256)
    real = await passwords.hash("correct horse battery")

    assert await passwords.verify(real, "correct horse battery")
    assert not await passwords.verify(None, "correct horse battery")
    # The same parameters as a real hash: the same work, so the same time (a fixed hash of the
    # library's defaults would cost another time than the configured cost, telling them apart).
    assert extract_parameters(passwords._no_account_hash) == extract_parameters(real)
