"""Identity ports: users, organizations, passwords, tokens, login throttling, account notices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from engine.login_throttle import Backoff, ThrottleState
from engine.model import Actor, Credentials, Organization, Page, Role, User


@dataclass(frozen=True)
class NewUser:
    email: str
    password_hash: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int
    #: Self-registered while ``auth.require_approval`` holds: no login until an admin approves.
    pending_approval: bool = False


class UserRepository(Protocol):
    async def add(self, user: NewUser) -> User:
        """Insert; raises :class:`engine.errors.Conflict` if the email is taken."""
        ...

    async def get(self, user_id: int) -> User | None: ...

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]: ...

    async def by_chat_id(self, chat_user_id: str) -> User | None:
        """The active user whose opaque chat id this is, if any."""
        ...

    async def credentials(self, email: str) -> Credentials | None: ...

    async def list_for_organization(
        self, organization_id: int, after: int | None, limit: int
    ) -> Page[User]: ...

    async def exists(self, email: str) -> bool:
        """Whether any account (any organization, any state) has this lower-cased email."""
        ...

    async def update_account(
        self,
        user_id: int,
        *,
        is_active: bool | None = None,
        role: Role | None = None,
        pending_approval: bool | None = None,
        sessions_valid_after: datetime | None = None,
    ) -> User:
        """Change the given fields (None leaves one as it is) and return the account."""
        ...

    async def alert_phone(self, user_id: int) -> str | None:
        """The number the staff member registered for urgent-message alerts (``users.alert_phone``)."""
        ...

    async def set_alert_phone(self, user_id: int, phone_number: str | None) -> None:
        """Register (or, with None, forget) the number urgent-message alerts are texted to."""
        ...


class OrganizationRepository(Protocol):
    async def add(self, name: str, *, self_registration: bool) -> Organization:
        """Insert; raises :class:`engine.errors.Conflict` if the name is taken."""
        ...

    async def get(self, organization_id: int) -> Organization | None: ...

    async def by_name(self, name: str) -> Organization | None: ...

    async def list(self, after: int | None, limit: int, *, only: int | None = None) -> Page[Organization]:
        """Organizations by id; ``only`` restricts the page to that one organization."""
        ...

    async def existing(self, organization_ids: Sequence[int]) -> set[int]: ...


class LoginThrottleRepository(Protocol):
    """The counts behind the back-offs (failed logins, registrations per source, notices per
    account), shared by every instance; keys from :mod:`engine.login_throttle`."""

    async def states(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        """The state of each key that has one; a key without failures is absent."""
        ...

    async def record_failure(self, key: str, now: datetime, backoff: Backoff) -> ThrottleState:
        """Count one failure (atomically: concurrent failures are all counted) and set the back-off
        or lock it earns; failures older than the back-off's window are forgotten first."""
        ...

    async def clear(self, key: str) -> bool:
        """Forget the key's failures, lock included; returns whether there was anything to forget."""
        ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if the password matches; never raises for a mismatch. ``None`` (no account has
        this email) is False after the same work as a hash of the hasher's own cost would take."""
        ...


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


class TokenService(Protocol):
    def issue(self, user: User) -> IssuedToken: ...

    def verify(self, token: str) -> Actor:
        """The actor a valid access token names; raises :class:`engine.errors.Unauthenticated`."""
        ...


class AccountDirectory(Protocol):
    async def current(self, actor: Actor) -> bool:
        """True if the token's account still exists, is active and approved, has the role and
        organization the token claims, and its sessions were not ended after the token was issued:
        a deactivated, re-roled or logged-out account loses access at once, not at expiry."""
        ...


class PasswordStrength(Protocol):
    async def weakness(self, password: str, user_inputs: Sequence[str]) -> str | None:
        """None for an acceptable password, else why not: ``common`` (on a list of common or
        breached passwords) or ``guessable`` (easy to guess, e.g. built from ``user_inputs``)."""
        ...


class AccountNotifier(Protocol):
    """Tells an account's owner about something done with their address (by email in a real
    deployment). Called after the transaction commits; it must not fail the request."""

    async def registration_attempted(self, user: User) -> None:
        """Someone tried to register an account with this user's email address."""
        ...

    async def registration_received(self, user: User) -> None:
        """A new account was registered with this address (and may await approval)."""
        ...
