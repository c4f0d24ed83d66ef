"""The caches of :class:`integrations.security.JwtTokens` save the signature check and the claims
validation on repeated use of one token, never the time-bound checks: a cached token still expires
(and is refused before its issue time), at exactly the moments an uncached check would refuse it,
and a token that differs by one character is checked from scratch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

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


def _joserfc_accepts(token: str, clock: Clock) -> bool:
    """joserfc's own verdict on the token's time-bound claims now, with the service's 5 s leeway
    (the other claims are valid in these tests)."""
    claims = jwt.decode(token, OctKey.import_key(b"s" * 32), algorithms=["HS256"]).claims
    try:
        jwt.JWTClaimsRegistry(now=int(clock()), leeway=5).validate(claims)
    except JoseError:
        return False
    return True


def _accepts(tokens: JwtTokens, token: str) -> bool:
    try:
        tokens.verify(token)
    except Unauthenticated:
        return False
    return True


@pytest.mark.parametrize("issued_ahead", [0, 30], ids=["issued now", "issued by a clock 30 s ahead"])
def test_a_validated_token_is_accepted_at_exactly_the_moments_a_fresh_check_accepts_it(
    issued_ahead: int,
) -> None:
    """The cache keeps a token's validated claims and re-checks only the time-bound ones (exp, nbf,
    iat) per use: second by second around every boundary, the cached token gets joserfc's verdict."""
    clock = Clock()
    issuer = JwtTokens("s" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=clock)
    clock.now += issued_ahead + 0.25  # iat keeps the fraction (milliseconds), nbf and exp do not
    token = issuer.issue(_user()).token
    clock.now -= issued_ahead + 0.25
    cached = JwtTokens("s" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=clock)
    start = clock.now

    verdicts = []
    for offset in [*range(-10, 100), *range(99, -11, -1)]:  # forwards past expiry, then back
        clock.now = start + offset + 0.5
        fresh = _joserfc_accepts(token, clock)
        assert _accepts(cached, token) == fresh, f"at {offset} s"
        verdicts.append(fresh)

    assert True in verdicts
    assert False in verdicts


def test_a_validated_token_not_valid_before_a_later_moment_is_refused_until_then_cached_or_not() -> None:
    """Our tokens are valid from their issue time; one signed with our key whose ``nbf`` is later
    than its ``iat`` is still held to its ``nbf`` on every use."""
    clock = Clock()
    start = int(clock.now)
    claims = {"sub": "7", "iss": "i", "aud": "a", "typ": "access", "role": "care_team_member", "org": 3}
    claims |= {"iat": start, "nbf": start + 30, "exp": start + 90}
    token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(b"s" * 32), algorithms=["HS256"])
    cached = JwtTokens("s" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=clock)

    verdicts = []
    for offset in [*range(40, 20, -1), *range(21, 40)]:  # accepted, then before nbf, then after
        clock.now = start + offset + 0.5
        fresh = _joserfc_accepts(token, clock)
        assert _accepts(cached, token) == fresh, f"at {offset} s"
        verdicts.append(fresh)

    assert verdicts[0]
    assert False in verdicts


def test_a_cached_token_is_refused_before_its_issue_time_even_after_it_was_accepted() -> None:
    clock = Clock()
    tokens = JwtTokens("s" * 32, issuer="i", audience="a", lifetime_seconds=60, clock=clock)
    token = tokens.issue(_user()).token
    tokens.verify(token)

    clock.now -= 5 + 2  # the clock stepped back past the leeway: iat and nbf are in the future
    with pytest.raises(Unauthenticated):
        tokens.verify(token)
