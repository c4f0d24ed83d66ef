"""The verified-signature cache of :class:`integrations.security.JwtTokens` saves the signature check
on repeated use of one token, never the claim checks: a cached token still expires, and a token
that differs by one character is checked from scratch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import Unauthenticated
from engine.model import Role, User
from integrations.security import JwtTokens


def _user() -> User:
    return User(
        id=7,
        email="a@example.org",
        first_name="A",
        last_name="B",
        role=Role.CARE_TEAM_MEMBER,
        organization_id=3,
        is_active=True,
        chat_user_id="u7",
        created_at=datetime.now(UTC),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_token_is_refused_once_it_expires() -> None:
    clock = Clock()
    tokens = JwtTokens("s" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=clock)
    token = tokens.issue(_user()).token

    assert tokens.verify(token).user_id == 7
    assert tokens.verify(token).organization_id == 3  # served from the cache

    clock.now += 60 + 6  # past exp and the 5 s leeway
    with pytest.raises(Unauthenticated):
        tokens.verify(token)


def test_a_token_differing_from_a_cached_one_is_checked_from_scratch() -> None:
    tokens = JwtTokens("s" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=Clock())
    token = tokens.issue(_user()).token
    tokens.verify(token)

    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthenticated):
        tokens.verify(tampered)


def test_a_token_signed_with_another_secret_is_refused_even_with_the_same_claims() -> None:
    clock = Clock()
    ours = JwtTokens("s" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=clock)
    theirs = JwtTokens("t" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=clock)
    ours.verify(ours.issue(_user()).token)

    with pytest.raises(Unauthenticated):
        ours.verify(theirs.issue(_user()).token)
